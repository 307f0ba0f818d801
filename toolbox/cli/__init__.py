"""The Typer layer of `tb`: one module per command group, mounted by `toolbox.cli.app`."""

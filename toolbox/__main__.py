"""`python -m toolbox` runs the `tb` program (also what `torchrun -m toolbox` starts)."""

from toolbox.cli.app import main

if __name__ == "__main__":
    main()

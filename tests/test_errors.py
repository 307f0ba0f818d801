"""One place turns failures into one line and an exit code; --debug shows the traceback."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from toolbox.cli import errors as cli_errors
from toolbox.cli.errors import handle_errors
from toolbox.errors import ToolboxError, suggest, unknown_name


def _app(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @handle_errors
    def boom() -> None:
        """Raise the given exception."""
        raise exc

    return app


def test_user_error_is_one_line_and_exit_1(monkeypatch):
    monkeypatch.setitem(cli_errors._state, "debug", False)
    result = CliRunner().invoke(_app(ToolboxError("bad thing", "do this")), [])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: bad thing", "hint: do this"]
    assert "Traceback" not in result.output


def test_brackets_in_messages_are_printed_as_written(monkeypatch):
    monkeypatch.setitem(cli_errors._state, "debug", False)
    result = CliRunner().invoke(_app(ToolboxError("no file data[1].png", "see [docs]")), [])
    assert result.stderr.strip().splitlines() == ["error: no file data[1].png", "hint: see [docs]"]


def test_unexpected_error_is_one_line_with_debug_hint(monkeypatch):
    monkeypatch.setitem(cli_errors._state, "debug", False)
    result = CliRunner().invoke(_app(ValueError("oops")), [])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == "error: ValueError: oops"
    assert "--debug" in result.stderr


def test_debug_env_reraises(monkeypatch):
    monkeypatch.setitem(cli_errors._state, "debug", False)
    monkeypatch.setenv("TB_DEBUG", "1")
    result = CliRunner().invoke(_app(ToolboxError("bad thing")), [])
    assert isinstance(result.exception, ToolboxError)


def test_ctrl_c_exits_130(monkeypatch):
    monkeypatch.setitem(cli_errors._state, "debug", False)
    assert CliRunner().invoke(_app(KeyboardInterrupt()), []).exit_code == 130


def test_suggestions_rank_close_and_substring_matches():
    names = ["resnet18", "resnet50", "wide_resnet50_2", "vit_base_patch16_224"]
    assert suggest("resnet5", names)[0] == "resnet50"
    assert "wide_resnet50_2" in suggest("wide_resnet", names)
    err = unknown_name("model", "resnt50", names)
    assert err.message == "unknown model 'resnt50'" and "resnet50" in err.hint

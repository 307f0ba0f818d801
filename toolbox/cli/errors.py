"""Turns exceptions into one clear line on stderr and an exit code; `--debug` shows tracebacks."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.markup import escape

from toolbox import interrupt
from toolbox.cli import render
from toolbox.errors import ToolboxError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

_state = {"debug": os.environ.get("TB_DEBUG", "") not in ("", "0")}


def set_debug(enabled: bool) -> None:
    """Called by the root callback for `--debug`."""
    if enabled:
        _state["debug"] = True


def debug_enabled() -> bool:
    """True under `--debug` or `TB_DEBUG=1`."""
    return _state["debug"] or os.environ.get("TB_DEBUG", "") not in ("", "0")


def report(exc: BaseException) -> None:
    """Print `exc` as one red line (plus its hint) on stderr."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        # The operating system refused a path the user gave (a name too long, no permission,
        # a full disk): their files, not a bug in tb.
        exc = ToolboxError(f"{exc.strerror}: {exc.filename}",
                           "check the path, its permissions and the free space")
    if isinstance(exc, ToolboxError):
        render.stderr.print(f"[red]error:[/red] {escape(exc.message)}", markup=True, soft_wrap=True)
        if exc.hint:
            render.stderr.print(f"[dim]hint:[/dim] {escape(exc.hint)}", soft_wrap=True)
    else:
        render.stderr.print(f"[red]error:[/red] {type(exc).__name__}: {escape(str(exc))}",
                            soft_wrap=True)
        render.stderr.print("[dim]hint:[/dim] this looks like a bug; rerun with --debug "
                            "for the traceback and report it", soft_wrap=True)


def handle_errors(fn: F) -> F:
    """Wrap a command: the one place that decides exit codes.

    A bad value or a bad mix of options (`UsageError`, from the command or a service) is a usage
    error, shown and exited (2) exactly as Typer does for a bad option type; any other failure
    is one line and exit 1; Ctrl-C exits 130, and is never lost (`toolbox.interrupt`). Every
    command is decorated with this (a test walks the command tree to check it).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with interrupt.catching_ctrl_c():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except UsageError as exc:
            raise typer.BadParameter(str(exc), param_hint=exc.param) from None
        except KeyboardInterrupt:
            render.stderr.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if debug_enabled():
                raise
            report(exc)
            raise typer.Exit(1) from None

    wrapper.tb_handles_errors = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]

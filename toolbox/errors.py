"""User-facing error type and the close-match suggestions that go with unknown names."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# Line breaks and other control characters (terminal escapes included) that user text, such as
# a pasted value with a newline, would otherwise carry into an error line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with control characters written as escapes (`\\n`), so it prints as one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class ToolboxError(Exception):
    """A failure the user can act on: a one-line message plus an optional hint.

    Services raise it (never print or exit); the CLI turns it into one red line on stderr and
    exit code 1, with the traceback only under `--debug` / `TB_DEBUG=1`.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        message = one_line(message)
        super().__init__(message)
        self.message = message
        self.hint = one_line(hint) if hint else hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(ToolboxError):
    """A value the user typed that no run can use (an unknown name, a value out of range,
    options that do not go together), found before any work is done.

    The CLI reports it like a bad option type that Typer itself catches: a usage error, exit 2.
    `param` names the option or argument (`--opt`, `MODEL`) when the raiser knows it.
    """

    def __init__(self, message: str, hint: str | None = None, param: str | None = None) -> None:
        super().__init__(message, hint)
        self.param = param


def suggest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Closest valid names to `name`, best first (substring matches count before fuzzy ones)."""
    pool = list(dict.fromkeys(choices))
    lowered = name.lower()
    close = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    contains = [c for c in pool if lowered and lowered in c.lower() and c not in close]
    return (close + sorted(contains, key=len))[:n]


def unknown_name(kind: str, name: str, choices: Iterable[str], list_hint: str | None = None,
                 param: str | None = None) -> UsageError:
    """A UsageError for an unknown `kind` named `name`, suggesting the closest valid names."""
    matches = suggest(name, choices)
    hint = f"did you mean: {', '.join(matches)}?" if matches else None
    if list_hint:
        hint = f"{hint} {list_hint}" if hint else list_hint
    return UsageError(f"unknown {kind} '{name}'", hint, param)

"""What every fuzz property checks: a call succeeds or fails with one clean ToolboxError line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import settings

from toolbox.errors import ToolboxError


def budget(share: float) -> int:
    """A share of the active profile's examples, for properties whose examples cost more."""
    return max(10, int(settings().max_examples * share))


def check_error(exc: BaseException) -> None:
    """`exc` is tb's own error with a one-line message (and hint) a user can read."""
    assert isinstance(exc, ToolboxError), f"{type(exc).__name__}: {exc}"
    assert exc.message.strip(), "empty error message"
    assert len(str(exc).splitlines()) == 1, f"more than one line: {exc!r}"


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, or None when it failed the way a user error should."""
    try:
        return fn(*args, **kwargs)
    except ToolboxError as exc:
        check_error(exc)
        return None


def tree(folder: Path) -> set[str]:
    """Every path under `folder` (files, folders, links), relative, to see what a call wrote."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}

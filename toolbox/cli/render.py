"""The one place results become terminal output: rich tables for people, JSON for scripts.

Human mode writes tables to stdout and notes/warnings to stderr. `--json` mode writes only JSON
to stdout (no colour codes; an empty result is `[]`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from toolbox.jsonable import to_jsonable

stdout = Console(highlight=False, soft_wrap=False)
stderr = Console(stderr=True, highlight=False)


def print_json(value: Any) -> None:
    """Print `value` as indented JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          caption: str | None = None, right: Iterable[str] = ()) -> Table:
    """A rich Table; columns named in `right` are right-aligned (numbers)."""
    right = set(right)
    tbl = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for col in columns:
        tbl.add_column(col, justify="right" if col in right else "left", overflow="fold")
    for row in rows:
        tbl.add_row(*("" if v is None else str(v) for v in row))
    return tbl


def key_values(title: str | None, pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column table for a single object's fields."""
    tbl = Table(title=title, show_header=False, title_justify="left")
    tbl.add_column("field", style="bold")
    tbl.add_column("value", overflow="fold")
    for key, value in pairs:
        tbl.add_row(key, "" if value is None else str(value))
    return tbl


def show(renderable: Any) -> None:
    """Print a table (or any rich renderable) to stdout; plain strings are never re-wrapped."""
    stdout.print(renderable, soft_wrap=isinstance(renderable, str))


def note(message: str) -> None:
    """A hint or status line for people, on stderr so stdout stays clean."""
    stderr.print(message)


def warn(message: str) -> None:
    """A warning on stderr."""
    stderr.print(f"[yellow]warning:[/yellow] {message}")


def human_count(n: float | None) -> str:
    """11689512 -> '11.7M' (for parameter and MAC columns)."""
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))

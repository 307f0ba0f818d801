"""The one place results become terminal output: rich tables for people, JSON for scripts.

Human mode writes tables to stdout and notes/warnings to stderr. `--json` mode writes only JSON
to stdout (no colour codes; an empty result is `[]`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from toolbox.jsonable import to_jsonable

stdout = Console(highlight=False, soft_wrap=False)
FREE_TEXT_MIN = 16  # the narrowest a folding free-text column gets before a table goes wider
stderr = Console(stderr=True, highlight=False)


def print_json(value: Any) -> None:
    """Print `value` as indented JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2) + "\n")
    sys.stdout.flush()


def print_text(text: str) -> None:
    """Plain text on stdout exactly as given (YAML, say): no markup, wrapping or colour."""
    sys.stdout.write(text)
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          caption: str | None = None, right: Iterable[str] = (), wrap: Iterable[str] = ()
          ) -> Table:
    """A rich Table; columns named in `right` are right-aligned (numbers).

    Only the free-text columns named in `wrap` (URLs, descriptions) may fold. Every other cell
    is a name, number or shape and is never split: its column is as wide as its widest cell,
    and a table that cannot fit the terminal that way is printed wider (see `show`).
    """
    right, wrap = set(right), set(wrap)
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    tbl = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for index, col in enumerate(columns):
        free = col in wrap
        tbl.add_column(col, justify="right" if col in right else "left", overflow="fold",
                       no_wrap=not free,
                       min_width=None if free else _widest([col, *(r[index] for r in cells)]))
    for row in cells:
        tbl.add_row(*row)
    return tbl


def key_values(title: str | None, pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column table for a single object's fields (the values may fold; the names not)."""
    pairs = [(key, "" if value is None else str(value)) for key, value in pairs]
    tbl = Table(title=title, show_header=False, title_justify="left")
    tbl.add_column("field", style="bold", no_wrap=True, min_width=_widest(k for k, _ in pairs))
    tbl.add_column("value", overflow="fold")
    for key, value in pairs:
        tbl.add_row(key, value)
    return tbl


def _widest(texts: Iterable[str]) -> int:
    return max((cell_len(line) for text in texts for line in text.splitlines()), default=1)


def show(renderable: Any) -> None:
    """Print a table (or any rich renderable) to stdout; plain strings are never re-wrapped.

    A table whose unbreakable cells do not fit the terminal first drops its outer padding and
    edge; if it still does not fit, it is printed at the width it needs (a terminal wraps whole
    lines, a pipe keeps them) rather than splitting a name or a number.
    """
    if isinstance(renderable, Table) and _least_width(renderable) > stdout.width:
        renderable.show_edge = renderable.pad_edge = False
        need = _least_width(renderable)
        if need > stdout.width:
            wide = Console(width=need, highlight=False, soft_wrap=False,
                           force_terminal=stdout.is_terminal, no_color=stdout.no_color)
            wide.print(renderable, crop=False)
            return
    stdout.print(renderable, soft_wrap=isinstance(renderable, str))


def _least_width(tbl: Table) -> int:
    """The narrowest `tbl` can be with whole names and numbers and folded free text."""
    free = [c for c in tbl.columns if not c.no_wrap]
    saved = [c.width for c in free]
    for column in free:
        column.width = FREE_TEXT_MIN
    try:
        return Measurement.get(stdout, stdout.options.update(max_width=10**6), tbl).minimum
    finally:
        for column, width in zip(free, saved, strict=True):
            column.width = width


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

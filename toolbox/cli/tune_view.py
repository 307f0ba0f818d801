"""How `tb tune` shows its trials: the trials table (while it runs and at the end), and the view
that draws it live: on a terminal a table that grows above the running trial's bar, elsewhere
one plain line a trial."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from toolbox.cli import render

if TYPE_CHECKING:
    from rich.table import Table

    from toolbox.tune import TrialRow

LIVE_ROWS = 12  # the last trials a live table shows (the whole study is printed at the end)


def number(value: Any) -> str:
    """A parameter or metric value as a table shows it."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return f"{value:.4g}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def trials_table(rows: list[TrialRow], metric: str, params: list[str],
                 title: str | None = None) -> Table:
    """Trials as a table: number, state, the metric, each searched parameter, epochs, time."""
    names = list(dict.fromkeys([*params, *(k for r in rows for k in r.params)]))
    columns = ["trial", "state", metric, *names, "epochs", "time"]
    cells = [(r.number, r.state, number(r.value), *(number(r.params.get(n)) for n in names),
              r.epochs, seconds(r.duration_s)) for r in rows]
    table = render.table(title, columns, cells, right=[metric, *names, "epochs", "time"])
    table.show_edge = table.pad_edge = False
    return table


def trial_line(row: TrialRow, metric: str) -> str:
    """One trial in words (the plain view, off a terminal)."""
    params = ", ".join(f"{k} {number(v)}" for k, v in row.params.items())
    why = f" ({row.reason})" if row.reason and row.state != "complete" else ""
    return (f"trial {row.number} {row.state}{why}: {metric} {number(row.value)} | {params} | "
            f"{row.epochs} epochs, {seconds(row.duration_s)}")


class TrialsView:
    """The service's `Progress` (a task per trial, its epochs) and its `on_trial` callback."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.metric, self.params = "value", []
        self.rows: list[TrialRow] = []
        self.live = self.bar = None
        self.task: Any = None

    def begin(self, metric: str, params: list[str]) -> None:
        """The study is open: its metric and searched parameters are the table's columns."""
        self.metric, self.params = metric, params
        if self.enabled and render.stderr.is_terminal:
            from rich.live import Live
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("epochs"), TimeElapsedColumn(),
                                console=render.stderr)
            self.live = Live(get_renderable=self._renderable, console=render.stderr,
                             transient=True, refresh_per_second=4)
            self.live.start()

    def _renderable(self) -> Any:
        from rich.console import Group

        parts: list[Any] = []
        if self.rows:
            parts.append(trials_table(self.rows[-LIVE_ROWS:], self.metric, self.params))
        if self.bar is not None:
            parts.append(self.bar)
        return Group(*parts)

    # -- Progress ------------------------------------------------------------------
    def start(self, description: str, total: float | None, unit: str = "items") -> None:
        if self.bar is not None:
            self.finish()
            self.task = self.bar.add_task(description, total=total)

    def advance(self, amount: float = 1) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, amount)

    def note(self, message: str) -> None:
        if self.live is not None:
            self.live.console.print(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None

    # -- on_trial ------------------------------------------------------------------
    def trial(self, row: TrialRow) -> None:
        self.rows.append(row)
        if self.live is None and self.enabled:
            print(trial_line(row, self.metric), file=sys.stderr, flush=True)

    def close(self) -> None:
        """Stop drawing (the final table goes to stdout)."""
        if self.live is not None:
            self.live.stop()
            self.live = None

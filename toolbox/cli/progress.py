"""The CLI's `Progress`: a rich bar on a terminal, a few plain lines anywhere else."""

from __future__ import annotations

import sys
import time

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress

from toolbox.cli import render


class TerminalProgress:
    """Redraws one rich progress bar per task on stderr."""

    def __init__(self) -> None:
        self._bar: RichProgress | None = None
        self._task = None

    def start(self, description: str, total: float | None, unit: str = "items") -> None:
        self.finish()
        # Bytes (unit "B") show as sizes with a transfer speed; anything else as counts.
        counts = ((DownloadColumn(), TransferSpeedColumn()) if unit == "B"
                  else (MofNCompleteColumn(),))
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), *counts,
            TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=render.stderr, transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: float = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def note(self, message: str) -> None:
        (self._bar.console if self._bar else render.stderr).print(message)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class PlainProgress:
    """Prints a line at the start, then at most every `interval` seconds, and at the end.

    Off a terminal (CI logs, nohup, pipes) a redrawn bar would write one line per item.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._desc = ""
        self._total: float | None = None
        self._unit = "items"
        self._done = 0.0
        self._t0 = self._last = 0.0
        self._shown = -1.0  # the count the last printed line showed
        self._active = False

    def _line(self) -> None:
        elapsed = time.monotonic() - self._t0
        rate = self._done / elapsed if elapsed > 0 else 0.0
        if self._unit == "B":  # bytes read better as MB and MB/s
            of = f"/{self._total / 1e6:.1f}" if self._total else ""
            print(f"{self._desc}: {self._done / 1e6:.1f}{of} MB "
                  f"({elapsed:.1f}s, {rate / 1e6:.1f} MB/s)", file=sys.stderr, flush=True)
            return
        of = f"/{self._total:g}" if self._total else ""
        unit = _counted(self._total if self._total else self._done, self._unit)
        print(f"{self._desc}: {self._done:g}{of} {unit} "
              f"({elapsed:.1f}s, {rate:.1f} {self._unit}/s)", file=sys.stderr, flush=True)

    def start(self, description: str, total: float | None, unit: str = "items") -> None:
        self.finish()
        self._desc, self._total, self._unit, self._done = description, total, unit, 0.0
        self._shown = -1.0
        self._t0 = self._last = time.monotonic()
        self._active = True
        print(f"{description}: started ({total:g} {_counted(total, unit)})" if total
              else f"{description}: started", file=sys.stderr, flush=True)

    def advance(self, amount: float = 1) -> None:
        self._done += amount
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line()
            self._shown = self._done

    def note(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self._active and self._done != self._shown:  # the last line may already say it all
            self._line()
        self._active = False


def _counted(count: float, unit: str) -> str:
    """`unit` for `count` of them: "1 batch", "2 batches", "1 image" (bytes stay "B")."""
    if count != 1 or not unit.endswith("s"):
        return unit
    return unit[:-2] if unit.endswith(("ches", "shes", "sses", "xes")) else unit[:-1]


def make_progress(enabled: bool = True) -> TerminalProgress | PlainProgress:
    """The right reporter for where stderr goes (or a silent-ish plain one when disabled)."""
    if enabled and render.stderr.is_terminal:
        return TerminalProgress()
    return PlainProgress(interval=10.0 if enabled else float("inf"))

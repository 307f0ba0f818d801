"""How long-running services report progress without printing: a small callback protocol.

Services accept a `Progress` and call it; the CLI supplies one that draws a rich bar on a
terminal or prints a few plain lines elsewhere (see `toolbox.cli.progress`). `NullProgress` is the
default for Python callers who want silence.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress events from a service."""

    def start(self, description: str, total: float | None, unit: str = "items") -> None:
        """Begin a task of `total` units (None when unknown)."""

    def advance(self, amount: float = 1) -> None:
        """Record `amount` more units done."""

    def note(self, message: str) -> None:
        """A one-line status message for the user (warnings, what was chosen)."""

    def finish(self) -> None:
        """End the current task."""


class NullProgress:
    """A Progress that reports nothing; notes are kept for callers that want them."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def start(self, description: str, total: float | None, unit: str = "items") -> None:
        pass

    def advance(self, amount: float = 1) -> None:
        pass

    def note(self, message: str) -> None:
        self.notes.append(message)

    def finish(self) -> None:
        pass

"""Ctrl-C that is never lost.

Python's own SIGINT handler raises KeyboardInterrupt in whatever frame runs when the signal
lands. When that frame is a finalizer (a `__del__` or weakref callback, which garbage collection
runs anywhere: a DataLoader iterator shutting its workers down, a database connection being
closed), Python prints "Exception ignored" and drops the exception, and the run goes on as if
no key was pressed; `tb tune` then ran every remaining trial. `catching_ctrl_c()` installs a
handler that raises KeyboardInterrupt as before and also records the press, and the long loops
call `check()` at their safe points (each batch, each epoch, each trial): a press that was
dropped raises there, so Ctrl-C always ends the work, with its usual "interrupted" handling.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_pressed = threading.Event()


def _on_sigint(signum: int, frame: Any) -> None:
    _pressed.set()
    raise KeyboardInterrupt


@contextmanager
def catching_ctrl_c() -> Iterator[None]:
    """Record each Ctrl-C while the block runs (from a clean slate), so `check()` can raise it
    again if it was dropped. Outside the main thread, or where SIGINT already has a handler of
    its own (someone else's, or ignored), nothing changes."""
    installable = (threading.current_thread() is threading.main_thread()
                   and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if not installable:
        yield
        return
    _pressed.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _pressed.clear()


def pressed() -> bool:
    """Whether Ctrl-C was pressed in the current `catching_ctrl_c()` block."""
    return _pressed.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (cheap: call it once a batch).

    Raises:
        KeyboardInterrupt: Ctrl-C was pressed in the current `catching_ctrl_c()` block.
    """
    if _pressed.is_set():
        raise KeyboardInterrupt

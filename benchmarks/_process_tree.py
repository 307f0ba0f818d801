"""Shared by the benchmarks: run a command and track the peak RSS of its whole process tree."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time


def run_with_peak_rss(cmd: list[str], *, env: dict | None = None, track: bool = True,
                      interval: float = 0.05) -> tuple[subprocess.CompletedProcess, float]:
    """Run `cmd` to the end; return it and the highest RSS sum of it and its children, in MiB.

    Walking the process tree with psutil costs CPU that the measured program wants, so timing
    runs pass `track=False` and memory is measured in separate runs.
    """
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak = 0.0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not stop.is_set():
            total = 0
            try:
                for p in (parent, *parent.children(recursive=True)):
                    with contextlib.suppress(psutil.Error):  # a worker that just exited
                        total += p.memory_info().rss
            except psutil.Error:  # the command itself has exited
                return
            peak = max(peak, total / 2**20)
            time.sleep(interval)

    poller = threading.Thread(target=poll, daemon=True)
    if track:
        poller.start()
    out, err = proc.communicate()
    stop.set()
    if track:
        poller.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), peak

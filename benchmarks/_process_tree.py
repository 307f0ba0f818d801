"""Shared by the benchmarks: run a command and track the peak RSS of its whole process tree, or
read the peak of its largest process from the kernel."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
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


def run_with_largest_rss(cmd: list[str], *, env: dict | None = None
                         ) -> tuple[subprocess.CompletedProcess, float]:
    """Run `cmd` to the end; return it and the peak RSS of its largest single process (the
    command itself or a child it waited for, such as a loader worker), in MiB.

    The kernel's own figure (`wait4`'s `ru_maxrss`), so it is exact and costs the command
    nothing. A sum over the tree counts each page a worker shares with the process it was
    forked from once per worker, and polling it catches a short peak or misses it by chance.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), usage.ru_maxrss / 1024

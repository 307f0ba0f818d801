"""Memory and the garbage collector in a run: CPU training keeps the memory a step frees
(`devices.keep_freed_memory`, measured as page faults in a fresh process), a training freezes
what it was built from while it runs and unfreezes it after, and `tb` freezes everything as it
exits so that Python's shutdown does not walk it."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import torch
from toolbox.devices import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
for _ in range(10):  # warm-up: the heap grows until a freed block fits the next one
    x = torch.ones(40 << 20, dtype=torch.uint8)
    del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    x = torch.ones(40 << 20, dtype=torch.uint8)  # an activation of resnet50 at 224 px
    del x
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    kept, faults_kept = _faults("keep")
    default, faults_default = _faults("default")
    assert kept == "True" and default == "False"
    # glibc maps blocks past 32 MiB afresh each time: 20 x 40 MiB of new pages is 200,000
    # faults (fewer with transparent huge pages); kept, the same pages are reused.
    assert faults_default > 20 * 10
    assert faults_kept < faults_default / 20


def test_cpu_finetune_keeps_freed_memory_and_freezes_the_heap_while_it_runs(tmp_path,
                                                                          monkeypatch):
    import gc

    from finetune_helpers import digits_folder

    from toolbox import devices
    from toolbox.train import FinetuneConfig, finetune

    calls, frozen = [], []
    monkeypatch.setattr(devices, "keep_freed_memory", lambda: calls.append(True) or True)
    finetune(FinetuneConfig(data=str(digits_folder(tmp_path / "digits", per_class=4)),
                            model="test_resnet", img_size=16, pretrained=False, epochs=1,
                            batch_size=8, workers=0, device="cpu", out=str(tmp_path / "run")),
             on_epoch=lambda row: frozen.append(gc.get_freeze_count()))
    assert calls == [True]
    assert frozen[0] > 10_000 and gc.get_freeze_count() == 0


def test_tb_freezes_everything_as_it_exits():
    probe = ("import atexit, gc, sys\n"
             "from toolbox.cli.app import main\n"
             "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"
             "sys.argv = ['tb', '--version']\n"
             "main()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split("frozen")[-1]) > 10_000

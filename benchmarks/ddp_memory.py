"""Peak memory of each `torchrun` rank of `tb finetune`, with 1 and with 2 processes.

Every rank decodes and keeps only its share of the data, so at N = 2 each rank should hold
about half the decoded images of a single process. The data is the built-in digits (1,797
images) at a large input size, so the decoded images (3 x S x S bytes each) outweigh what torch
and timm cost by themselves (about 0.7 GiB). Each rank records its own peak RSS (getrusage:
exact, no polling).

Only memory is measured, and a full epoch at this size takes a CPU an hour, so this script cuts
every epoch short (a patch of the loaders, here only): a few training steps and validation
batches. Everything else is the real run: the whole data set is decoded and kept, DDP runs
over gloo, validation sums are reduced.

    python benchmarks/ddp_memory.py                 # --img-size 1024: 5.3 GiB decoded in all
    python benchmarks/ddp_memory.py --img-size 320  # quicker; torch's own memory then dominates
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_STEPS, VAL_BATCHES = 6, 2


def _cut_epochs() -> None:
    """Every epoch: the first few training steps and validation batches only (all ranks
    alike, so DDP's collectives still pair up)."""
    from itertools import islice

    from toolbox.train import data

    batches, val_iter = data.BatchLoader.batches, data.ShardLoader.__iter__
    data.BatchLoader.batches = lambda self, epoch: islice(batches(self, epoch), TRAIN_STEPS)
    data.BatchLoader.num_batches = lambda self, epoch=0: TRAIN_STEPS
    data.ShardLoader.__iter__ = lambda self: islice(val_iter(self), VAL_BATCHES)
    data.ShardLoader.__len__ = lambda self: VAL_BATCHES


def _rank_entry(report_dir: str, tb_args: list[str]) -> None:
    """Run `tb` in this torchrun rank and write its peak RSS (MiB) when the process exits."""

    def write_peak() -> None:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        Path(report_dir, f"rank{os.environ.get('RANK', '0')}.json").write_text(
            json.dumps({"peak_mib": peak_mib}))

    atexit.register(write_peak)
    _cut_epochs()
    from toolbox.cli.app import main

    sys.argv = ["tb", *tb_args]
    main()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(nproc: int, img_size: int, work: Path) -> list[float]:
    """Peak RSS (MiB) of each rank of one `torchrun --nproc-per-node nproc` run."""
    reports = work / f"n{nproc}"
    reports.mkdir()
    # test_convnext: its stride-4 stem keeps activations small at this input size.
    tb_args = ["finetune", "--model", "test_convnext", "--no-pretrained", "--img-size",
               str(img_size), "--epochs", "1", "--batch-size", "2", "--freeze", "--workers",
               "2", "--cache", "--out", str(work / f"run{nproc}"), "--json"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-port", str(_free_port()), __file__, "--rank-entry", str(reports), "--",
           *tb_args]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"torchrun with {nproc} process(es) failed:\n{done.stderr[-3000:]}")
    peaks = [json.loads((reports / f"rank{r}.json").read_text())["peak_mib"]
             for r in range(nproc)]
    print(f"N={nproc}: {time.perf_counter() - start:.0f} s", flush=True)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=1024)
    parser.add_argument("--rank-entry", help=argparse.SUPPRESS)
    opts, rest = parser.parse_known_args()
    if opts.rank_entry:
        _rank_entry(opts.rank_entry, [a for a in rest if a != "--"])
        return
    decoded_mib = 1797 * 3 * opts.img_size**2 / 2**20
    print(f"digits at {opts.img_size}x{opts.img_size}: {decoded_mib:.0f} MiB decoded in all",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        single = run(1, opts.img_size, Path(tmp))[0]
        pair = run(2, opts.img_size, Path(tmp))
    print(f"N=1: rank 0 peak RSS {single:.0f} MiB")
    for rank, peak in enumerate(pair):
        print(f"N=2: rank {rank} peak RSS {peak:.0f} MiB = {peak / single:.2f}x the single "
              "process")
    worst = max(pair) / single
    print(f"largest rank at N=2 / single process: {worst:.2f}x (target <= 0.60x)")


if __name__ == "__main__":
    main()

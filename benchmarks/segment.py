"""Benchmark `tb finetune --task segment` on real Fashion-MNIST canvases, CPU, time-boxed.

Two segmentation sets are exported from Debian's Fashion-MNIST files with
`tb datasets fetch fashion-mnist --export-segmentation` (2,000 training and 500 validation
96x96 canvases of 1 to 4 garments each): a binary one (`--binary`, foreground/background) and
an 11-class one (background + 10 garment classes). Each is trained with the service API on the
CPU with `tb finetune`'s segmentation defaults (tf_efficientnet_lite0 with the ImageNet weights
its package ships, offline; FPN decoder), 3 epochs at lr 3e-3, for at most `--budget` seconds of
training (the loop stops before an epoch that would cross it, exactly as Ctrl-C would,
checkpoint included), then:

  binary:   the best validation Dice of the foreground (goal >= 0.90) and the training time;
  11-class: the best validation mIoU against a model that predicts only background, computed on
            the same validation masks (goal: at least 0.30 better).

Each line gives the epochs, the training wall time and the process's CPU time while training:
on a busy machine the wall time grows with the load, the CPU time much less.

    python benchmarks/segment.py                 # the full figures (about 12 minutes)
    python benchmarks/segment.py --model resnet18 --no-pretrained --epochs 6   # the old recipe
    python benchmarks/segment.py --quick         # a smoke run: 200 + 50 canvases, 60 s each
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _fashion import FASHION

from toolbox.train import FinetuneConfig

TB = Path(sys.executable).parent / "tb"


def export(root: Path, dest: Path, count: int | None, binary: bool) -> None:
    """The real command, as a user runs it."""
    cmd = [str(TB), "datasets", "fetch", "fashion-mnist", "--root", str(root), "--from-dir",
           str(FASHION), "--export-segmentation", str(dest), "--json"]
    cmd += ["--binary"] if binary else []
    cmd += ["--export-max", str(count)] if count else []
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "NO_COLOR": "1"})


def background_only_miou(data: Path) -> float:
    """mIoU of predicting background (0) everywhere, on the validation masks at 96 px."""
    import numpy as np

    from toolbox.images import read_mask
    from toolbox.segment import scores

    classes = (data / "classes.txt").read_text().split("\n")
    n = len([c for c in classes if c])
    matrix = np.zeros((n, n), dtype=np.int64)
    for path in sorted((data / "val" / "masks").glob("*.png")):
        mask = read_mask(path)
        matrix[:, 0] += np.bincount(mask.reshape(-1), minlength=n)[:n]
    return scores(matrix).miou


def train(data: Path, out: Path, *, model: str, pretrained: bool, loss: str, epochs: int,
          budget: float, batch: int, lr: float) -> tuple[list[dict], float, float, bool]:
    """Train until `epochs` or the budget; (metrics.csv rows, wall seconds, CPU seconds spent
    in the epochs, stopped early)."""
    from toolbox.train import FinetuneConfig, finetune

    spent = 0.0
    cpu = 0.0
    cpu_mark = time.process_time()

    def on_epoch(row) -> None:
        nonlocal spent, cpu, cpu_mark
        spent += row.epoch_time_s
        now = time.process_time()
        cpu, cpu_mark = cpu + now - cpu_mark, now
        print(f"  epoch {row.epoch}: {row.epoch_time_s:.0f}s ({cpu:.0f}s CPU so far), val mIoU "
              f"{row.val_miou:.3f}, Dice {row.val_dice:.3f}", flush=True)
        # Stop before an epoch that would overrun the budget (epochs take about as long as
        # the last one); it stops like Ctrl-C: last.pt and metrics.csv are kept.
        if spent + row.epoch_time_s > budget and row.epoch < epochs:
            raise KeyboardInterrupt

    config = FinetuneConfig(task="segment", data=str(data), model=model, pretrained=pretrained,
                            img_size=96, loss=loss, epochs=epochs, batch_size=batch, lr=lr,
                            workers=0, out=str(out), seed=0)
    start = time.perf_counter()
    cpu_mark = time.process_time()  # the set-up (decoding the canvases) is not training
    stopped = False
    try:
        finetune(config, on_epoch=on_epoch)
    except KeyboardInterrupt:
        stopped = True
    wall = time.perf_counter() - start
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle)), wall, cpu, stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--model", default=FinetuneConfig.model)  # tb finetune's default
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                        help="random encoder weights instead of the packaged ImageNet ones")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of training per set (default 300; 60 with --quick)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the data and runs here (kept) instead of a temporary folder")
    args = parser.parse_args()
    count = 200 if args.quick else None
    budget = args.budget or (60.0 if args.quick else 300.0)
    epochs = args.epochs or (2 if args.quick else 3)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    print(f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, model {args.model} ({'pretrained' if args.pretrained else 'random init'}) "
          f"+ fpn, 96 px, lr {args.lr:g}, {epochs} epochs, budget {budget:.0f}s")
    with tempfile.TemporaryDirectory(prefix="tb-bench-segment-") as tmp:
        tmp_path = args.keep or Path(tmp)
        figures = {}
        for name, binary, loss in (("binary", True, "dice"), ("11-class", False, "ce+dice")):
            data = tmp_path / name
            export(tmp_path / "root", data, count, binary)
            n_train = len(list((data / "train" / "images").glob("*.png")))
            n_val = len(list((data / "val" / "images").glob("*.png")))
            print(f"{name}: {n_train} train + {n_val} val canvases, --loss {loss}")
            rows, wall, cpu, stopped = train(
                data, tmp_path / f"run-{name}", model=args.model, pretrained=args.pretrained,
                loss=loss, epochs=epochs, budget=budget, batch=32, lr=args.lr)
            best = max(rows, key=lambda r: float(r["val_miou"]))
            training = sum(float(r["epoch_time_s"]) for r in rows)
            figures[name] = (best, training, cpu, wall, len(rows), stopped, data)
        print()
        best, training, cpu, wall, n, stopped, _ = figures["binary"]
        print(f"binary:   val Dice {float(best['val_dice']):.3f} (goal >= 0.90), mIoU "
              f"{float(best['val_miou']):.3f}, best epoch {best['epoch']} of {n}"
              f"{' (budget reached)' if stopped else ''}; training {training:.0f}s "
              f"({cpu:.0f}s CPU), whole run {wall:.0f}s")
        best, training, cpu, wall, n, stopped, data = figures["11-class"]
        baseline = background_only_miou(data)
        miou = float(best["val_miou"])
        print(f"11-class: val mIoU {miou:.3f} vs background only {baseline:.3f}: "
              f"+{miou - baseline:.3f} (goal >= +0.30), Dice {float(best['val_dice']):.3f}, "
              f"best epoch {best['epoch']} of {n}{' (budget reached)' if stopped else ''}; "
              f"training {training:.0f}s ({cpu:.0f}s CPU), whole run {wall:.0f}s")


if __name__ == "__main__":
    main()

"""Benchmark `tb finetune` against the textbook PyTorch training loop.

Same model (resnet18, random init), image size (64), batch (64), data (a PNG ImageFolder export
of real Fashion-MNIST images, train/ and val/), 2 DataLoader workers, Adam, cross-entropy, no
schedule, in one run:

  (a) the textbook loop: ImageFolder + transforms.Compose + DataLoader + Adam + CrossEntropy;
  (b) `tb finetune` as a real subprocess, at the same precision;
  both in float32 and with bfloat16 autocast, then (c) `tb finetune --freeze` (head only) and
  `--channels-last`.

Each figure is training images/s (the training loop only, as `tb finetune` reports it),
averaged over the epochs after the first (which pays start-up costs on both sides), and the peak
RSS of the whole process tree (main process and DataLoader workers), polled with psutil.
Goals: (b) >= 1.0x (a) at the same precision (aim 1.2x), (b)'s peak memory within 1.2x of
(a)'s, and --freeze much faster than full training.

`--short-run` times a whole short run instead: one epoch on 2,000 PNGs (1,600 train + 400 val),
each side a fresh process timed from start to exit (imports, start-up, training and validation),
alternating rounds, medians compared. Goal: `tb finetune` at least 1.05x the textbook loop
(textbook time / tb time).

    python benchmarks/finetune.py              # 3,000 + 600 images, 3 epochs (a few minutes)
    python benchmarks/finetune.py --quick      # a smoke run: 384 + 128 images, 2 epochs
    python benchmarks/finetune.py --short-run  # whole-process time of one short epoch
    python benchmarks/finetune.py --short-run --quick --rounds 1  # its smoke run (256 + 64)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _fashion import FASHION
from _process_tree import run_with_peak_rss

IMG_SIZE, BATCH, WORKERS = 64, 64, 2
TB = Path(sys.executable).parent / "tb"


def read_fashion(count: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` real Fashion-MNIST training images from `offset` (Debian's idx .gz files)."""
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz", "rb") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz", "rb") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images[offset:offset + count], labels[offset:offset + count]


def export(root: Path, train: int, val: int) -> None:
    """root/train/<class>/<n>.png and root/val/<class>/<n>.png."""
    from toolbox.images import write_image

    for split, count, offset in (("train", train, 0), ("val", val, train)):
        images, labels = read_fashion(count, offset)
        for n, (image, label) in enumerate(zip(images, labels, strict=True)):
            write_image(root / split / f"class{label}" / f"{n:05d}.png", image)


def textbook(data: Path, epochs: int, bf16: bool) -> dict:
    """The plain loop, as a tutorial writes it (run in its own process by `main`)."""
    import torch
    import torchvision
    from torchvision import transforms

    torch.manual_seed(0)
    tf = transforms.Compose([transforms.Resize(IMG_SIZE), transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    train = torchvision.datasets.ImageFolder(data / "train", tf)
    val = torchvision.datasets.ImageFolder(data / "val", tf)
    loader = torch.utils.data.DataLoader(train, batch_size=BATCH, shuffle=True,
                                         num_workers=WORKERS, drop_last=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=BATCH, num_workers=WORKERS)
    import timm

    model = timm.create_model("resnet18", num_classes=len(train.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        model.train()
        seen, start = 0, time.perf_counter()
        for images, targets in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = criterion(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(targets)
        rates.append(seen / (time.perf_counter() - start))
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, targets in val_loader:
                correct += (model(images).argmax(1) == targets).sum().item()
    return {"images_per_s": rates, "val_acc1": correct / len(val)}


def steady(rates: list[float]) -> float:
    """Mean images/s of the epochs after the first (or the only one)."""
    later = rates[1:] or rates
    return sum(later) / len(later)


def tb_command(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    """`tb finetune` with the textbook loop's settings (model, size, batch, workers, optimizer)."""
    return [str(TB), "finetune", "--data", str(data), "--model", "resnet18", "--no-pretrained",
            "--img-size", str(IMG_SIZE), "--batch-size", str(BATCH), "--workers", str(WORKERS),
            "--opt", "adam", "--weight-decay", "0", "--sched", "none", "--epochs", str(epochs),
            "--out", str(out), "--json", *extra]


def short_run(rounds: int, env: dict, train: int = 1600, val: int = 400) -> float:
    """Whole-process wall time of one epoch, textbook vs `tb finetune`, rounds alternating;
    returns the ratio of the medians (textbook / tb: above 1.0, tb is faster)."""
    import statistics
    import subprocess

    with tempfile.TemporaryDirectory(prefix="tb-bench-short-") as tmp:
        data = Path(tmp) / "fmnist"
        export(data, train, val)
        print(f"short run: 1 epoch, {train:,} train + {val:,} val Fashion-MNIST PNGs, resnet18 at "
              f"{IMG_SIZE}px, batch {BATCH}, {WORKERS} workers, {os.cpu_count()} cores, "
              f"{rounds} alternating rounds")
        times: dict[str, list[float]] = {"textbook": [], "tb finetune": []}
        for n in range(rounds):
            commands = {
                "textbook": [sys.executable, __file__, "--textbook", str(data), "--epochs", "1"],
                "tb finetune": tb_command(data, Path(tmp) / f"run-{n}", 1),
            }
            for name in (list(commands) if n % 2 == 0 else list(commands)[::-1]):
                start = time.perf_counter()
                subprocess.run(commands[name], env=env, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name:<12} median {statistics.median(values):6.2f} s  "
              f"({', '.join(f'{v:.2f}' for v in values)})")
    ratio = statistics.median(times["textbook"]) / statistics.median(times["tb finetune"])
    # Each round's pair ran back to back, so its ratio is less exposed to a machine whose load
    # drifts between rounds than the medians are.
    paired = statistics.median(a / b for a, b in zip(times["textbook"], times["tb finetune"],
                                                     strict=True))
    print(f"ratio textbook / tb finetune: {ratio:.2f}x of the medians, {paired:.2f}x median of "
          f"the paired rounds (goal >= 1.05)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--textbook", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--short-run", action="store_true",
                        help="whole-process time of one short epoch, textbook vs tb")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --short-run")
    args = parser.parse_args()
    if args.textbook:  # the child process of variant (a)
        print(json.dumps(textbook(args.textbook, args.epochs, args.bf16)))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    if args.short_run:
        short_run(args.rounds, env, *((256, 64) if args.quick else ()))
        return
    train, val, epochs = (384, 128, 2) if args.quick else (3000, 600, 3)
    epochs = args.epochs or epochs
    with tempfile.TemporaryDirectory(prefix="tb-bench-finetune-") as tmp:
        data = Path(tmp) / "fmnist"
        export(data, train, val)
        print(f"data: {train} train + {val} val Fashion-MNIST PNGs, resnet18 at {IMG_SIZE}px, "
              f"batch {BATCH}, {WORKERS} workers, {epochs} epochs, {os.cpu_count()} cores")
        results = {}
        for precision in ("fp32", "bf16"):
            cmd = [sys.executable, __file__, "--textbook", str(data), "--epochs", str(epochs)]
            bf16 = ["--bf16"] if precision == "bf16" else []
            done, rss = run_with_peak_rss(cmd + bf16, env=env)
            results[f"textbook {precision}"] = (steady(json.loads(done.stdout)["images_per_s"]),
                                                rss)
            variants = [("", [])] if precision == "fp32" else [
                ("", ["--amp"]), (" --channels-last", ["--amp", "--channels-last"]),
                (" --freeze", ["--amp", "--freeze"])]
            for label, extra in variants:
                cmd = tb_command(data, Path(tmp) / f"run-{precision}{label.strip()}", epochs,
                                 *extra)
                done, rss = run_with_peak_rss(cmd, env=env)
                rows = json.loads(done.stdout)["epochs"]
                results[f"tb finetune {precision}{label}"] = (
                    steady([r["images_per_s"] for r in rows]), rss)
    width = max(map(len, results))
    for name, (rate, rss) in results.items():
        print(f"{name:<{width}}  {rate:8.1f} images/s  peak RSS {rss:7.0f} MiB")
    for precision in ("fp32", "bf16"):
        (a, a_rss), (b, b_rss) = (results[f"textbook {precision}"],
                                  results[f"tb finetune {precision}"])
        print(f"{precision}: tb finetune / textbook = {b / a:.2f}x images/s, "
              f"{b_rss / a_rss:.2f}x peak RSS")
    full = results["tb finetune bf16"][0]
    for flag in ("--channels-last", "--freeze"):
        print(f"bf16: {flag} / plain = {results[f'tb finetune bf16 {flag}'][0] / full:.2f}x "
              f"images/s")


if __name__ == "__main__":
    main()

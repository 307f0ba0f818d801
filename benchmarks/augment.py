"""Benchmark `tb augment`: the naive imgaug loop vs `tb augment --workers 2`, and memory growth.

On the same folder of real photos (scikit-image samples resized to 512x512, JPEG) and the same
3-step pipeline, in one run:

1. the naive single-process loop `imageio.imread -> seq(image=img) -> imageio.imwrite`;
2. `tb augment SRC OUT --workers 2` as a real subprocess (its own images/s, which includes
   starting the worker pool, and the end-to-end rate including Python start-up);
3. the peak RSS of `tb augment`'s whole process tree (main process, fork server, workers),
   polled with psutil, for the folder and for a folder 10x larger.

Goal on a 2-core machine: at least 1.7x the naive loop's images/s, and peak memory that does not
grow by more than a few percent with 10x the images.

    python benchmarks/augment.py            # 300 and 3000 images (a few minutes)
    python benchmarks/augment.py --quick    # a smoke run with small figures
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _process_tree import run_with_peak_rss

PIPELINE = ("Affine(rotate=(-25, 25)); AdditiveGaussianNoise(scale=(10, 60)); "
            "Crop(percent=(0, 0.2))")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "cat",
          "retina", "hubble_deep_field")
QUALITY = 75  # imageio/Pillow's JPEG default, so both sides encode the same way


def make_folder(root: Path, count: int, size: int) -> None:
    """`count` JPEGs of real photos (8 photos x flips/rotations, then repeated) in 4 classes."""
    from PIL import Image
    from skimage import data

    variants = []
    for name in PHOTOS:
        image = Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
        image = image.resize((size, size), Image.BICUBIC)
        for k in range(8):
            v = image.transpose(Image.FLIP_LEFT_RIGHT) if k % 2 else image
            variants.append(v.rotate(90 * (k // 2)))
    first: list[Path] = []
    for i in range(count):
        path = root / f"class{i % 4}" / f"img{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i < len(variants):
            variants[i].save(path, quality=90)
            first.append(path)
        else:
            shutil.copyfile(first[i % len(first)], path)


def naive_loop(src: Path, out: Path) -> float:
    """The imgaug tutorial loop, one process; returns images/s."""
    import imageio.v3 as iio
    import imgaug.augmenters as iaa

    seq = iaa.Sequential([iaa.Affine(rotate=(-25, 25)),
                          iaa.AdditiveGaussianNoise(scale=(10, 60)),
                          iaa.Crop(percent=(0, 0.2))])
    seq.seed_(0)
    files = sorted(src.rglob("*.jpg"))
    start = time.perf_counter()
    for path in files:
        image = iio.imread(path)
        image_aug = seq(image=image)
        dest = out / path.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(dest, image_aug, quality=QUALITY)
    return len(files) / (time.perf_counter() - start)


def tb_command() -> list[str]:
    tb = Path(sys.executable).parent / "tb"
    return [str(tb)] if tb.exists() else [sys.executable, "-m", "toolbox"]


def run_tb(src: Path, out: Path, workers: int, measure_memory: bool = False
           ) -> tuple[dict, float, float]:
    """Run `tb augment` as a subprocess; returns (report, end-to-end images/s, peak tree RSS).

    Memory is polled only when asked: walking the process tree with psutil costs CPU that the
    workers need, so timing runs and memory runs are separate.
    """
    cmd = [*tb_command(), "augment", str(src), str(out), "--aug", PIPELINE, "--seed", "0",
           "--workers", str(workers), "--quality", str(QUALITY), "--json"]
    start = time.perf_counter()
    done, peak = run_with_peak_rss(cmd, track=measure_memory)
    elapsed = time.perf_counter() - start
    report = json.loads(done.stdout)
    return report, report["images_read"] / elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with small figures")
    parser.add_argument("--images", type=int, default=None, help="images in the small folder")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating naive/tb rounds on the small folder (best of each)")
    args = parser.parse_args()
    count = args.images or (24 if args.quick else 300)
    size = args.size or (256 if args.quick else 512)

    with tempfile.TemporaryDirectory(prefix="tb-bench-augment-") as tmp:
        tmp = Path(tmp)
        small, large = tmp / "small", tmp / "large"
        make_folder(small, count, size)
        make_folder(large, count * 10, size)
        print(f"images: {count} (and {count * 10}) real photos, {size}x{size} JPEG")
        print(f"pipeline: {PIPELINE}")

        # Alternate the two sides and keep each one's best round: this VM's speed drifts by
        # tens of percent over a minute, which would otherwise favour whichever ran first.
        naive_rates, tb_runs = [], []
        for _ in range(args.rounds):
            naive_rates.append(naive_loop(small, tmp / "naive"))
            shutil.rmtree(tmp / "naive")  # outputs are not needed; keep the disk use down
            tb_runs.append(run_tb(small, tmp / "tb-small", workers=2))
            shutil.rmtree(tmp / "tb-small")
        naive = max(naive_rates)
        report, end_to_end, _ = max(tb_runs, key=lambda run: run[0]["images_per_second"])
        report_large, end_to_end_large, _ = run_tb(large, tmp / "tb-large", workers=2)
        shutil.rmtree(tmp / "tb-large")
        _, _, rss_small = run_tb(small, tmp / "tb-small", workers=2, measure_memory=True)
        shutil.rmtree(tmp / "tb-small")
        _, _, rss_large = run_tb(large, tmp / "tb-large", workers=2, measure_memory=True)
        tb_rate = report["images_per_second"]
        tb_rate_large = report_large["images_per_second"]
        print(f"best of {args.rounds} alternating rounds on the {count}-image folder")
        print(f"naive loop (1 process):          {naive:7.1f} images/s")
        print(f"tb augment --workers 2:          {tb_rate:7.1f} images/s "
              f"(pool start included; {end_to_end:.1f} images/s end to end with Python "
              f"start-up)")
        print(f"tb augment --workers 2, 10x:     {tb_rate_large:7.1f} images/s "
              f"({end_to_end_large:.1f} end to end)")
        print(f"speed-up vs naive:               {tb_rate / naive:7.2f}x "
              f"({tb_rate_large / naive:.2f}x on the 10x folder; goal >= 1.7x on 2 cores)")
        growth = (rss_large / rss_small - 1) * 100
        print(f"peak RSS of the process tree:    {rss_small:7.0f} MiB for {count} images, "
              f"{rss_large:.0f} MiB for {count * 10} images ({growth:+.1f}%)")
        if args.quick:
            print("(--quick: a smoke run; the figures are not the benchmark)")


if __name__ == "__main__":
    main()

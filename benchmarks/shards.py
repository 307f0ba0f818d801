"""Reading training data from WebDataset shards against the same images as a folder.

Two claims of `tb finetune --data 'shards/train-*.tar'` (issue 26), measured side by side on
generated photos-like JPEGs:

- throughput: one epoch of decoded, resized uint8 batches from the shards, against one epoch
  of the same images from their folder through the folder path (`--no-cache`: decoded in the
  loader workers every epoch), with the same workers and batch size;
- memory: the peak RSS of the whole process tree (main process and loader workers) reading
  the shards packed into S shards and into 10 x S shards; it should stay within 10%.

Each reading runs in its own process (`--read`), so one reading's heap never counts in
another's. Numbers need a quiet machine; `--quick` only checks that everything runs.

    python benchmarks/shards.py                     # 4,000 images of 160 px, 4 workers
    python benchmarks/shards.py --images 20000 --workers 8
    python benchmarks/shards.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _process_tree import run_with_peak_rss

CLASSES = 10


def _make_images(root: Path, count: int, size: int) -> None:
    """`count` JPEGs in CLASSES class folders: smooth random fields, so they compress (and
    decode) like photographs rather than like noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:06d}.jpg", quality=90)


def _read(kind: str, data: str, workers: int, batch_size: int, img_size: int) -> dict:
    """One epoch of training batches from `data` (in this process and its loader workers)."""
    from toolbox.models import ModelMeta
    from toolbox.train.data import prepare_run_data
    from toolbox.train.shard_data import shard_run_data
    from toolbox.train.splits import load_splits

    splits = load_splits(data=data, dataset=None, root=None, val_split=0.01, seed=0,
                         val_data=data if kind == "shards" else None)
    meta = ModelMeta("resnet18", CLASSES, [f"class{i}" for i in range(CLASSES)],
                     input_size=(3, img_size, img_size))
    common = dict(batch_size=batch_size, seed=0, workers=workers, augment=None)
    run = (shard_run_data(splits, meta, buffer=1000, cache=None, sampler="shuffle", **common)
           if kind == "shards" else
           prepare_run_data(splits, meta, cache=False, **common))
    start = time.perf_counter()
    images = sum(len(y) for _, y in run.loader.batches(1))
    seconds = time.perf_counter() - start
    return {"images": images, "seconds": round(seconds, 2),
            "images_per_s": round(images / seconds, 1)}


def _reading(kind: str, data: str, args: argparse.Namespace, track: bool) -> tuple[dict, float]:
    cmd = [sys.executable, __file__, "--read", kind, data, "--workers", str(args.workers),
           "--batch-size", str(args.batch_size), "--img-size", str(args.img_size)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done, peak = run_with_peak_rss(cmd, env=env, track=track)
    return json.loads(done.stdout.strip().splitlines()[-1]), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=160, help="side of the generated JPEGs")
    parser.add_argument("--img-size", type=int, default=128, help="the model's input size")
    parser.add_argument("--shards", type=int, default=8, help="S: the fewer shards")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a small run that checks it works")
    parser.add_argument("--read", nargs=2, metavar=("KIND", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        print(json.dumps(_read(*args.read, args.workers, args.batch_size, args.img_size)))
        return
    if args.quick:
        args.images, args.size, args.img_size, args.shards, args.workers = 200, 48, 32, 2, 2
    from toolbox.datasets import pack

    with tempfile.TemporaryDirectory(prefix="tb-shards-bench-") as tmp:
        folder = Path(tmp) / "images"
        _make_images(folder, args.images, args.size)
        total = sum(p.stat().st_size for p in folder.rglob("*.jpg"))
        few, many = Path(tmp) / "few", Path(tmp) / "many"
        pack(folder, few, shard_size=max(1000, total // args.shards + 1))
        pack(folder, many, shard_size=max(1000, total // (10 * args.shards) + 1))
        counts = {name: len(list(p.glob("train-*.tar"))) for name, p in
                  (("few", few), ("many", many))}
        # Timings untracked (polling the process tree costs CPU); memory in separate runs.
        folder_speed, _ = _reading("folder", str(folder), args, track=False)
        shard_speed, _ = _reading("shards", f"{few}/train-*.tar", args, track=False)
        _, peak_few = _reading("shards", f"{few}/train-*.tar", args, track=True)
        _, peak_many = _reading("shards", f"{many}/train-*.tar", args, track=True)
    result = {
        "images": args.images, "workers": args.workers, "batch_size": args.batch_size,
        "throughput_images_per_s": {"folder": folder_speed["images_per_s"],
                                    "shards": shard_speed["images_per_s"]},
        "shards_vs_folder": round(shard_speed["images_per_s"]
                                  / max(folder_speed["images_per_s"], 1e-9), 3),
        "peak_rss_mib": {f"{counts['few']} shards": round(peak_few),
                         f"{counts['many']} shards": round(peak_many)},
        "peak_rss_ratio_10x_shards": round(peak_many / max(peak_few, 1e-9), 3),
        "quick": args.quick,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark `tb predict`'s batched inference against the one-image-at-a-time loop.

Same model (resnet18 with a 10-class head, random init, input 64x64), same real images (PNGs
of Fashion-MNIST from Debian's package, or scikit-learn digits when it is missing), CPU, float32,
in one run:

  (a) the naive loop: for each file, PIL open -> transforms.Compose -> model(x[None]) -> softmax;
  (b) `toolbox.inference.predict_images` (what `tb predict` calls): batches of 64, images decoded
      in 2 loader processes, `torch.inference_mode`;
  (c) the same with `amp=True` (bfloat16 autocast on the CPU).

Figures: images/s of each ((a) gets its model loaded before the clock starts; (b) and (c) load
it from the run folder inside the clock, as a `tb predict` call does), and the
speed-ups of (b) and (c) over (a). Both sides must agree on the top-1 class (up to near-ties
that PIL's and torchvision's resizing round differently).

    python benchmarks/predict.py            # 2,000 images
    python benchmarks/predict.py --quick    # a smoke run: 200 images
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _fashion import FASHION

IMG_SIZE = 64


def real_images(count: int) -> np.ndarray:
    """`count` real 28x28 grayscale images: Fashion-MNIST's test set, else sklearn's digits."""
    path = FASHION / "t10k-images-idx3-ubyte.gz"
    if path.is_file():
        with gzip.open(path, "rb") as handle:
            images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    else:
        from sklearn.datasets import load_digits

        images = (load_digits().images * 16).clip(0, 255).astype(np.uint8)
    return np.resize(images, (count, *images.shape[1:]))


def naive(files: list[Path], model, meta) -> tuple[float, list[int]]:
    import torch
    from PIL import Image
    from torchvision import transforms

    tfm = transforms.Compose([
        transforms.Resize(IMG_SIZE), transforms.CenterCrop(IMG_SIZE), transforms.ToTensor(),
        transforms.Normalize(meta.mean, meta.std)])
    top1 = []
    start = time.perf_counter()
    with torch.no_grad():
        for path in files:
            x = tfm(Image.open(path).convert("RGB"))[None]
            top1.append(int(torch.softmax(model(x), dim=1).argmax()))
    return len(files) / (time.perf_counter() - start), top1


def batched(files: list[Path], run: Path, amp: bool) -> tuple[float, list[int]]:
    from toolbox.inference import predict_images

    start = time.perf_counter()
    result = predict_images(files, run=run, topk=1, batch_size=64, device="cpu", amp=amp,
                            workers=2)
    speed = len(files) / (time.perf_counter() - start)
    return speed, [p.top[0].index for p in result.predictions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (200 images)")
    args = parser.parse_args()
    count = 200 if args.quick else 2000

    import torch

    from toolbox.images import write_image
    from toolbox.models import ModelMeta, create_model, load_model_file, save_safetensors

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder, run = Path(tmp) / "images", Path(tmp) / "run"
        for n, image in enumerate(real_images(count)):
            write_image(folder / f"{n:05d}.png", image)
        files = sorted(folder.glob("*.png"))
        meta = ModelMeta(model="resnet18", num_classes=10,
                         class_names=[f"c{i}" for i in range(10)],
                         input_size=(3, IMG_SIZE, IMG_SIZE))
        save_safetensors(create_model("resnet18", num_classes=10), run / "model.safetensors",
                         meta)
        model, meta = load_model_file(run / "model.safetensors")
        model.eval()
        naive(files[:8], model, meta)  # warm-up, both sides
        batched(files[:8], run, amp=False)
        a, a_top1 = naive(files, model, meta)
        b, b_top1 = batched(files, run, amp=False)
        c, _ = batched(files, run, amp=True)
    same = sum(x == y for x, y in zip(a_top1, b_top1, strict=True))
    print(f"images: {count} real 28x28 PNGs, model resnet18 at {IMG_SIZE}x{IMG_SIZE}, CPU, "
          f"{torch.get_num_threads()} threads")
    print(f"(a) naive one-image loop:           {a:8.1f} images/s")
    print(f"(b) tb predict, batch 64, 2 workers: {b:8.1f} images/s  ({b / a:.2f}x)")
    print(f"(c) tb predict --amp (bfloat16):     {c:8.1f} images/s  ({c / a:.2f}x)")
    # PIL's and torchvision's tensor resize round differently, so a near-tie can flip.
    print(f"same top-1 class on (a) and (b): {same}/{count}")
    if same < 0.98 * count:
        sys.exit("the two paths disagree on more than 2% of the images")


if __name__ == "__main__":
    main()

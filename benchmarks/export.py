"""Benchmark a `tb export` ONNX file in onnxruntime against the same model in PyTorch eager.

For resnet18 and tf_efficientnet_lite0 (random weights, a 10-class head, 224x224, float32, CPU),
in one run: a run folder is written, exported with `toolbox.export.export_model` (what
`tb export` calls), and then, round after round, the two sides classify the same random batch:

  (a) PyTorch eager: normalise, `model(x)` under `torch.inference_mode`;
  (b) onnxruntime: the exported file (normalisation inside the graph), CPU provider.

Both use the same number of threads. Each round times (a) and (b) back to back at batch 1 and
batch 32, in alternating order, so load from other processes hits both alike; the figures are
the medians over rounds of images/s, and the median of the per-round ratios (b)/(a). The two
sides' logits are compared once, as a sanity check.

    python benchmarks/export.py               # 5 rounds
    python benchmarks/export.py --rounds 9    # steadier medians on a busy machine
    python benchmarks/export.py --threads 1   # one thread a side (less hurt by other load)
    python benchmarks/export.py --quick       # a smoke run: 2 rounds, fewer repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("resnet18", "tf_efficientnet_lite0")
SIZE = 224
BATCHES = (1, 32)
GOAL = 1.2  # onnxruntime at batch 1 should be at least this many times eager's speed


def _images_per_s(fn, batch: int, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return batch * repeats / (time.perf_counter() - start)


def bench_model(name: str, folder: Path, rounds: int, quick: bool) -> dict:
    import onnxruntime as ort
    import torch

    from toolbox.export import export_model
    from toolbox.models import ModelMeta, create_model, load_model_file, save_safetensors

    run = folder / name
    meta = ModelMeta(model=name, num_classes=10, class_names=[f"c{i}" for i in range(10)],
                     input_size=(3, SIZE, SIZE))
    save_safetensors(create_model(name, num_classes=10), run / "model.safetensors", meta)
    onnx_file = export_model(run, check=None).file
    model, meta = load_model_file(run / "model.safetensors")
    model.eval()
    mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.std).view(1, 3, 1, 1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(onnx_file), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = {b: rng.random((b, 3, SIZE, SIZE), dtype=np.float32) for b in BATCHES}

    def eager(batch: int):
        x = torch.from_numpy(inputs[batch])
        with torch.inference_mode():
            return model((x - mean) / std).numpy()

    def onnx(batch: int):
        return session.run(None, {"image": inputs[batch]})[0]

    diff = float(np.abs(eager(BATCHES[-1]) - onnx(BATCHES[-1])).max())
    repeats = {1: 5 if quick else 20, 32: 1 if quick else 2}
    speeds: dict[tuple[str, int], list[float]] = {}
    for r in range(rounds):
        for batch in BATCHES:
            sides = [("eager", eager), ("onnxruntime", onnx)]
            for side, fn in sides if r % 2 == 0 else sides[::-1]:
                fn(batch)  # one untimed call: caches and thread pools warm for this side
                speed = _images_per_s(lambda fn=fn, b=batch: fn(b), batch, repeats[batch])
                speeds.setdefault((side, batch), []).append(speed)
    return {"diff": diff, "speeds": speeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (2 rounds)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both sides (default: torch's, one per core)")
    args = parser.parse_args()
    rounds = 2 if args.quick else max(1, args.rounds)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU, float32, {SIZE}x{SIZE}, {torch.get_num_threads()} threads on both sides, "
          f"{rounds} alternating rounds; medians")
    print(f"{'model':22} {'batch':>5} {'eager img/s':>12} {'onnxrt img/s':>13} {'ratio':>6}")
    short = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            result = bench_model(name, Path(tmp), rounds, args.quick)
            speeds = result["speeds"]
            for batch in BATCHES:
                eager, onnx = speeds[("eager", batch)], speeds[("onnxruntime", batch)]
                ratio = statistics.median(o / e for o, e in zip(onnx, eager, strict=True))
                print(f"{name:22} {batch:5d} {statistics.median(eager):12.1f} "
                      f"{statistics.median(onnx):13.1f} {ratio:5.2f}x")
                if batch == 1 and ratio < GOAL:
                    short.append(f"{name} at batch 1: {ratio:.2f}x")
            print(f"{name:22} max |logit difference| at batch 32: {result['diff']:.2e}")
    if short:
        sys.exit(f"onnxruntime below {GOAL}x eager: " + ", ".join(short))


if __name__ == "__main__":
    main()

"""Benchmark `tb finetune --freeze` with the feature cache against `--no-feature-cache`.

Every figure is a whole process (`tb` started, trained, exited), run side by side in one run:

  (a) the headline: a 10-epoch frozen run of tf_efficientnet_lite0 (its packaged pretrained
      weights) at 224 px on 2,000 Fashion-MNIST PNGs (1,600 train + 400 val): cached, cold
      (an empty feature cache), against `--no-feature-cache`. Goal >= 6x.
  (b) the demo, `tb finetune --freeze --amp` (5 epochs, 64 px, the digits): cold against
      uncached (goal >= 1.6x), and warm with another --lr against uncached (goal >= 2.5x).
  (c) in each cached cold run: epochs 2..N together against its feature pass (goal: less).
  (d) the peak RSS of each run's largest process (the kernel's figure for the command and the
      loader workers it waited for, so the timing runs are the memory runs too): cached no
      higher than uncached. Not the sum over the process tree: that counts the pages each
      worker shares with the training process once per worker, and so measures how many
      workers were alive at the time more than the memory used.

    python benchmarks/frozen.py                # the real thing (tens of minutes on 2 cores)
    python benchmarks/frozen.py --quick        # a smoke run: 200 PNGs, 64 px, 2 epochs
    python benchmarks/frozen.py --skip-headline --rounds 3   # the demo only, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _process_tree import run_with_largest_rss, run_with_peak_rss
from finetune import export

TB = Path(sys.executable).parent / "tb"
FEATURES = re.compile(r"cached \((\d+) computed in ([\d.]+) s, (\d+) reused\)")


def timed(cmd: list[str], env: dict) -> dict:
    """Run one `tb finetune ... --json`; its wall time, peak RSS, epochs and features line."""
    start = time.perf_counter()
    done, rss = run_with_largest_rss(cmd, env=env)
    wall = time.perf_counter() - start
    payload = json.loads(done.stdout)
    out = Path(payload["run_dir"])
    resolved = yaml.safe_load((out / "args.yaml").read_text())["resolved"]
    return {"wall": wall, "rss": rss, "epochs": [r["epoch_time_s"] for r in payload["epochs"]],
            "acc": payload["best_val_acc1"], "features": resolved.get("features") or ""}


def compare(name: str, base: list[str], variants: dict[str, list[str]], rounds: int,
            env: dict, work: Path) -> dict[str, list[dict]]:
    """Each variant's runs, `rounds` times, the variants' order alternating round by round.
    A variant's flags may hold "{cold}" (a new empty feature cache) or "{warm}" (the cache
    the round's cold run filled)."""
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for n in range(rounds):
        cold = warm = work / f"{name}-features-{n}"
        order = list(variants) if n % 2 == 0 else list(variants)[::-1]
        if "warm" in order:  # a warm run needs its round's cold run first
            order = [v for v in order if v != "warm"] + ["warm"]
        for variant in order:
            flags = [f.format(cold=cold, warm=warm) for f in variants[variant]]
            results[variant].append(timed([*base, *flags, "--out",
                                           str(work / f"{name}-{variant}-{n}"), "--json"], env))
    return results


def report(title: str, results: dict[str, list[dict]], goals: dict[str, float]) -> None:
    print(f"\n{title}")
    plain = statistics.median(r["wall"] for r in results["uncached"])
    for variant, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        rss = max(r["rss"] for r in runs)
        accs = ", ".join(f"{100 * r['acc']:.1f}%" for r in runs)
        walls = ", ".join(f"{r['wall']:.2f}" for r in runs)
        line = (f"  {variant:<9} median {wall:7.2f} s ({walls})  peak RSS {rss:6.0f} MiB  "
                f"val acc {accs}")
        if variant != "uncached":
            goal = goals.get(variant)
            line += f"  -> {plain / wall:.2f}x faster than uncached"
            line += f" (goal >= {goal:g}x)" if goal else ""
        print(line)
    for variant, runs in results.items():
        for run in runs:
            found = FEATURES.fullmatch(run["features"])
            if found and int(found[1]):
                later = sum(run["epochs"][1:])
                print(f"  {variant}: feature pass {float(found[2]):.2f} s ({found[1]} images), "
                      f"epochs 2..{len(run['epochs'])} together {later:.2f} s "
                      f"(goal: less than the pass)")
    cached_rss = max(r["rss"] for v, runs in results.items() if v != "uncached" for r in runs)
    plain_rss = max(r["rss"] for r in results["uncached"])
    print(f"  peak RSS of the largest process, cached / uncached: {cached_rss / plain_rss:.2f} "
          "(goal <= 1.00)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with tiny settings")
    parser.add_argument("--images", type=int, default=2000, help="headline PNGs (4/5 train)")
    parser.add_argument("--epochs", type=int, default=10, help="headline epochs")
    parser.add_argument("--img-size", type=int, default=224, help="headline input size")
    parser.add_argument("--demo-epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of each part")
    parser.add_argument("--amp", action="store_true", help="the headline runs with --amp too")
    parser.add_argument("--skip-headline", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs, args.img_size, args.demo_epochs = 200, 2, 64, 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    print(f"{os.cpu_count()} cores, {args.rounds} round(s) each; whole-process wall times")
    with tempfile.TemporaryDirectory(prefix="tb-bench-frozen-") as tmp:
        work = Path(tmp)
        # tb's own cache (the model index, the demo digits) is shared and warmed first, so
        # each part measures the feature cache, not a first-ever tb run.
        env["TB_CACHE_DIR"] = str(work / "tb-cache")
        run_with_peak_rss([str(TB), "finetune", "--model", "test_resnet", "--no-pretrained",
                           "--img-size", "16", "--epochs", "1", "--freeze",
                           "--no-feature-cache", "--out", str(work / "warm-up"), "--json"],
                          env=env, track=False)
        if not args.skip_headline:
            data = work / "fmnist"
            train = args.images * 4 // 5
            export(data, train, args.images - train)
            base = [str(TB), "finetune", "--data", str(data), "--freeze", "--img-size",
                    str(args.img_size), "--epochs", str(args.epochs), "--workers",
                    str(args.workers), *(["--amp"] if args.amp else [])]
            results = compare("headline", base, {"uncached": ["--no-feature-cache"],
                                                 "cold": ["--feature-cache", "{cold}"]},
                              args.rounds, env, work)
            report(f"(a) {args.epochs} frozen epochs at {args.img_size} px, {train} + "
                   f"{args.images - train} Fashion-MNIST PNGs, tf_efficientnet_lite0",
                   results, {"cold": 6.0})
        if not args.skip_demo:
            base = [str(TB), "finetune", "--freeze", "--amp", "--epochs",
                    str(args.demo_epochs)]
            results = compare("demo", base, {
                "uncached": ["--no-feature-cache"], "cold": ["--feature-cache", "{cold}"],
                "warm": ["--feature-cache", "{warm}", "--lr", "0.01"]}, args.rounds, env, work)
            report(f"(b) the demo: tb finetune --freeze --amp, {args.demo_epochs} epochs, "
                   f"64 px digits (warm: the cold run's cache, --lr 0.01)", results,
                   {"cold": 1.6, "warm": 2.5})


if __name__ == "__main__":
    main()

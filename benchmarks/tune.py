"""Benchmark `tb tune --freeze` against one uncached `tb finetune --freeze` run, side by side.

Goal (issue 23): 30 trials on the demo data take less than 3x one uncached run. Both figures
are whole processes (`tb` started, trained, exited) on the demo (the digits at 64 px, the
packaged pretrained tf_efficientnet_lite0, 5 epochs):

  (a) `tb finetune --freeze --no-feature-cache`: the backbone runs on every image every epoch;
  (b) `tb tune --freeze --trials 30` on an empty feature cache: the first trial computes the
      features once, the other 29 train their heads on them, in the same process.

Each round runs (a) and (b) in alternating order; the report shows the medians, the ratio, and
(b)'s first trial against the median of its other trials.

    python benchmarks/tune.py                     # the real thing
    python benchmarks/tune.py --quick             # a smoke run: 3 trials of 2 epochs
    python benchmarks/tune.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _process_tree import run_with_peak_rss

TB = Path(sys.executable).parent / "tb"
GOAL = 3.0


def timed(cmd: list[str], env: dict) -> tuple[float, dict]:
    """Wall time of one `tb ... --json` process, and its JSON."""
    start = time.perf_counter()
    done, _ = run_with_peak_rss(cmd, env=env, track=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return wall, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 trials of 2 epochs")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs = 3, 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    print(f"{os.cpu_count()} cores, {args.rounds} round(s); whole-process wall times")
    finetune_s: list[float] = []
    tune_s: list[float] = []
    first_s: list[float] = []
    later_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tb-bench-tune-") as tmp:
        work = Path(tmp)
        env["TB_CACHE_DIR"] = str(work / "tb-cache")  # the demo digits fetched once, first
        run_with_peak_rss([str(TB), "finetune", "--model", "test_resnet", "--no-pretrained",
                           "--img-size", "16", "--epochs", "1", "--freeze", "--no-feature-cache",
                           "--out", str(work / "warm-up"), "--json"], env=env, track=False)
        base = ["--freeze", "--epochs", str(args.epochs)]
        for n in range(args.rounds):
            plain = [str(TB), "finetune", *base, "--no-feature-cache",
                     "--out", str(work / f"finetune-{n}"), "--json"]
            study = [str(TB), "tune", *base, "--trials", str(args.trials), "--feature-cache",
                     str(work / f"features-{n}"), "--out", str(work / f"tune-{n}"), "--json"]
            for cmd in (plain, study) if n % 2 == 0 else (study, plain):
                wall, payload = timed(cmd, env)
                if cmd is plain:
                    finetune_s.append(wall)
                    continue
                tune_s.append(wall)
                durations = [t["duration_s"] for t in payload["trials"]]
                first_s.append(durations[0])
                later_s.extend(durations[1:])
                print(f"  round {n + 1}: best val_acc {payload['best']['value']:.4f} "
                      f"(trial {payload['best']['number']} of {len(durations)})")
    one, many = statistics.median(finetune_s), statistics.median(tune_s)
    print(f"\n(a) tb finetune --freeze --no-feature-cache, {args.epochs} epochs: median "
          f"{one:.2f} s ({', '.join(f'{s:.2f}' for s in finetune_s)})")
    print(f"(b) tb tune --freeze --trials {args.trials}, cold feature cache: median "
          f"{many:.2f} s ({', '.join(f'{s:.2f}' for s in tune_s)})")
    print(f"    first trial (computes the features) median {statistics.median(first_s):.2f} s; "
          f"the others median {statistics.median(later_s or [0.0]):.2f} s each")
    print(f"(b) / (a) = {many / one:.2f} (goal < {GOAL:g})")


if __name__ == "__main__":
    main()

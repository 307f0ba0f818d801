"""CLI latency: `tb --help`, cold and warm `tb models list --filter resnet`, vs the timm one-liner.

The warm listing reads the cached model index and imports neither torch nor timm; the goal is at
most 0.3 of `python -c "import timm; print(timm.list_models('*resnet*'))"`. Each command runs
several rounds in fresh processes; the medians and their ratios to the timm one-liner are printed.

    python benchmarks/cli_latency.py            # 7 rounds
    python benchmarks/cli_latency.py --quick    # 2 rounds, a smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TB = str(BIN / "tb")
TIMM_ONE_LINER = [sys.executable, "-c", "import timm; print(timm.list_models('*resnet*'))"]
GOAL = 0.3


def _time(cmd: list[str], env: dict[str, str], before=None) -> float:
    if before is not None:
        before()
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 rounds: a smoke test")
    args = parser.parse_args()
    rounds = 2 if args.quick else max(1, args.rounds)

    cache = Path(tempfile.mkdtemp(prefix="tb-bench-cache-"))
    env = {**os.environ, "TB_CACHE_DIR": str(cache), "NO_COLOR": "1", "COLUMNS": "120",
           "HF_HUB_OFFLINE": "1"}
    listing = [TB, "models", "list", "--filter", "resnet"]

    def clear_cache() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    cases = {
        "tb --help": ([TB, "--help"], None),
        "tb models list --filter resnet (cold)": (listing, clear_cache),
        "tb models list --filter resnet (warm)": (listing, None),
        "timm one-liner": (TIMM_ONE_LINER, None),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        _time(listing, env)  # warm the OS file cache and the index once, untimed
        for _ in range(rounds):
            # Interleaved, so a busy machine slows every case alike.
            for name, (cmd, before) in cases.items():
                times[name].append(_time(cmd, env, before))
            _time(listing, env)  # leave the index warm after the cold case
    finally:
        clear_cache()

    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["timm one-liner"]
    print(f"python {sys.version.split()[0]}, {rounds} rounds, medians (s) and ratio to timm:")
    width = max(map(len, medians))
    for name, median in medians.items():
        print(f"  {name:<{width}}  {median:7.3f} s   x{median / base:5.2f}")
    ratio = medians["tb models list --filter resnet (warm)"] / base
    verdict = "OK" if ratio <= GOAL else "ABOVE GOAL"
    print(f"warm listing / timm one-liner = {ratio:.3f} (goal <= {GOAL}): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

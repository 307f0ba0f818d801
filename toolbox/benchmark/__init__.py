"""Benchmarks behind `tb benchmark`: throughput, latency and memory of models per runtime,
precision and batch size, timed as timm's `benchmark.py` times them, and the input pipeline."""

from toolbox.benchmark._results import (
    AMP_DTYPES,
    CSV_FIELDS,
    LOADER,
    MODES,
    RUNTIMES,
    BenchmarkResult,
    BenchRow,
    write_csv,
)
from toolbox.benchmark._service import (
    DEFAULT_BATCH_SIZES,
    MIN_STEPS,
    MIN_TIME,
    WARMUP,
    run_benchmark,
)
from toolbox.benchmark._timing import Timing, time_steps

__all__ = [
    "AMP_DTYPES",
    "CSV_FIELDS",
    "DEFAULT_BATCH_SIZES",
    "LOADER",
    "MIN_STEPS",
    "MIN_TIME",
    "MODES",
    "RUNTIMES",
    "WARMUP",
    "BenchRow",
    "BenchmarkResult",
    "Timing",
    "run_benchmark",
    "time_steps",
    "write_csv",
]

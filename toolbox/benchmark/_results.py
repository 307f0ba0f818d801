"""What `tb benchmark` measured: one row per setting of the grid, and the CSV form of them."""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.fileio import atomic_path
from toolbox.jsonable import to_jsonable

MODES = ("infer", "train")
RUNTIMES = ("eager", "torchscript", "onnxruntime")
AMP_DTYPES = ("auto", "bf16", "fp16")
LOADER = "loader"  # the runtime (and mode "data") of an input-pipeline row


@dataclass
class BenchRow:
    """One setting of the grid and its figures; `reason` says why a setting did not run
    (its figures are then None)."""

    model: str
    source: str  # timm, torchvision, code, file, onnx, torchscript, or data (a --data row)
    mode: str  # infer, train, or data
    runtime: str  # eager, torchscript, onnxruntime, or loader
    batch_size: int
    img_size: int
    device: str
    precision: str  # float32, amp bfloat16, amp float16
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None  # intra-op threads of torch and of onnxruntime (model rows)
    workers: int | None = None  # loader processes (--data rows only)
    img_per_s: float | None = None  # images over the timed steps / their wall time (timm's)
    # batch / median step: what a busy machine's outliers leave alone (JSON and CSV only)
    img_per_s_median: float | None = None
    step_ms: float | None = None  # median time of one step
    step_ms_q1: float | None = None  # the interquartile range of the step time
    step_ms_q3: float | None = None
    step_ms_min: float | None = None
    step_ms_max: float | None = None
    latency_ms: float | None = None  # per image at batch 1 (the median step), batch-1 rows only
    steps: int = 0  # timed steps (after the warm-up ones)
    peak_mem_mb: float | None = None  # CUDA: max allocated; CPU: peak RSS growth of the process
    params: int | None = None
    gmacs: float | None = None  # multiply-accumulates of one image's forward pass, in billions
    parity: float | None = None  # top-1 agreement of an on-the-fly export with the model
    reason: str | None = None  # why this setting did not run


@dataclass
class BenchmarkResult:
    """Every row (fastest first, then the settings that could not run) and how they were
    measured."""

    rows: list[BenchRow]
    warmup: int
    min_steps: int
    min_time: float
    machine: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


CSV_FIELDS = tuple(f.name for f in dataclasses.fields(BenchRow))


def write_csv(rows: list[BenchRow], dest: str | Path) -> Path:
    """The rows as CSV, one per setting, with a header of the JSON keys; written atomically."""
    dest = Path(dest)
    with atomic_path(dest) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in to_jsonable(row).items()})
    return dest


def sort_rows(rows: list[BenchRow]) -> list[BenchRow]:
    """Fastest first; the settings that did not run keep their grid order at the end."""
    ran = sorted((r for r in rows if r.img_per_s is not None), key=lambda r: -r.img_per_s)
    return ran + [r for r in rows if r.img_per_s is None]

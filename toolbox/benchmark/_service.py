"""`tb benchmark`'s service: every model through every runtime, mode and batch size, timed the
way timm's `benchmark.py` times them, each setting a row (with a reason when it cannot run)."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from toolbox.benchmark._models import Target, expand_models
from toolbox.benchmark._prepare import Prepared, failure, prepare, scratch_folder
from toolbox.benchmark._results import (
    AMP_DTYPES,
    LOADER,
    MODES,
    RUNTIMES,
    BenchmarkResult,
    BenchRow,
    sort_rows,
)
from toolbox.benchmark._steps import Runner, StepPlan, measure
from toolbox.benchmark._timing import Timing
from toolbox.errors import ToolboxError, UsageError, unknown_name
from toolbox.progress import NullProgress, Progress

if TYPE_CHECKING:
    import torch

    from toolbox.train.engine import Amp

DEFAULT_BATCH_SIZES = (1, 32)
WARMUP, MIN_STEPS, MIN_TIME = 5, 10, 2.0


def _check(values: Sequence[str], allowed: Sequence[str], kind: str, param: str) -> None:
    for value in values:
        if value not in allowed:
            raise unknown_name(kind, value, allowed, f"choose from {', '.join(allowed)}",
                               param=param)


def _validate(*, models: Sequence[str], data: str | Path | None, modes: Sequence[str],
              runtimes: Sequence[str], batch_sizes: Sequence[int], img_size: int | None,
              amp_dtype: str, threads: int | None, workers: int | None, warmup: int,
              min_steps: int, min_time: float) -> None:
    if not models and data is None:
        raise UsageError("nothing to benchmark", "name a MODEL, or give --data DIR",
                         param="MODEL")
    _check(modes, MODES, "mode", "--mode")
    _check(runtimes, RUNTIMES, "runtime", "--runtime")
    _check([amp_dtype], AMP_DTYPES, "AMP dtype", "--amp-dtype")
    for value, name, least in ((min(batch_sizes, default=1), "--batch-size", 1),
                               (img_size or 8, "--img-size", 8), (threads or 1, "--threads", 1),
                               (workers or 0, "--workers", 0), (warmup, "--warmup", 0),
                               (min_steps, "--min-steps", 1)):
        if value < least:
            raise UsageError(f"{name} must be at least {least}, got {value}", param=name)
    if data is not None and not Path(data).is_dir():
        raise ToolboxError(f"no such data folder: {data}",
                           "pass an ImageFolder tree: DIR/<class>/<image>")
    if min_time < 0:
        raise UsageError(f"--min-time must not be negative, got {min_time}", param="--min-time")


def _precision(amp: bool, amp_obj: Amp | None) -> str:
    if not amp or amp_obj is None or not amp_obj.enabled:
        return "float32"
    import torch

    return "amp " + {torch.float16: "float16", torch.bfloat16: "bfloat16"}[amp_obj.dtype]


def _amp(device: torch.device, amp: bool, amp_dtype: str) -> tuple[Amp, str | None]:
    """The autocast `tb finetune` would use, or why the asked-for precision cannot run here."""
    from toolbox.devices import autocast_off_reason
    from toolbox.train.engine import Amp, amp_setup

    if not amp:
        return Amp(False, device.type), None
    if amp_dtype == "fp16" and device.type != "cuda":
        return Amp(False, device.type), (f"float16 autocast needs CUDA ({device.type} runs "
                                         "bfloat16: --amp-dtype bf16)")
    off = autocast_off_reason(device.type, amp_dtype)
    if off is not None:
        return Amp(False, device.type), f"{off} (--amp-dtype bf16 forces it)"
    return amp_setup(device, True, amp_dtype), None


def _not_applicable(runtime: str, mode: str, *, amp: bool, channels_last: bool,
                    compile: bool) -> str | None:
    """Why a runtime cannot take a setting (the row says so instead of running)."""
    if runtime == "onnxruntime":
        if mode == "train":
            return "onnxruntime runs inference only"
        if amp:
            return "an ONNX file runs in the precision it was exported in (float32)"
        if channels_last:
            return "onnxruntime picks its own memory layout (--channels-last is for torch)"
    if runtime == "torchscript" and mode == "train":
        return "TorchScript is traced in eval mode: train with eager"
    if compile and runtime != "eager":
        return "--compile applies to the eager runtime"
    return None


@contextlib.contextmanager
def _torch_settings(threads: int | None) -> Iterator[None]:
    """`threads` intra-op threads, and cuDNN's autotuner on (as timm's benchmark.py sets it:
    the warm-up steps pick each convolution's fastest algorithm); both restored after."""
    import torch

    before, tuner = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if threads:
        torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.backends.cudnn.benchmark = tuner


def _fill(row: BenchRow, timing: Timing) -> None:
    row.img_per_s = timing.img_per_s
    (row.step_ms, row.step_ms_q1, row.step_ms_q3, row.step_ms_min,
     row.step_ms_max) = timing.quantiles_ms()
    row.steps = len(timing.steps)
    row.img_per_s_median = timing.images / len(timing.steps) / (row.step_ms / 1000)
    if row.batch_size == 1:
        row.latency_ms = row.step_ms


def _onnx_device(runner: Runner) -> str:
    """Where onnxruntime runs: its first execution provider (CPU, CUDA)."""
    if runner.onnx is None:
        return "-"
    return runner.onnx.provider.removesuffix("ExecutionProvider").lower()


def _cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def _machine(device: torch.device) -> dict[str, str]:
    import torch

    from toolbox.devices import usable_cores

    info = {"cpu": _cpu_name(), "cores": str(usable_cores()),
            "torch_threads": str(torch.get_num_threads()), "torch": torch.__version__,
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _release(device: torch.device) -> None:
    """After a failed setting (out of memory, say), hand CUDA's cached blocks back, as timm's
    benchmark does before it retries, so the next setting starts from a clean allocator."""
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()


def _model_rows(prepared: Prepared, *, modes: Sequence[str], runtimes: Sequence[str],
                batch_sizes: Sequence[int], device: torch.device, amp: bool, amp_dtype: str,
                channels_last: bool, compile: bool, threads: int | None, warmup: int,
                min_steps: int, min_time: float, progress: Progress) -> list[BenchRow]:
    amp_obj, amp_reason = _amp(device, amp, amp_dtype)
    rows = []
    for runtime in runtimes:
        runner = prepared.runners[runtime]
        for mode in modes:
            for batch_size in batch_sizes:
                on_torch = runtime != "onnxruntime"
                row = BenchRow(
                    model=prepared.target.name, source=prepared.source, mode=mode,
                    runtime=runtime, batch_size=batch_size, img_size=prepared.img_size,
                    device=str(device) if on_torch else _onnx_device(runner),
                    precision="float32" if not on_torch else _precision(amp, amp_obj),
                    channels_last=channels_last, compile=compile, threads=threads,
                    params=prepared.params, gmacs=prepared.gmacs, parity=runner.parity)
                row.reason = runner.reason or _not_applicable(
                    runtime, mode, amp=amp, channels_last=channels_last, compile=compile) or (
                    amp_reason if on_torch else None)
                if row.reason is None:
                    plan = StepPlan(mode, batch_size, prepared.img_size, channels_last,
                                    compile, warmup, min_steps, min_time)
                    try:
                        measured = measure(runner, plan, device=device, amp=amp_obj)
                    except Exception as exc:  # out of memory, a compiler that fails, ...
                        row.reason = failure(exc)
                        _release(device)
                    else:
                        _fill(row, measured.timing)
                        row.peak_mem_mb = measured.peak_mem_mb
                rows.append(row)
                progress.advance()
    return rows


def _loader_rows(data: str | Path, *, batch_sizes: Sequence[int], img_size: int | None,
                 workers: int | None, warmup: int, min_steps: int, min_time: float,
                 progress: Progress) -> list[BenchRow]:
    from toolbox.benchmark._loader import time_loader
    from toolbox.devices import default_workers

    workers = default_workers() if workers is None else workers
    size = img_size or 224
    rows = []
    for batch_size in batch_sizes:
        row = BenchRow(model=str(data), source="data", mode="data", runtime=LOADER,
                       batch_size=batch_size, img_size=size, device="cpu", precision="uint8",
                       workers=workers)
        timing = time_loader(data, batch_size=batch_size, img_size=size, workers=workers,
                             warmup=warmup, min_steps=min_steps, min_time=min_time)
        _fill(row, timing)
        row.latency_ms = None  # a loader's batch-1 step is not a model's latency
        rows.append(row)
        progress.advance()
    return rows


def run_benchmark(models: Sequence[str] = (), *, modes: Sequence[str] = ("infer",),
                  runtimes: Sequence[str] = ("eager",),
                  batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, img_size: int | None = None,
                  amp: bool = False, amp_dtype: str = "auto", channels_last: bool = False,
                  compile: bool = False, threads: int | None = None, device: str = "auto",
                  data: str | Path | None = None, workers: int | None = None,
                  warmup: int = WARMUP, min_steps: int = MIN_STEPS, min_time: float = MIN_TIME,
                  progress: Progress | None = None) -> BenchmarkResult:
    """Time every model of `models` in every runtime, mode and batch size (and the `data`
    loader at each batch size), fastest first.

    A setting that cannot run here (float16 on the CPU, onnxruntime training, an export or a
    compile that fails, out of memory) is a row with its `reason`, not an error.

    Raises:
        UsageError: an unknown model, mode or runtime, or a value out of range.
        ToolboxError: a model file or run folder that cannot be read.
    """
    from toolbox.devices import resolve_device

    progress = progress or NullProgress()
    modes, runtimes = tuple(dict.fromkeys(modes)), tuple(dict.fromkeys(runtimes))
    batch_sizes = tuple(dict.fromkeys(batch_sizes)) or DEFAULT_BATCH_SIZES
    _validate(models=models, data=data, modes=modes, runtimes=runtimes,
              batch_sizes=batch_sizes, img_size=img_size, amp_dtype=amp_dtype, threads=threads,
              workers=workers, warmup=warmup, min_steps=min_steps, min_time=min_time)
    targets: list[Target] = expand_models(list(models))
    torch_device = resolve_device(device)
    total = len(targets) * len(runtimes) * len(modes) * len(batch_sizes)
    total += len(batch_sizes) if data is not None else 0
    rows: list[BenchRow] = []
    notes: list[str] = []
    progress.start("benchmarking", total=total, unit="settings")
    try:
        with _torch_settings(threads), scratch_folder() as folder:
            import torch

            # onnxruntime defaults to one thread per physical core, torch to its own count:
            # the runtimes compare fairly only on the same number of threads.
            threads = threads or torch.get_num_threads()
            for target in targets:
                prepared = prepare(target, runtimes, img_size=img_size, device=device,
                                   threads=threads, folder=Path(folder), progress=progress)
                notes += prepared.notes
                rows += _model_rows(prepared, modes=modes, runtimes=runtimes,
                                    batch_sizes=batch_sizes, device=torch_device, amp=amp,
                                    amp_dtype=amp_dtype, channels_last=channels_last,
                                    compile=compile, threads=threads, warmup=warmup,
                                    min_steps=min_steps, min_time=min_time, progress=progress)
                del prepared  # one model in memory at a time
            if data is not None:
                rows += _loader_rows(data, batch_sizes=batch_sizes, img_size=img_size,
                                     workers=workers, warmup=warmup, min_steps=min_steps,
                                     min_time=min_time, progress=progress)
            machine = _machine(torch_device)
    finally:
        progress.finish()
    return BenchmarkResult(sort_rows(rows), warmup=warmup, min_steps=min_steps,
                           min_time=min_time, machine=machine, notes=notes)

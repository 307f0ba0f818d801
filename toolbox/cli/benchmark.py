"""Command `benchmark`: how fast models run here, per runtime, precision and batch size."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolbox.benchmark import AMP_DTYPES, MIN_STEPS, MIN_TIME, RUNTIMES, WARMUP
from toolbox.cli import render
from toolbox.cli.errors import handle_errors
from toolbox.cli.options import AmpOpt, DeviceOpt, JsonOpt, WorkersOpt

if TYPE_CHECKING:
    from toolbox.benchmark import BenchmarkResult, BenchRow

Runtime = StrEnum("Runtime", {name: name for name in RUNTIMES})
AmpDtype = StrEnum("AmpDtype", {name: name for name in AMP_DTYPES})


class Mode(StrEnum):
    """What a step does: a forward pass, a training step, or both kinds of row."""

    infer = "infer"
    train = "train"
    both = "both"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _step(row: BenchRow) -> str:
    if row.step_ms is None:
        return "-"
    return f"{row.step_ms:.2f} ({row.step_ms_q1:.2f}-{row.step_ms_q3:.2f})"


def _options(row: BenchRow) -> str:
    flags = [name for name, on in (("channels-last", row.channels_last),
                                   ("compile", row.compile)) if on]
    if row.workers is not None:
        flags.append(f"{row.workers} workers")
    return ", ".join(flags) or "-"


def _show(result: BenchmarkResult) -> None:
    m = result.machine
    title = (f"Benchmark on {m.get('gpu') or m.get('device')} ({m.get('cores')} cores, "
             f"{m.get('torch_threads')} torch threads, torch {m.get('torch')}), "
             f"fastest first: {result.warmup} warm-up steps, then at least "
             f"{result.min_steps} steps and {result.min_time:g} s per setting")
    columns = ["model", "runtime", "mode", "batch", "img", "precision", "options", "img/s",
               "step ms (IQR)", "latency ms", "peak MB", "params", "GMACs", "note"]
    rows = [(r.model, r.runtime, r.mode, r.batch_size, r.img_size, r.precision, _options(r),
             _num(r.img_per_s), _step(r), _num(r.latency_ms, 2), _num(r.peak_mem_mb),
             render.human_count(r.params), _num(r.gmacs, 3), r.reason or "")
            for r in result.rows]
    right = ["batch", "img", "img/s", "step ms (IQR)", "latency ms", "peak MB", "params",
             "GMACs"]
    render.show(render.table(title, columns, rows, right=right, wrap=["note"]))


@handle_errors
def benchmark(
    model: Annotated[list[str] | None, typer.Argument(
        metavar="MODEL", show_default=False,
        help="timm/torchvision names or wildcards ('resnet*'), user code (file.py:Class), "
             "run folders, model files, or exports (.onnx, .torchscript or TorchScript .pt)."
    )] = None,
    mode: Annotated[Mode, typer.Option(
        "--mode", case_sensitive=False,
        help="infer: forward passes; train: forward, backward and optimizer step; both.")
    ] = Mode.infer,
    batch_sizes: Annotated[list[int] | None, typer.Option(
        "--batch-size", "-b", min=1, metavar="N",
        help="Batch size; repeat it for a sweep. Batch 1 gives the latency column.",
        show_default="1 and 32")] = None,
    img_size: Annotated[int | None, typer.Option(
        "--img-size", min=8, metavar="PX", show_default="the model's own, else 224",
        help="Input height and width.")] = None,
    amp: AmpOpt = False,
    amp_dtype: Annotated[AmpDtype, typer.Option(
        "--amp-dtype", case_sensitive=False,
        help="With --amp: auto (float16 on CUDA, bfloat16 elsewhere), bf16 or fp16 "
             "(CUDA only).")] = AmpDtype("auto"),
    channels_last: Annotated[bool, typer.Option(
        "--channels-last", help="NHWC memory layout for model and input (torch runtimes).")
    ] = False,
    compile_: Annotated[bool, typer.Option(
        "--compile", help="torch.compile the model (eager runtime); compiling happens in "
                          "the warm-up steps.")] = False,
    runtimes: Annotated[list[Runtime] | None, typer.Option(
        "--runtime", "-r", case_sensitive=False, show_default="eager",
        help="eager (PyTorch), torchscript or onnxruntime (exported on the fly and checked "
             "against the model); repeat it to compare.")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, metavar="N", show_default="torch's own",
        help="Intra-op threads of torch, and as many for onnxruntime.")] = None,
    device: DeviceOpt = "auto",
    data: Annotated[Path | None, typer.Option(
        "--data", metavar="DIR", show_default=False,
        help="Also time the input pipeline alone on this image folder: decode and resize "
             "in the loader `tb finetune` uses, at --workers processes.")] = None,
    workers: WorkersOpt = None,
    warmup: Annotated[int, typer.Option(
        "--warmup", min=0, metavar="N", help="Untimed steps before the timed ones.")] = WARMUP,
    min_steps: Annotated[int, typer.Option(
        "--min-steps", min=1, metavar="N", help="Time at least this many steps ...")
    ] = MIN_STEPS,
    min_time: Annotated[float, typer.Option(
        "--min-time", min=0.0, metavar="SECONDS", help="... and at least this long.")
    ] = MIN_TIME,
    csv_file: Annotated[Path | None, typer.Option(
        "--csv", metavar="FILE", show_default=False,
        help="Also write the rows to this CSV file (the JSON keys as header).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Measure throughput, latency and peak memory of models on this machine.

    Each setting (model x runtime x mode x batch size) runs warm-up steps, then timed
    steps until both --min-steps and --min-time are reached, as timm's benchmark.py
    does; the table shows images/s, the median step time with its interquartile range,
    peak memory (CUDA max allocated; on the CPU the growth of the process's peak RSS),
    params and GMACs. A setting that cannot run here (fp16 on the CPU, onnxruntime
    training, a failing compile) is a row with the reason.

    Examples:
      tb benchmark resnet18 -b 1 -b 32
      tb benchmark 'resnet1*' --img-size 160 --mode both
      tb benchmark resnet18 -r eager -r torchscript -r onnxruntime --threads 2
      tb benchmark runs/my-run --amp --channels-last --csv bench.csv
      tb benchmark --data photos/ --workers 4 -b 64
    """
    from toolbox.benchmark import MODES, run_benchmark, write_csv
    from toolbox.cli.progress import make_progress

    result = run_benchmark(
        model or [], modes=MODES if mode is Mode.both else (mode.value,),
        runtimes=[r.value for r in runtimes or [Runtime("eager")]],
        batch_sizes=batch_sizes or (), img_size=img_size, amp=amp, amp_dtype=amp_dtype.value,
        channels_last=channels_last, compile=compile_, threads=threads, device=device,
        data=data, workers=workers, warmup=warmup, min_steps=min_steps, min_time=min_time,
        progress=make_progress(not json_output))
    if csv_file is not None:
        write_csv(result.rows, csv_file)
    if json_output:
        render.print_json(result)
        return
    _show(result)
    if csv_file is not None:
        render.note(f"wrote {len(result.rows)} rows to {csv_file}")


def register(root: typer.Typer) -> None:
    """Mount the `benchmark` command on the root app."""
    root.command("benchmark")(benchmark)

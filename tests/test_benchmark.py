"""`tb benchmark`: every mode and runtime on tiny models, figures read back from the service,
the table, the JSON and the CSV; impossible settings as rows with reasons; the loader rows."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
from PIL import Image

from toolbox.benchmark import CSV_FIELDS, run_benchmark, time_steps
from toolbox.benchmark._memory import PeakMemory
from toolbox.benchmark._models import MODULE, ONNX, TORCHSCRIPT, expand_models, is_torchscript

TINY_NET = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """Conv, batch norm, pooling and a head: every kind of layer a step goes through."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
'''
QUICK = dict(warmup=1, min_steps=2, min_time=0.0, img_size=32)
QUICK_ARGS = ["--warmup", "1", "--min-steps", "2", "--min-time", "0", "--img-size", "32"]
FIGURES = ("img_per_s", "img_per_s_median", "step_ms", "step_ms_q1", "step_ms_q3",
           "step_ms_min", "step_ms_max")


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny_net.py"
    path.write_text(TINY_NET)
    return f"{path}:TinyNet"


def _grid(rows):
    return {(r["runtime"] if isinstance(r, dict) else r.runtime,
             r["mode"] if isinstance(r, dict) else r.mode,
             r["batch_size"] if isinstance(r, dict) else r.batch_size) for r in rows}


def _ran(row) -> None:
    assert row.reason is None, row.reason
    for name in FIGURES:
        assert getattr(row, name) > 0, (name, row)
    assert row.step_ms_min <= row.step_ms_q1 <= row.step_ms <= row.step_ms_q3 <= row.step_ms_max
    assert row.steps >= 2
    # images/s from the wall time of the timed loop, as timm computes it: no faster than
    # the fastest step allows.
    assert row.img_per_s <= row.batch_size / (row.step_ms_min / 1000) * 1.001
    assert row.img_per_s_median == pytest.approx(row.batch_size / (row.step_ms / 1000))


def test_every_mode_and_runtime_on_a_tiny_model(tiny):
    result = run_benchmark([tiny], modes=["infer", "train"],
                           runtimes=["eager", "torchscript", "onnxruntime"], batch_sizes=[1, 4],
                           threads=1, **QUICK)
    rows = {(r.runtime, r.mode, r.batch_size): r for r in result.rows}
    assert set(rows) == {(rt, m, b) for rt in ("eager", "torchscript", "onnxruntime")
                         for m in ("infer", "train") for b in (1, 4)}
    for key in [("eager", "infer", 1), ("eager", "infer", 4), ("eager", "train", 4),
                ("eager", "train", 1), ("torchscript", "infer", 1), ("torchscript", "infer", 4),
                ("onnxruntime", "infer", 1), ("onnxruntime", "infer", 4)]:
        row = rows[key]
        _ran(row)
        assert row.params == 8 * 3 * 9 + 8 + 2 * 8 + 8 * 5 + 5  # conv, BN, head
        assert row.gmacs > 0 and row.threads == 1 and row.precision == "float32"
        assert row.peak_mem_mb is not None and row.peak_mem_mb >= 0
        assert (row.latency_ms == row.step_ms) if row.batch_size == 1 else row.latency_ms is None
    for runtime in ("torchscript", "onnxruntime"):  # exported on the fly, checked
        assert rows[(runtime, "infer", 4)].parity == 1.0
    assert "inference only" in rows[("onnxruntime", "train", 4)].reason
    assert "traced in eval mode" in rows[("torchscript", "train", 1)].reason
    assert rows[("onnxruntime", "train", 1)].img_per_s is None
    speeds = [r.img_per_s for r in result.rows if r.img_per_s is not None]
    assert speeds == sorted(speeds, reverse=True) and len(speeds) == 8
    assert result.rows[-1].reason is not None  # the rows that did not run come last
    # A training step does more than a forward pass (the fastest steps: a busy machine's
    # hiccups land on single steps).
    assert rows[("eager", "train", 4)].step_ms_min > rows[("eager", "infer", 4)].step_ms_min


def test_impossible_settings_are_rows_with_reasons(tiny, monkeypatch):
    result = run_benchmark([tiny], runtimes=["eager", "onnxruntime"], batch_sizes=[2],
                           device="cpu", amp=True, amp_dtype="fp16", **QUICK)
    reasons = {r.runtime: r.reason for r in result.rows}
    assert "float16 autocast needs CUDA" in reasons["eager"]
    assert "precision it was exported in" in reasons["onnxruntime"]
    assert all(r.img_per_s is None and r.steps == 0 for r in result.rows)

    import torch

    def broken_compile(model, **kwargs):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(torch, "compile", broken_compile)
    result = run_benchmark([tiny], runtimes=["eager", "torchscript"], batch_sizes=[2],
                           compile=True, **QUICK)
    reasons = {r.runtime: r.reason for r in result.rows}
    assert reasons["eager"] == "RuntimeError: no C++ compiler"
    assert reasons["torchscript"] == "--compile applies to the eager runtime"


def test_channels_last_runs_in_the_torch_runtimes(tiny):
    result = run_benchmark([tiny], runtimes=["eager", "torchscript", "onnxruntime"],
                           batch_sizes=[2], channels_last=True, **QUICK)
    rows = {r.runtime: r for r in result.rows}
    _ran(rows["eager"])
    _ran(rows["torchscript"])
    assert rows["eager"].channels_last and rows["torchscript"].channels_last
    assert "own memory layout" in rows["onnxruntime"].reason
    assert result.machine["cpu"] and int(result.machine["cores"]) >= 1


def test_bf16_autocast_runs_on_the_cpu_when_asked(tiny):
    result = run_benchmark([tiny], batch_sizes=[2], amp=True, amp_dtype="bf16", **QUICK)
    (row,) = result.rows
    _ran(row)
    assert row.precision == "amp bfloat16"


def test_cli_table_json_and_csv_hold_every_setting(invoke, tiny, tmp_path):
    args = ["benchmark", tiny, "-b", "1", "-b", "3", "-r", "eager", "-r", "onnxruntime",
            "--mode", "both", "--threads", "1", *QUICK_ARGS]
    out = tmp_path / "bench.csv"
    result = invoke(*args, "--json", "--csv", out)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    grid = {(rt, m, b) for rt in ("eager", "onnxruntime") for m in ("infer", "train")
            for b in (1, 3)}
    assert _grid(data["rows"]) == grid and len(data["rows"]) == 8
    assert data["warmup"] == 1 and data["min_steps"] == 2 and data["machine"]["cores"]
    with out.open(newline="") as handle:
        parsed = list(csv.DictReader(handle))
    assert tuple(parsed[0]) == CSV_FIELDS
    assert len(parsed) == 8
    for back, row in zip(parsed, data["rows"], strict=True):
        assert back["runtime"] == row["runtime"] and int(back["batch_size"]) == row["batch_size"]
        if row["img_per_s"] is None:
            assert back["img_per_s"] == "" and back["reason"] == row["reason"]
        else:
            assert float(back["img_per_s"]) == pytest.approx(row["img_per_s"])
            assert int(back["steps"]) == row["steps"] >= 2
    table = invoke(*args)
    assert table.exit_code == 0, table.output
    lines = [line for line in table.stdout.splitlines()
             if line.strip("│┃ ").startswith("TinyNet")]
    assert len(lines) == 8
    assert sum("onnxruntime runs" in line for line in lines) == 2
    assert sum(" train " in line for line in lines) == 4


def test_unknown_names_suggest_close_ones(invoke):
    result = invoke("benchmark", "resnt18")
    assert result.exit_code == 2
    assert "unknown model 'resnt18'" in result.stderr
    assert "resnet18" in result.stderr.split("did you mean", 1)[1]
    result = invoke("benchmark", "resnetzz*")
    assert result.exit_code == 2 and "no model matches 'resnetzz*'" in result.stderr
    result = invoke("benchmark")
    assert result.exit_code == 2 and "nothing to benchmark" in result.stderr
    result = invoke("benchmark", "no/such/model.onnx")
    assert result.exit_code == 1 and "no such model file" in result.stderr
    result = invoke("benchmark", "resnet18", "--data", "no/such/folder")
    assert result.exit_code == 1 and "no such data folder" in result.stderr


def test_wildcards_expand_like_models_list():
    targets = expand_models(["resnet1*t", "resnet10t"])
    names = [t.name for t in targets]
    assert "resnet10t" in names and "resnet14t" in names and len(names) == len(set(names))
    assert all(n.startswith("resnet1") and n.endswith("t") for n in names)


def test_exports_and_run_folders_run_as_they_are(tiny, tmp_path):
    from toolbox.export import export_module
    from toolbox.models import ModelMeta, load_for_summary, save_safetensors

    model = load_for_summary(tiny).model
    onnx_file = export_module(model, "onnx", tmp_path / "tiny.onnx", img_size=32).file
    ts_file = export_module(model, "torchscript", tmp_path / "tiny.pt", img_size=32).file
    assert is_torchscript(ts_file) and not is_torchscript(onnx_file)
    run = tmp_path / "run"
    run.mkdir()
    import timm

    save_safetensors(timm.create_model("resnet10t", num_classes=3), run / "model.safetensors",
                     ModelMeta(model="resnet10t", num_classes=3, input_size=(3, 32, 32)))
    torch_pt = tmp_path / "weights.pt"
    import torch

    torch.save({"w": torch.zeros(1)}, torch_pt)
    assert not is_torchscript(torch_pt)
    kinds = {t.name: t.kind for t in expand_models([str(onnx_file), str(ts_file), str(run)])}
    assert kinds == {"tiny.onnx": ONNX, "tiny.pt": TORCHSCRIPT, "run": MODULE}
    result = run_benchmark([str(onnx_file), str(ts_file), str(run)],
                           runtimes=["eager", "torchscript", "onnxruntime"], batch_sizes=[2],
                           warmup=1, min_steps=2, min_time=0.0)
    rows = {(r.model, r.runtime): r for r in result.rows}
    _ran(rows[("tiny.onnx", "onnxruntime")])
    _ran(rows[("tiny.pt", "torchscript")])
    # The input size is read off the files; ONNX counts its initialisers (batch norm folded
    # into the convolution: 16 fewer).
    onnx_row, ts_row = rows[("tiny.onnx", "onnxruntime")], rows[("tiny.pt", "torchscript")]
    assert onnx_row.img_size == ts_row.img_size == 32
    assert 0 < onnx_row.params < ts_row.params
    assert "runs in onnxruntime only" in rows[("tiny.onnx", "eager")].reason
    assert "runs in torchscript only" in rows[("tiny.pt", "onnxruntime")].reason
    for runtime in ("eager", "torchscript", "onnxruntime"):
        _ran(rows[("run", runtime)])
        assert rows[("run", runtime)].img_size == 32 and rows[("run", runtime)].source == "file"


def _image_folder(root, count=6):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_data_rows_time_the_finetune_loader(tmp_path, workers):
    data = _image_folder(tmp_path / "photos")
    result = run_benchmark(data=data, batch_sizes=[4], workers=workers, warmup=1,
                           min_steps=4, min_time=0.0, img_size=32)
    (row,) = result.rows
    assert (row.mode, row.runtime, row.source, row.workers) == ("data", "loader", "data",
                                                                workers)
    _ran(row)
    assert row.steps >= 4 and row.latency_ms is None


def test_cli_data_rows_beside_model_rows(invoke, tiny, tmp_path):
    data = _image_folder(tmp_path / "photos")
    result = invoke("benchmark", tiny, "--data", data, "--workers", "0", "-b", "4",
                    *QUICK_ARGS, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert {r["runtime"] for r in rows} == {"eager", "loader"}
    assert all(r["img_per_s"] > 0 for r in rows)


def test_peak_memory_is_this_settings_own():
    """The RSS peak is reset per setting: a big allocation shows, and a later small setting
    is not charged with it (getrusage's ru_maxrss would be)."""
    import torch

    probe = PeakMemory(torch.device("cpu"))
    probe.start()
    big = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
    del big
    assert probe.peak_mb() >= 60
    probe.start()
    small = torch.ones(2**20 // 4)
    del small
    assert probe.peak_mb() < 20


def test_the_timing_loop_reaches_both_minimums():
    calls = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.002)
        return 3

    timing = time_steps(step, warmup=2, min_steps=3, min_time=0.05, sync=lambda: None)
    assert len(calls) == 2 + len(timing.steps)
    assert len(timing.steps) >= 3 and timing.elapsed >= 0.05
    assert timing.images == 3 * len(timing.steps)
    timing = time_steps(step, warmup=0, min_steps=5, min_time=0.0, sync=lambda: None)
    assert len(timing.steps) == 5
    median, q1, q3, low, high = timing.quantiles_ms()
    assert 2 <= low <= q1 <= median <= q3 <= high


@pytest.mark.slow
def test_compile_runs_in_the_warm_up(tiny):
    result = run_benchmark([tiny], batch_sizes=[2], compile=True, **QUICK)
    (row,) = result.rows
    _ran(row)
    assert row.compile


@pytest.mark.slow
def test_overhead_benchmark_prints_the_three_loops_and_ratios():
    import os
    import re
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_overhead.py"), "--quick"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    figures = dict(re.findall(r"^  (.+?)\s{2,}(\d+\.\d+)$", done.stdout, re.MULTILINE))
    assert set(figures) == {"hand loop", "timm benchmark.py loop", "tb benchmark",
                            "tb / hand loop", "tb / timm loop"}, done.stdout
    assert all(float(v) > 0 for v in figures.values())
    ratio = float(figures["tb benchmark"]) / float(figures["hand loop"])
    assert float(figures["tb / hand loop"]) == pytest.approx(ratio, rel=0.01)

"""Tables at 80 columns (a default terminal, or a pipe): a name, number or shape is never split
across lines; only free-text columns (URLs, descriptions) fold."""

from __future__ import annotations

import pytest
from augment_helpers import make_class_folder
from inference_helpers import shared_run, write_folder

from toolbox.cli import render


@pytest.fixture
def tables(monkeypatch):
    """Every table the commands build, as (columns, rows, free-text columns), rendered at 80."""
    built = []
    real_table, real_key_values = render.table, render.key_values

    def table(title, columns, rows, caption=None, right=(), wrap=()):
        rows = [["" if v is None else str(v) for v in row] for row in rows]
        built.append((list(columns), rows, set(wrap)))
        return real_table(title, columns, rows, caption, right, wrap)

    def key_values(title, pairs):
        pairs = list(pairs)
        built.append((["field"], [[key] for key, _ in pairs], set()))
        return real_key_values(title, pairs)

    monkeypatch.setattr(render, "table", table)
    monkeypatch.setattr(render, "key_values", key_values)
    monkeypatch.setattr(render.stdout, "width", 80)
    monkeypatch.setattr(render.stderr, "width", 80)
    return built


def _split_cells(built, output: str) -> list[str]:
    lines = output.splitlines()
    split = []
    for columns, rows, wrap in built:
        for row in rows:
            for column, cell in zip(columns, row, strict=False):
                if column in wrap or "[" in cell:  # free text, or rich markup
                    continue
                split += [part for part in cell.splitlines()
                          if part and not any(part in line for line in lines)]
    return split


def test_a_wide_table_keeps_its_cells_whole(tables, capsys):
    render.show(render.table("t", ["name", "shape", "note"],
                             [("a_rather_long_layer_name_" * 2, "1x2048x5x5" * 3, "free " * 30)],
                             wrap=["note"]))
    out = capsys.readouterr().out
    assert _split_cells(tables, out) == []
    assert "free free" in out  # the free text folds instead


@pytest.mark.slow
def test_every_command_table_at_80_columns(tables, invoke, tmp_path, tmp_path_factory):
    run = shared_run(tmp_path_factory.mktemp("trained"))
    data = write_folder(tmp_path / "data", 3, seed=5)
    make_class_folder(tmp_path / "photos")
    commands = [
        ("datasets", "list", "--root", tmp_path),
        ("summary", "tv:resnet50", "--input-size", "1,3,160,160", "--depth", "2",
         "--columns", "input_size,output_size,num_params"),
        ("models", "list", "--filter", "resnet5*", "--pretrained", "--limit", "6"),
        ("models", "info", "resnet50.a1_in1k"),
        ("augment", "--list"),
        ("augment", tmp_path / "photos", tmp_path / "aug", "--workers", "1"),
        ("log-images", data, "--logdir", tmp_path / "logs", "--mode", "each"),
        ("predict", data, "--run", run, "--topk", "3"),
        ("evaluate", "--run", run, "--data", data, "--out", tmp_path / "eval"),
        ("finetune", "--data", data, "--model", "test_resnet", "--no-pretrained", "--epochs",
         "1", "--img-size", "16", "--batch-size", "4", "--workers", "0", "--out",
         tmp_path / "run"),
    ]
    for args in commands:
        tables.clear()
        result = invoke(*args)
        assert result.exit_code == 0, (args[:2], result.output)
        assert tables, f"`tb {' '.join(map(str, args[:2]))}` printed no table"
        assert _split_cells(tables, result.stdout + result.stderr) == [], args[:2]

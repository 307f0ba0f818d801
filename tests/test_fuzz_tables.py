"""Property-based tests of the data-format parsers: CSV tables with any cells and column names
(read back exactly, or one clean error line), shard patterns of any text (the shards they name,
or one clean error line), and shard sizes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fuzz_helpers import budget, outcome
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolbox.csv_source import read_csv_labels
from toolbox.datasets import expand_pattern, parse_size

SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
               max_size=12)
FILES = ["a.png", "b.png", "sub/c.png", "d e.png"]  # what the table's folder holds


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("table")
    for name in FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x89PNG")  # only existence matters to the table reader
    for n in range(6):
        (root / f"s-{n:02d}.tar").write_bytes(b"")
    return root


# A row: a file of the folder (or a missing one), a label cell, a split cell, noise.
ROW = st.tuples(st.sampled_from([*FILES, "missing.png", "./a.png"]), CELL,
                st.sampled_from(["train", "val", "VAL", "test", ""]), CELL)


@settings(SETTINGS, max_examples=budget(0.5))
@given(rows=st.lists(ROW, max_size=8), names=st.lists(CELL, min_size=4, max_size=4),
       use_split=st.booleans())
@example(rows=[("a.png", "cat", "train", ""), ("a.png", "dog", "val", "")],
         names=["image", "label", "split", "x"], use_split=True)
def test_any_table_reads_back_its_rows_or_fails_in_one_line(folder, rows, names, use_split):
    names = [n.strip() or f"c{i}" for i, n in enumerate(names)]
    if len(set(names)) < 4:
        return  # csv.DictReader folds repeated column names into one
    table_file = folder / "t.csv"
    with open(table_file, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows(rows)
    got = outcome(read_csv_labels, table_file, path_column=names[0], label_column=names[1],
                  split_column=names[2] if use_split else None)
    if got is None:
        return
    # Success means every row was well-formed: no empty label, no repeated path, and each
    # kept row is the file it named, labelled as written.
    resolved = [(folder / path).resolve() for path, *_ in rows]
    assert len(set(resolved)) == len(rows)
    assert all(label.strip() for _, label, _, _ in rows)
    kept = [(folder / p).resolve() for p, *_ in rows if (folder / p).is_file()]
    assert got.source.paths == kept
    labels = {(folder / p).resolve(): lab.strip() for p, lab, *_ in rows}
    assert [got.source.classes[t] for t in got.source.targets] == [labels[p] for p in kept]
    assert len(got.skipped) == len(rows) - len(kept)
    if use_split:
        splits = {(folder / p).resolve(): s.lower() == "val" for p, _, s, _ in rows}
        assert list(got.is_val) == [splits[p] for p in kept]


PATTERN_PART = st.sampled_from(["s-", "{00..05}", "{00,03}", "*", "?", "[0-9]", "{", "}", ".tar",
                                "..", "0", "x", ",", "/", "{0..99}"])


@settings(SETTINGS, max_examples=budget(0.5))
@given(parts=st.lists(PATTERN_PART, min_size=1, max_size=6))
@example(parts=["s-", "{00..05}", ".tar"])
@example(parts=["s-", "{", ".tar"])
# A million globs, each listing the folder, took minutes: more than 1,000 globs are refused.
@example(parts=["{0..99}", "{0..99}", "{0..99}", "*"])
def test_any_shard_pattern_names_existing_shards_or_fails_in_one_line(folder, parts):
    pattern = str(folder) + "/" + "".join(parts)
    found = outcome(expand_pattern, pattern)
    if found is None:
        return
    assert found and len(found) == len(set(found))
    assert all(Path(url).is_file() for url in found)


@settings(SETTINGS, max_examples=budget(0.5))
@given(number=st.floats(0, 1e4, allow_nan=False), unit=st.sampled_from(["", "KB", "MB", "GB",
                                                                       "kb", "M", "TB", "x"]))
def test_any_shard_size_parses_or_fails_in_one_line(number, unit):
    text = f"{number:g}{unit}"
    size = outcome(parse_size, text)
    if size is not None:
        scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[unit.upper().rstrip("B")[:1]]
        assert size == int(float(f"{number:g}") * scale) >= 1000

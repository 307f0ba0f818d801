"""Property-based tests of the pipeline spec language: inline text and YAML/JSON files.

Every spec either loads (and then writes a pipeline.yaml that loads back to the same steps) or
is refused with one AugmentSpecError line; nothing is evaluated and nothing is written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from augment_helpers import make_class_folder
from fuzz_helpers import budget, check_error, outcome, tree
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolbox.augment import (
    PRESETS,
    augmenter_names,
    build_augmenter,
    list_augmenters,
    load_spec,
    pipeline_to_yaml,
)
from toolbox.errors import ToolboxError

NAMES = augmenter_names()
PARAMS = sorted({p.name for info in list_augmenters() for p in info.params})
# Values a hostile or careless user might write: code, names, huge and non-finite numbers.
HOSTILE = ["__import__('os')", "lambda: 0", "lambda x: x", "1e309", "-1e309", "nan", "inf",
           "float('nan')", "open('pwned', 'w')", "os.system('true')", "[*a]", "{**d}", "...",
           "b'x'", "1j", "p", "None", "True", "''", "'\\n'", "1/0", "2**64", "10**10", "1e-320",
           "9" * 30, "-0.0", "(1, 2) * 3", "'a' + 'b'", "{1: 2}", "{'height': 64}", "()",
           "Fliplr", "iaa.Fliplr(1)", "x.y.z()", "(yield)", "f'{1}'", "[1, [2, [3]]]"]
PUNCTUATION = [*list("()[]{},;:=+-*/.'\"#\\ \n\t@!%&|^~<>`$?"), "**", "==", "=>", "..."]
SEPARATORS = ["; ", ";", ", ", ",", "\n", " ;\n", "; ;"]
SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _numbers() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(-10**6, 10**6).map(str),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.floats(-2, 2).map(lambda v: f"{v:.3g}"))


def _values(max_leaves: int = 4) -> st.SearchStrategy[str]:
    leaf = st.one_of(_numbers(), st.sampled_from(HOSTILE),
                     st.text(max_size=6).map(repr), st.sampled_from(NAMES).map(lambda n: n + "()"))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "(" + ", ".join(xs) + ",)"),
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.tuples(inner, inner).map(lambda kv: "{" + f"{kv[0]}: {kv[1]}" + "}"),
        st.tuples(st.sampled_from(NAMES), st.lists(inner, max_size=2)).map(
            lambda c: f"{c[0]}({', '.join(c[1])})")), max_leaves=max_leaves)


@st.composite
def _call(draw: st.DrawFn, values: st.SearchStrategy[str]) -> str:
    name = draw(st.sampled_from(NAMES) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,12}",
                                                       fullmatch=True))
    args = draw(st.lists(values, max_size=2))
    keys = draw(st.lists(st.sampled_from(PARAMS), max_size=2, unique=True))
    kwargs = [f"{k}={draw(values)}" for k in keys]
    return f"{name}({', '.join(args + kwargs)})"


@st.composite
def inline_specs(draw: st.DrawFn) -> str:
    """Augmenter calls joined by separators, sometimes with random punctuation spliced in."""
    calls = draw(st.lists(_call(_values()), min_size=1, max_size=4))
    text = calls[0]
    for call in calls[1:]:
        text += draw(st.sampled_from(SEPARATORS)) + call
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(PUNCTUATION)) + text[at:]
    return text


def _check_loaded(pipeline, folder: Path) -> None:
    """A loaded pipeline is written as pipeline.yaml (as `tb augment` does) and reads back."""
    assert pipeline.steps
    path = folder / "pipeline.yaml"
    try:
        path.write_text(pipeline_to_yaml(pipeline, seed=1), encoding="utf-8")
        again = load_spec(str(path))
    finally:
        path.unlink(missing_ok=True)
    assert _same(again.steps, pipeline.steps), (again.steps, pipeline.steps)


def _same(a, b) -> bool:
    """Equality where NaN equals NaN (a spec may hold nan; it must survive the round trip)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "kwargs") and hasattr(b, "kwargs"):
        return a.name == b.name and _same(a.args, b.args) and _same(a.kwargs, b.kwargs)
    return type(a) is type(b) and a == b


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, so a spec that tried to write a file would be seen."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@SETTINGS
@given(spec=inline_specs())
@example(spec="Fliplr(0.5), Affine(rotate=(-25, 25))")
@example(spec="Fliplr(" + "-" * 5000 + "1)")
@example(spec="Fliplr(" + "9" * 5000 + ")")
@example(spec="Fliplr(" + "[" * 300 + "]" * 300 + ")")
@example(spec="Fliplr(p=" + "1+" * 3000 + "1)")
@example(spec="Add([Add()])")  # a step inside a plain value's list must round-trip
@example(spec="Add({'A': 0})")  # a dict that pipeline.yaml would read as an augmenter
@example(spec="Sequential('A')")  # a text where augmenters belong
def test_inline_spec_loads_or_is_refused_in_one_line(workdir, spec):
    pipeline = outcome(load_spec, spec)
    if pipeline is not None:
        _check_loaded(pipeline, workdir)
    assert tree(workdir) == set()


@SETTINGS
@given(spec=st.text(max_size=400))
@example(spec="a" * 300)
@example(spec="x/" * 3000)
@example(spec="pipeline.yaml\x00")
def test_random_text_loads_or_is_refused_in_one_line(workdir, spec):
    pipeline = outcome(load_spec, spec)
    if pipeline is not None:
        _check_loaded(pipeline, workdir)
    assert tree(workdir) == set()


STEPS = ["Fliplr(0.5)", "Affine(rotate=(-25, 25))", "GaussianBlur(sigma=(0, 0.5))",
         "Sometimes(0.5, [Crop(px=(0, 4)), Flipud(0.5)])", "pillike.Autocontrast((0, 10))",
         "iaa.Multiply((0.8, 1.2))", "Grayscale"]


@SETTINGS
@given(steps=st.lists(st.sampled_from(STEPS), min_size=12, max_size=120),
       separator=st.sampled_from(["; ", ";", "\n", ", "]))
def test_long_valid_specs_load_whole(workdir, steps, separator):
    """Issue 15: specs over the OS's file-name limit crashed with OSError (Errno 36)."""
    spec = separator.join(steps)
    assert [s.name for s in load_spec(spec).steps] == [
        s.split("(")[0].removeprefix("iaa.") for s in steps]


@settings(SETTINGS, max_examples=budget(0.5))
@given(spec=st.lists(_call(_values(3).filter(lambda v: "e3" not in v and "**" not in v)),
                     min_size=1, max_size=3).map("; ".join))
def test_inline_spec_builds_and_runs_or_is_refused(workdir, spec):
    """Loaded pipelines are built and run once on a test image, as `tb augment` does."""
    augmenter = outcome(build_augmenter, spec, seed=0)
    if augmenter is not None:
        out = augmenter(image=np.zeros((16, 16, 3), np.uint8))
        assert out.dtype == np.uint8


def test_comma_separated_steps_run_from_the_cli(tmp_path, invoke):
    """Issue 15: `--aug "A, B"` (how Python lists augmenters) is a sequence; long specs work."""
    make_class_folder(tmp_path / "src", per_class=1)
    comma = invoke("augment", tmp_path / "src", tmp_path / "a", "--aug",
                   "Fliplr(1.0), Affine(rotate=(-25, 25))", "--seed", "0")
    assert comma.exit_code == 0, comma.output
    written = yaml.safe_load((tmp_path / "a" / "pipeline.yaml").read_text())
    assert [next(iter(s)) if isinstance(s, dict) else s for s in written["pipeline"]] == [
        "Fliplr", "Affine"]
    long_spec = "; ".join(["Fliplr(0.5)"] * 25)
    assert len(long_spec) > 255
    long = invoke("augment", tmp_path / "src", tmp_path / "b", "--aug", long_spec)
    assert long.exit_code == 0, long.output
    assert len(yaml.safe_load((tmp_path / "b" / "pipeline.yaml").read_text())["pipeline"]) == 25
    mixed = invoke("augment", tmp_path / "src", tmp_path / "c", "--aug", "Fliplr(0.5), 3")
    assert mixed.exit_code == 2  # a bad --aug value is a usage error
    assert "separated by ';'" in mixed.stderr and "Traceback" not in mixed.output


# ------------------------------------------------------------------------- YAML / JSON files
_KEYS = st.sampled_from([*NAMES[:40], *PARAMS[:40], "pipeline", "seed", "uniform", "choice",
                         "tuple", "Fliplr", "p"]) | st.text(max_size=8)
_DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(STEPS + NAMES[:20]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=12)
HOSTILE_FILES = [
    "pipeline: &a [*a]\n",
    "pipeline:\n - &a {Sequential: [*a]}\n",
    "pipeline:\n - Fliplr: &a {uniform: [*a, 1]}\n",
    "pipeline:\n - Fliplr: " + "9" * 5000 + "\n",
    "[{\"Fliplr\": " + "9" * 5000 + "}]",
    "pipeline:\n - !!python/object/apply:os.system ['touch pwned']\n",
    "pipeline: " + "[" * 2000 + "]" * 2000 + "\n",
    "\ufeffpipeline: [Fliplr]\n",
    "pipeline: [Fliplr]\n---\npipeline: [Flipud]\n",
    "a: &a [*a, *a, *a, *a]\nb: &b [*a, *a, *a, *a]\npipeline: [Fliplr]\n",
]


@SETTINGS
@given(data=_DATA | st.fixed_dictionaries({"pipeline": _DATA}, optional={"seed": _DATA}),
       suffix=st.sampled_from([".yaml", ".yml", ".json", ".YAML"]))
def test_pipeline_files_load_or_are_refused_in_one_line(workdir, data, suffix):
    path = workdir / f"spec{suffix}"
    try:
        text = json.dumps(data) if suffix == ".json" else yaml.safe_dump(data)
        path.write_text(text, encoding="utf-8")
        pipeline = outcome(load_spec, str(path))
        if pipeline is not None:
            _check_loaded(pipeline, workdir)
        assert tree(workdir) == {path.name}
    finally:
        path.unlink()


@SETTINGS
@given(content=st.binary(max_size=300) | st.sampled_from(HOSTILE_FILES).map(str.encode)
       | st.lists(st.sampled_from([*"[]{}:,-&*!'\"\n #|>?", "Fliplr", "pipeline", "seed"]),
                  max_size=30).map("".join).map(str.encode),
       suffix=st.sampled_from([".yaml", ".json"]))
@example(content=b"(:\n?", suffix=".yaml")  # top-level keys "(" and null: sorting them failed
def test_random_file_bytes_load_or_are_refused_in_one_line(workdir, content, suffix):
    path = workdir / f"spec{suffix}"
    try:
        path.write_bytes(content)
        outcome(load_spec, str(path))
        assert tree(workdir) == {path.name}
    finally:
        path.unlink()


def test_alias_loop_is_refused_not_a_recursion_error(workdir):
    path = workdir / "loop.yaml"
    path.write_text(HOSTILE_FILES[1])
    with pytest.raises(ToolboxError) as info:
        load_spec(str(path))
    check_error(info.value)
    assert "loop.yaml" in info.value.message


def test_presets_still_load():
    for name in PRESETS:
        assert load_spec(name).steps

"""Property-based tests of structured option values: --input-size, --columns, --model-arg,
--device, --shard and --milestones.

Parsers either return a well-formed value or raise one ToolboxError line; through the CLI a bad
value is a usage error (exit 2) or a one-line failure (exit 1), never a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fuzz_helpers import budget, outcome, tree
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolbox.cli.summary import parse_columns, parse_input_size, parse_model_args
from toolbox.devices import resolve_device
from toolbox.models import TORCHINFO_COLUMNS

SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
# Digits of any script, signs, separators and the odd character: what a typo or paste gives.
NUMBER_TEXT = st.one_of(st.integers(-5, 10**6).map(str), st.sampled_from(
    ["0", "-0", "+3", "1_0", "٣", "²", "３", "1e3", "0x10", "3.0", "", " ", "nan", "9" * 5000]))
SEPARATOR = st.sampled_from([",", "x", "X", "×", "/", " ", ", ", ",,", ";", "\n"])


@st.composite
def joined(draw: st.DrawFn, parts: st.SearchStrategy[str], max_size: int = 5) -> str:
    items = draw(st.lists(parts, max_size=max_size))
    text = ""
    for index, item in enumerate(items):
        text += (draw(SEPARATOR) if index else "") + item
    return text


@SETTINGS
@given(text=joined(NUMBER_TEXT) | st.text(max_size=30))
@example(text="3x224x224")
@example(text="1,3," + "9" * 5000 + ",2")
def test_input_size_parses_to_four_positive_ints_or_is_refused(text):
    size = outcome(parse_input_size, text)
    if size is not None:
        assert len(size) == 4 and all(isinstance(v, int) and v > 0 for v in size)


@SETTINGS
@given(values=st.lists(joined(st.sampled_from(TORCHINFO_COLUMNS) | st.text(max_size=12)),
                       max_size=3))
def test_columns_parse_to_known_names_or_are_refused(values):
    columns = outcome(parse_columns, values)
    if columns is not None:
        assert set(columns) <= set(TORCHINFO_COLUMNS)


@SETTINGS
@given(pairs=st.lists(st.tuples(st.from_regex(r"[A-Za-z_]\w{0,8}", fullmatch=True)
                                | st.text(max_size=8),
                                st.sampled_from(["=", "==", ":", ""]),
                                st.text(max_size=20) | st.sampled_from(
                                    ["(1, 2)", "[" * 200, "{'a': [1, {2: 3}]}", "1e309",
                                     "__import__('os')", "9" * 5000, "b'x'", "None"]))
                      .map("".join), max_size=3))
def test_model_args_parse_to_keyword_arguments_or_are_refused(pairs):
    kwargs = outcome(parse_model_args, pairs)
    if kwargs is not None:
        assert all(key.isidentifier() for key in kwargs)


@settings(SETTINGS, max_examples=budget(0.5))
@given(spec=st.text(max_size=16) | st.sampled_from(
    ["cpu", "cpu:0", "cuda", "cuda:-1", "cuda:99999999999999999999", "mps", "meta", "xla",
     "cpu:", ":0", "CPU", " cuda : 0 ", "cuda:0:0", "cuda:0x1", "vulkan", "privateuseone"]))
def test_device_resolves_or_is_refused(spec):
    device = outcome(resolve_device, spec)
    if device is not None:
        assert device.type in ("cpu", "cuda", "mps")


# ------------------------------------------------------------------------ through the CLI
def _check_cli(result, usage_ok: bool) -> int:
    """A CLI outcome: a clean exit, a usage error (2) or one `error:` line with a hint (1)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    assert "Traceback" not in result.output
    assert result.exit_code in ((1, 2) if usage_ok else (1,)), result.output
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith("error:") and len(lines) <= 2, result.stderr
        assert "looks like a bug" not in result.stderr
    return result.exit_code


SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")  # \d: any script's decimal digits, as int()


# Each example runs the CLI in-process (tens of milliseconds): a quarter of the budget.
@settings(SETTINGS, max_examples=budget(0.25))
@given(value=joined(NUMBER_TEXT, max_size=3) | st.text(max_size=10))
@example(value="²/3")
@example(value="0/" + "9" * 5000)
def test_shard_is_a_clean_usage_error_or_accepted(invoke, tmp_path, value):
    """A valid K/N gets past option checks to the (missing) source folder: exit 1."""
    result = invoke("augment", tmp_path / "missing", tmp_path / "out", "--shard", value,
                    "--seed", "0")
    code = _check_cli(result, usage_ok=True)
    match = SHARD.fullmatch(value)
    valid = bool(match) and len(value) < 4300 and int(match[1]) < int(match[2])
    assert (code == 1) == valid, (value, result.output)
    assert tree(tmp_path) == set()


@settings(SETTINGS, max_examples=budget(0.25))
@given(value=joined(NUMBER_TEXT, max_size=4) | st.text(max_size=10))
def test_milestones_are_a_clean_usage_error_or_accepted(invoke, tmp_path, value):
    """Valid epochs get past option parsing to the run's checks (--epochs 0 fails): exit 1."""
    result = invoke("finetune", "--data", tmp_path / "missing", "--out", tmp_path / "run",
                    "--epochs", "0", "--sched", "multistep", "--milestones", value)
    _check_cli(result, usage_ok=True)
    assert not (tmp_path / "run").exists()


# Sizes far beyond any machine's memory (the allocation is refused at once, nothing is filled).
@pytest.mark.parametrize("size", ["3,100000,100000", "1,3,1,1", "64,3," + "4" * 12 + ",1",
                                  "1,1," + "9" * 18 + ",9"])
def test_summary_with_an_input_size_no_model_takes_is_one_line(invoke, tmp_path: Path, size):
    model = tmp_path / "tiny.py"
    model.write_text("from torch import nn\n\ndef Net():\n"
                     "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))\n")
    result = invoke("summary", f"{model}:Net", "--input-size", size, "--device", "cpu")
    _check_cli(result, usage_ok=False)

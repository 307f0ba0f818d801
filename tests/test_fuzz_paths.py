"""Property-based tests of path arguments through the CLI: names too long for the operating
system, odd characters and missing files give one `error:` line, never "this looks like a bug".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_helpers import budget, tree
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
# One path component (no '/', never '.' or '..'), so every generated path stays in the test's
# empty input folder: a random '/' could otherwise send `tb augment` through the whole disk.
COMPONENT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                    min_size=1, max_size=20).filter(lambda t: t not in (".", "..")
                                                    and not t.startswith("-"))  # options
NAMES = COMPONENT | st.sampled_from(["x" * 256, "x" * 300 + ".png", "é" * 200, " ",
                                     "a*b?[c]", "*" * 300]) \
    | st.lists(st.sampled_from(["d", "x" * 250]), min_size=2, max_size=20).map("/".join)
COMMANDS = {
    "augment": lambda p, out: ["augment", p, out, "--seed", "0"],
    "summary file": lambda p, out: ["summary", f"{p}.safetensors"],
    "summary code": lambda p, out: ["summary", f"{p}.py:Net"],
    "finetune": lambda p, out: ["finetune", "--data", p, "--epochs", "1", "--out", out],
    "predict": lambda p, out: ["predict", p, "--run", p],
    "log-images": lambda p, out: ["log-images", p, "--tensorboard", out],
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "in").mkdir()
    monkeypatch.chdir(tmp_path / "in")
    return tmp_path


# Each example runs a command in-process (up to a second on a busy machine): a tenth of the
# budget.
@settings(SETTINGS, max_examples=budget(0.1))
@given(command=st.sampled_from(sorted(COMMANDS)), name=NAMES)
@example(command="augment", name="x" * 300)
@example(command="finetune", name="x" * 300)
@example(command="summary file", name="x" * 300)
def test_path_arguments_fail_in_one_line(invoke, workdir, command, name):
    out = workdir / "out"
    result = invoke(*COMMANDS[command](name, str(out)))
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    assert result.exit_code in (1, 2), result.output
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith("error:") and len(lines) <= 2, result.stderr
        assert "looks like a bug" not in result.stderr
    assert tree(workdir / "in") == set()
    assert not out.exists() or command == "log-images"

"""Property-based tests of `tb finetune --config FILE.yaml` (a run's args.yaml, or one written by
hand): the settings load and validate, or are refused with one ToolboxError line."""

from __future__ import annotations

import dataclasses

import yaml
from fuzz_helpers import outcome, tree
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolbox.train import FinetuneConfig, read_config_file, resolve_config

SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
FIELDS = sorted(f.name for f in dataclasses.fields(FinetuneConfig))
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats() | st.text(max_size=10)
    | st.sampled_from(["~nobody_such_user/x", "x" * 300, "adamw", "cosine", "ce", "cpu", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=2), max_leaves=6)
HOSTILE = ["epochs: " + "9" * 5000, "a: &a [*a]\nlr: *a", "lr: " + "[" * 3000 + "]" * 3000,
           "!!python/object/apply:os.system ['true']", "- 1\n- 2", "epochs: 1\nepochs: 2",
           "data: ~nobody_such_user/x", "\ufeffepochs: 1", "resolved: {a: 1}\n", "{}"]


@SETTINGS
@given(text=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6) | st.integers(),
                            _VALUES, max_size=4).map(yaml.safe_dump)
       | st.sampled_from(HOSTILE) | st.text(max_size=40))
@example(text="data: " + "x" * 300)
@example(text="out: " + "x" * 300)  # a run folder name longer than NAME_MAX
def test_config_files_load_and_validate_or_are_refused(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "args.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        values = outcome(read_config_file, path)
        if values is not None:
            resolved = outcome(resolve_config, values, {}, set())
            if resolved is not None:
                outcome(resolved[0].validate)
        assert tree(tmp_path) == {path.name}
    finally:
        path.unlink()

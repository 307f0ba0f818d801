"""Property-based tests of model specs: timm/torchvision names with tags, model files,
`path/to/file.py:Class` and `package.module:Factory` user code, with `--model-arg` values.

A spec builds an nn.Module or is refused with one ToolboxError line; nothing is written in the
current folder (Python's own __pycache__ beside imported user files aside).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_helpers import budget, outcome, tree
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolbox.models import load_for_summary

SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
USER_FILES = {
    "good.py": "from torch import nn\n\nclass Net(nn.Sequential):\n"
               "    def __init__(self, width=2):\n"
               "        super().__init__(nn.Conv2d(3, width, 1), nn.Flatten(),\n"
               "                         nn.LazyLinear(3))\n\n"
               "def factory(**kwargs):\n    return Net(**kwargs)\n\nVALUE = 3\n",
    "broken.py": "def Net(:\n",
    "raises.py": "raise RuntimeError('at import')\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "notmodel.py": "def Net():\n    return 42\n\nclass Other:\n    pass\n",
}
PACKAGE = {"tbfuzzpkg/__init__.py": "", "tbfuzzpkg/models.py": USER_FILES["good.py"]}
# Tiny timm architectures only: a random real name could be a billion-parameter model.
TIMM = ["test_resnet", "test_vit", "test_resnet.r160_in1k", "test_vit.r160_in1k"]
ATTRS = st.sampled_from(["Net", "factory", "VALUE", "Other", "missing", "", "Net.x", "a..b",
                         "__class__", "Net.__init__"]) | st.text(max_size=6)
TARGETS = st.sampled_from([*USER_FILES, "missing.py", "./good.py", "sub/../good.py", "good",
                           "x" * 300 + ".py", "/", "tbfuzzpkg.models", "tbfuzzpkg",
                           "tbfuzzpkg.missing", "tbfuzz_nothing", ".tbfuzzpkg", "tbfuzzpkg..x",
                           "json", "collections"])
NAMES = st.one_of(
    st.sampled_from(TIMM),
    st.tuples(st.sampled_from(TIMM), st.text(max_size=8)).map(lambda t: f"{t[0]}.{t[1]}"),
    st.text(max_size=12).map(lambda t: "test_" + t),
    st.text(max_size=10).map(lambda t: "tv:" + t),
    st.sampled_from(["tv:", ":", "::", ".", "model.safetensors", "model.pt", "x.py",
                     "a" * 300 + ".safetensors", "resnet18.", "tv:resnet18:x"]),
    st.tuples(TARGETS, ATTRS).map(":".join))
MODEL_ARGS = st.dictionaries(
    st.sampled_from(["width", "num_classes", "drop_rate", "in_chans", "x"]),
    st.one_of(st.integers(-2, 4), st.floats(-1, 2), st.text(max_size=3), st.none(),
              st.lists(st.integers(0, 2), max_size=2)), max_size=2)


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current folder holding user model files and an importable package."""
    for name, text in {**USER_FILES, **PACKAGE}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# Some examples build a (tiny) model: half the budget.
@settings(SETTINGS, max_examples=budget(0.5))
@given(spec=NAMES, model_args=MODEL_ARGS)
@example(spec="test_resnet", model_args={"num_classes": 3})
@example(spec="test_resnet", model_args={"in_chans": -1})
@example(spec="good.py:Net", model_args={"width": -1})
@example(spec="exits.py:Net", model_args={})
def test_model_spec_builds_or_is_refused_in_one_line(user_code, spec, model_args):
    from torch import nn

    before = tree(user_code)
    built = outcome(load_for_summary, spec, model_args=model_args)
    if built is not None:
        assert isinstance(built.model, nn.Module)
    assert {p for p in tree(user_code) - before if "__pycache__" not in p} == set()

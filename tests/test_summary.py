"""`tb summary`: torchinfo tables, flop-counter MACs, model sources and clear failures."""

from __future__ import annotations

import json
import textwrap

import pytest

from toolbox.cli.summary import parse_columns, parse_input_size, parse_model_args
from toolbox.errors import ToolboxError
from toolbox.models import (
    ModelMeta,
    count_macs,
    create_model,
    parse_dtype,
    save_safetensors,
    summarize,
)

RESNET18_PARAMS = 11_689_512

TINY_NET = textwrap.dedent("""
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, width=4, num_classes=10, frozen_stem=False):
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(width, num_classes)
            self.stem.requires_grad_(not frozen_stem)

        def forward(self, x):
            return self.head(self.pool(self.stem(x)).flatten(1))


    def make_tiny(width=4):
        return TinyNet(width=width, num_classes=3)


    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(5, 2)  # the stem gives 4*30*30 features, not 5

        def forward(self, x):
            return self.head(self.stem(x).flatten(1))


    def not_a_model():
        return 42
""")


def tiny_params(width: int, classes: int) -> int:
    return 3 * width * 9 + width + width * classes + classes


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny_net.py"
    path.write_text(TINY_NET)
    return path


# ---- option parsing ------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("3,224,224", (1, 3, 224, 224)),
    ("1,3,224,224", (1, 3, 224, 224)),
    ("3x224x224", (1, 3, 224, 224)),
    ("2, 3, 64, 48", (2, 3, 64, 48)),
])
def test_parse_input_size(text, expected):
    assert parse_input_size(text) == expected


@pytest.mark.parametrize("text", ["224", "3,224", "3,224,224,1,1", "3,a,224", "3,0,224", "", "x"])
def test_parse_input_size_rejects(text):
    with pytest.raises(ToolboxError, match="malformed --input-size"):
        parse_input_size(text)


def test_parse_columns_dtype_and_model_args():
    assert parse_columns(["input_size,num_params", "trainable"]) == (
        "input_size", "num_params", "trainable")
    with pytest.raises(ToolboxError) as err:
        parse_columns(["output_sise"])
    assert "output_size" in err.value.hint
    assert parse_dtype("bf16") == "bfloat16" and parse_dtype("torch.float16") == "float16"
    with pytest.raises(ToolboxError) as err:
        parse_dtype("flaot16")
    assert "float16" in err.value.hint
    assert parse_model_args(["width=8", "act=gelu", "sizes=(1, 2)", "name='x'", "on=True"]) == {
        "width": 8, "act": "gelu", "sizes": (1, 2), "name": "x", "on": True}
    with pytest.raises(ToolboxError, match="malformed --model-arg"):
        parse_model_args(["width"])
    # Literals only: a call is kept as a plain string, never evaluated.
    assert parse_model_args(["x=__import__('os').getcwd()"]) == {
        "x": "__import__('os').getcwd()"}


# ---- summaries -----------------------------------------------------------------------------

def test_resnet18_json_totals(invoke):
    result = invoke("summary", "resnet18", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["total_params"] == RESNET18_PARAMS
    assert data["trainable_params"] == RESNET18_PARAMS and data["frozen_params"] == 0
    assert data["input_size"] == [1, 3, 224, 224]  # from timm's pretrained config
    assert data["macs"] == pytest.approx(1.82e9, rel=0.01)  # timm publishes 1.82 GMACs
    assert data["mult_adds"] == pytest.approx(1.81e9, rel=0.01)
    assert data["params_size_mb"] == pytest.approx(RESNET18_PARAMS * 4 / 1e6, abs=0.01)
    assert data["input_size_mb"] == pytest.approx(0.6, abs=0.01)
    assert data["forward_backward_size_mb"] > 0 and data["estimated_total_size_mb"] > 0
    assert data["forward_error"] is None
    conv1 = next(layer for layer in data["layers"] if layer["name"] == "conv1")
    assert conv1["params"] == 9408 and conv1["output_size"] == [1, 64, 112, 112]
    assert max(layer["depth"] for layer in data["layers"]) == 3


def test_torchvision_resnet18_small_input():
    result = summarize("tv:resnet18", input_size=(3, 64, 64), depth=1, device="cpu")
    assert (result.source, result.total_params) == ("torchvision", RESNET18_PARAMS)
    assert result.input_size == [1, 3, 64, 64]
    assert {layer.depth for layer in result.layers} == {0, 1}
    assert result.macs == pytest.approx(1.82e9 * (64 / 224) ** 2, rel=0.05)


@pytest.mark.parametrize("name,gmacs", [
    ("vit_base_patch16_224", 17.6),  # torchinfo's module-call count says 0.20
    ("convnext_tiny", 4.47),  # torchinfo: 0.32
    ("swin_tiny_patch4_window7_224", 4.51),  # torchinfo: 0.06
])
def test_macs_match_timm_published_figures(name, gmacs):
    import torch

    with torch.device("meta"):  # shapes only: no weights, no arithmetic
        model = create_model(name).eval()
        macs = count_macs(model, torch.zeros(1, 3, 224, 224))
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.05)


def test_cpu_attention_is_counted():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        on_meta = count_macs(create_model("test_vit").eval(), torch.zeros(1, 3, 160, 160))
    x = torch.zeros(1, 3, 160, 160)
    model = create_model("test_vit").eval()
    plain = FlopCounterMode(display=False)  # knows only the CUDA attention kernels
    with plain, torch.no_grad():
        model(x)
    result = summarize("test_vit", device="cpu", depth=1)
    assert result.macs == count_macs(model, x) == on_meta
    assert result.macs > plain.get_total_flops() // 2


def test_table_output_with_columns(invoke):
    result = invoke("summary", "resnet18", "--depth", "1", "--input-size", "3x32x32",
                    "--columns", "input_size,trainable", "--dtype", "bf16")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for text in ("input_size", "trainable", "1x3x32x32", "layer4: Sequential", "11,689,512",
                 "MACs (flop counter)", "bfloat16", "Params size (MB)", "23.38"):
        assert text in out, text


def test_user_model_in_a_file(invoke, model_file):
    result = invoke("summary", f"{model_file}:TinyNet", "--model-arg", "width=8",
                    "--model-arg", "frozen_stem=True", "--input-size", "3,16,16", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == "code" and data["architecture"] == "TinyNet"
    assert data["total_params"] == tiny_params(8, 10)
    assert data["frozen_params"] == 3 * 8 * 9 + 8
    assert data["macs"] == 3 * 8 * 9 * 16 * 16 + 8 * 10
    assert data["notes"] == []  # the input size was given


def test_user_factory_and_new_head(model_file):
    result = summarize(f"{model_file}:make_tiny", input_size=(3, 8, 8), num_classes=5,
                       model_args={"width": 6}, device="cpu")
    assert result.total_params == tiny_params(6, 5)
    guessed = summarize(f"{model_file}:make_tiny", device="cpu")
    assert guessed.input_size == [1, 3, 224, 224]
    assert "no default input size" in guessed.notes[0]


def test_user_model_in_a_package(invoke, tmp_path, monkeypatch):
    pkg = tmp_path / "tb_test_userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(TINY_NET)
    monkeypatch.chdir(tmp_path)
    result = invoke("summary", "tb_test_userpkg.nets:TinyNet", "-i", "3,8,8", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["total_params"] == tiny_params(4, 10)


def test_safetensors_file_written_by_tb(tmp_path):
    model = create_model("test_resnet", num_classes=3)
    path = save_safetensors(model, tmp_path / "model.safetensors",
                            ModelMeta(model="test_resnet", num_classes=3, input_size=(3, 64, 64)))
    result = summarize(str(path), depth=1, device="cpu")
    assert (result.source, result.architecture) == ("file", "test_resnet")
    assert result.input_size == [1, 3, 64, 64]
    assert result.total_params == sum(p.numel() for p in model.parameters())


def test_pt_checkpoint_and_foreign_file(tmp_path):
    import torch

    model = create_model("tv:resnet18", num_classes=4)
    meta = ModelMeta(model="tv:resnet18", num_classes=4, input_size=(3, 32, 32))
    ckpt = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "meta": meta.to_dict(), "epoch": 3}, ckpt)
    result = summarize(str(ckpt), depth=0, device="cpu")
    assert result.total_params == RESNET18_PARAMS - 513_000 + 512 * 4 + 4
    assert result.input_size == [1, 3, 32, 32]
    foreign = tmp_path / "foreign.pt"
    torch.save(model.state_dict(), foreign)  # weights without tb metadata
    with pytest.raises(ToolboxError, match="no tb metadata"):
        summarize(str(foreign), device="cpu")


def test_num_classes_gives_a_new_head(invoke):
    result = invoke("summary", "resnet18", "--num-classes", "10", "-i", "3,32,32", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["total_params"] == RESNET18_PARAMS - 513_000 + 5_130


def test_forward_failure_names_the_layer_and_keeps_counts(invoke, model_file):
    result = invoke("summary", f"{model_file}:Broken", "--input-size", "3,32,32", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)  # the fallback summary: parameter counts only
    assert data["total_params"] == 3 * 4 * 9 + 4 + 5 * 2 + 2
    assert data["macs"] is None
    assert "'head' (Linear)" in data["forward_error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'head' (Linear)" in errors[0]
    assert "Traceback" not in result.stderr


def test_tensorboard_graph(invoke, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "logs"
    result = invoke("summary", "resnet18", "--depth", "1", "--input-size", "3x32x32",
                    "--tensorboard", logdir)
    assert result.exit_code == 0, result.stderr
    assert list(logdir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(logdir))
    events.Reload()
    graph = events.Graph()
    names = [node.name for node in graph.node]
    assert len(names) > 20
    assert any("conv1" in name for name in names)


USAGE_ERRORS = {"unknown model 'resnt18'", "malformed --input-size '3,224'",
                "unknown column 'outputsize'", "unknown dtype 'float17'",
                "unknown class or factory 'Missing'"}


@pytest.mark.parametrize("args,message", [
    (["resnt18"], "unknown model 'resnt18'"),
    (["resnet18", "--input-size", "3,224"], "malformed --input-size '3,224'"),
    (["no/such/model.safetensors"], "no such file"),
    (["no/such/file.py:Net"], "no such file"),
    (["resnet18", "--columns", "outputsize"], "unknown column 'outputsize'"),
    (["resnet18", "--dtype", "float17"], "unknown dtype 'float17'"),
    (["{file}:Missing"], "unknown class or factory 'Missing'"),
    (["{file}:not_a_model"], "returned a int, not a torch nn.Module"),
    (["{file}:TinyNet", "--model-arg", "depth=3"], "cannot call"),
])
def test_bad_input_is_one_clear_error(invoke, model_file, args, message):
    args = [a.replace("{file}", str(model_file)) for a in args]
    result = invoke("summary", *args)
    if message in USAGE_ERRORS:  # a bad value typed for an option or argument: exit 2
        assert result.exit_code == 2, result.stdout
        assert message in " ".join(result.stderr.split()), result.stderr
        return
    assert result.exit_code == 1, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_model_suggests(invoke):
    result = invoke("summary", "resnt18")
    assert result.exit_code == 2 and "resnet18" in result.stderr.split("did you mean", 1)[1]


def test_demo_command_in_a_real_process(tb_subprocess):
    done = tb_subprocess("summary", "resnet18", "--depth", "1", "--input-size", "3x64x64",
                         timeout=120)
    assert done.returncode == 0, done.stderr
    assert "11,689,512" in done.stdout and "layer4: Sequential" in done.stdout

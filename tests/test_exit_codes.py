"""One rule for exit codes: a bad option value or a missing/extra argument is a usage error
(exit 2, naming the option and the allowed values); a failure while working exits 1."""

from __future__ import annotations

import pytest
from typer.main import get_command

from toolbox.cli.app import app
from toolbox.cli.help import option_metavar

# What each command needs besides the option under test, so the bad value is the only problem.
NEEDS = {
    ("summary",): ["resnet18"],
    ("augment",): ["{tmp}/src", "{tmp}/out"],
    ("log-images",): ["{tmp}/src", "--logdir", "{tmp}/logs"],
    ("predict",): ["{tmp}/src", "--run", "{tmp}/run"],
    ("evaluate",): ["--run", "{tmp}/run", "--data", "{tmp}/src"],
    ("models", "info"): ["resnet18"],
    ("datasets", "fetch"): ["mnist", "--root", "{tmp}/data"],
}

# Options whose values are checked against a registry or a fixed list in code (not an Enum
# Typer knows), with values the error must name.
CHECKED_CHOICES = [
    (("summary",), "--dtype", ["float32", "bfloat16"]),
    (("summary",), "--device", ["cpu", "cuda", "mps"]),
    (("summary",), "--columns", ["output_size", "num_params"]),
    (("augment",), "--preset", ["light", "medium", "heavy"]),
    (("finetune",), "--opt", ["adamw", "adam", "sgd"]),
    (("finetune",), "--sched", ["cosine", "step", "onecycle"]),
    (("finetune",), "--loss", ["ce", "focal", "dice"]),
    (("finetune",), "--amp-dtype", ["fp16", "bf16"]),
    (("log-images",), "--mode", ["grid", "batch", "each"]),
    (("log-images",), "--split", ["train", "test"]),
]


def _enum_choices(command=None, prefix=()):
    """(command path, option, choices) for every option Typer checks against a fixed set."""
    command = command or get_command(app)
    ctx = command.make_context("tb", [], resilient_parsing=True)
    for param in command.params:
        if param.param_type_name == "option" and option_metavar(param, ctx).startswith("["):
            yield prefix, param.opts[0], option_metavar(param, ctx).strip("[]").split("|")
    for name, sub in getattr(command, "commands", {}).items():
        yield from _enum_choices(sub, (*prefix, name))


ALL_CHOICES = [*_enum_choices(), *CHECKED_CHOICES]


def test_the_walk_finds_the_enum_options():
    found = {(path, option) for path, option, _ in _enum_choices()}
    assert {(("augment",), "--format"), (("models", "list"), "--source"),
            (("summary",), "--mode")} <= found


@pytest.mark.parametrize(("path", "option", "allowed"), ALL_CHOICES,
                         ids=[" ".join((*p, o)) for p, o, _ in ALL_CHOICES])
def test_a_bad_choice_is_a_usage_error_naming_the_allowed_values(path, option, allowed, invoke,
                                                                 tmp_path):
    (tmp_path / "src").mkdir()
    needs = [a.replace("{tmp}", str(tmp_path)) for a in NEEDS.get(path, [])]
    result = invoke(*path, *needs, option, "nonsense")
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "Invalid value" in message and option in message, message
    assert all(value in message for value in allowed), message
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [("summary",), ("models", "info"), ("datasets", "fetch"),
                                  ("models", "info", "resnet18", "extra"),
                                  ("summary", "resnet18", "--depth", "many"),
                                  ("augment", "a", "b", "--copies", "0")],
                         ids=" ".join)
def test_missing_extra_or_malformed_arguments_exit_2(args, invoke):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Usage: tb" in result.stderr


def test_a_failure_while_working_exits_1(invoke, tmp_path):
    (tmp_path / "src").mkdir()
    result = invoke("augment", tmp_path / "src", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no images found")

"""The program itself: start-up cost, versions, errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.main import get_command

from toolbox.cli.app import app

HEAVY = ("torch", "torchvision", "timm", "imgaug", "tensorboard", "torchinfo", "cv2", "onnx",
         "pytorch_grad_cam",
         "onnxruntime", "numpy", "webdataset", "optuna")


def _command_paths(command=None, prefix=()):
    command = command or get_command(app)
    for name, sub in getattr(command, "commands", {}).items():
        yield (*prefix, name), sub
        yield from _command_paths(sub, (*prefix, name))


def _imported_modules(*args: str) -> set[str]:
    code = ("import sys; from toolbox.cli.app import app\n"
            "try:\n    app(args=sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "100", "NO_COLOR": "1", "PATH": ""}).stdout
    return {line.split(".")[0] for line in out.splitlines()}


@pytest.mark.parametrize("path", [(), *[p for p, _ in _command_paths()]],
                         ids=lambda p: " ".join(p) or "tb")
def test_help_imports_no_heavy_package(path):
    loaded = _imported_modules(*path, "--help")
    assert not loaded & set(HEAVY), f"`tb {' '.join(path)} --help` imported {loaded & set(HEAVY)}"


def test_every_command_handles_errors():
    for path, command in _command_paths():
        if getattr(command, "commands", None) is None:
            assert getattr(command.callback, "tb_handles_errors", False), " ".join(path)


def test_every_command_has_help():
    for path, command in _command_paths():
        assert (command.help or "").strip(), f"`tb {' '.join(path)}` has no help text"


def test_version_lists_libraries(invoke):
    result = invoke("--version")
    assert result.exit_code == 0
    for lib in ("tb ", "torch ", "torchvision ", "timm "):
        assert lib in result.stdout


def test_python_dash_m_toolbox():
    result = subprocess.run([sys.executable, "-m", "toolbox", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_unknown_command_is_usage_error(invoke):
    assert invoke("no-such-command").exit_code == 2

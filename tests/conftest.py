"""Shared fixtures: a clean, offline, colourless environment and ways to run `tb`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from typer.testing import CliRunner

from toolbox.cli.app import app

TB = Path(sys.executable).parent / "tb"


def ctrl_c_delivered() -> None:
    """A `preexec_fn` for a `tb` subprocess a test sends Ctrl-C: undo an inherited SIG_IGN for
    SIGINT (a suite started in the background by a non-interactive shell, or under nohup,
    passes one on, and Python then ignores Ctrl-C), so the child sees it as a terminal user's
    tb does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


REPO = Path(__file__).resolve().parent.parent
# Debian's dataset-fashion-mnist files; `make test` points elsewhere when it had to fetch them.
FASHION_MNIST_DIR = Path(os.environ.get("TB_TEST_FASHION_MNIST")
                         or "/usr/share/datasets/fashion-mnist")

# Fuzz budgets (tests/test_fuzz_*.py): `make test` runs each property a few hundred times,
# `make fuzz` (`--hypothesis-profile=fuzz`) far longer. No deadline: timings on a shared
# 2-core machine are too noisy for one.
settings.register_profile("tb", max_examples=200, deadline=None)
settings.register_profile("fuzz", max_examples=5000, deadline=None)
settings.load_profile("tb")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One toolbox cache dir for the whole run, so the model index is built once."""
    return tmp_path_factory.mktemp("tb-cache")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, session_cache: Path) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TB_CACHE_DIR", str(session_cache))
    monkeypatch.delenv("TB_DEBUG", raising=False)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner: CliRunner):
    """Run `tb ARGS...` in-process; returns click's Result (stdout, stderr, exit_code)."""

    def _invoke(*args: str, **kwargs):
        return runner.invoke(app, [str(a) for a in args], **kwargs)

    return _invoke


@pytest.fixture
def tb_subprocess(session_cache: Path):
    """Run the installed `tb` console script in a real subprocess."""

    def _run(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "HF_HUB_OFFLINE": "1",
               "TB_CACHE_DIR": str(session_cache), **kwargs.pop("env", {})}
        return subprocess.run([str(TB), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env, **kwargs)

    return _run

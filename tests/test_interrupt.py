"""Ctrl-C that lands in a finalizer, where Python drops the KeyboardInterrupt: still ends
`tb tune` and `tb finetune` (exit 130, the study or run resumable), through `toolbox.interrupt`."""

from __future__ import annotations

import csv
import importlib
import signal
import threading

import pytest
from finetune_helpers import digits_folder

from toolbox import interrupt

# The dropped Ctrl-Cs these tests make are reported by Python as "Exception ignored".
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class _CtrlCInFinalizer:
    """Ctrl-C pressed while garbage collection runs a `__del__` (a DataLoader iterator shutting
    its workers down, a database connection closing): the KeyboardInterrupt is raised there,
    printed as "Exception ignored" and dropped."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


def drop_ctrl_c() -> None:
    _CtrlCInFinalizer()  # collected at once


def test_python_drops_a_ctrl_c_in_a_finalizer():
    """Why `toolbox.interrupt` exists: without it, the press is gone."""
    drop_ctrl_c()  # returns: no KeyboardInterrupt reaches the caller


def test_a_dropped_ctrl_c_raises_at_the_next_check():
    with interrupt.catching_ctrl_c():
        interrupt.check()
        drop_ctrl_c()
        assert interrupt.pressed()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    assert not interrupt.pressed()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_still_raises_where_it_lands():
    with interrupt.catching_ctrl_c(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def work() -> None:
        with interrupt.catching_ctrl_c():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digits_folder(tmp_path_factory.mktemp("interrupt") / "digits", per_class=20,
                         classes=3)


def _args(data) -> list[str]:
    return ["--data", str(data), "--model", "tf_efficientnet_lite0", "--img-size", "32",
            "--batch-size", "8", "--workers", "0", "--freeze", "--epochs", "3"]


def _drop_after_first(monkeypatch, target: str) -> None:
    """Call `target` as before, and drop a Ctrl-C once its first call has returned."""
    module, name = target.rsplit(".", 1)
    real, calls = getattr(importlib.import_module(module), name), []

    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            drop_ctrl_c()
        return result

    monkeypatch.setattr(target, wrapped)


@pytest.mark.parametrize(("target", "finished", "stopped"), [
    # between two trials: the first trial completes, the study stops before the next
    ("toolbox.tune._trial.log_trial", 1, 0),
    # after the first trial's first epoch: that trial ends as interrupted
    ("toolbox.train.epoch.run_epoch", 0, 1),
])
def test_a_dropped_ctrl_c_ends_a_study(invoke, digits, tmp_path, monkeypatch, target,
                                       finished, stopped):
    from test_tune import study_of

    _drop_after_first(monkeypatch, target)
    out = tmp_path / "study"
    result = invoke("tune", *_args(digits), "--pruner", "none", "--trials", "6", "--study", "s",
                    "--out", out)
    assert result.exit_code == 130, result.output
    assert "run the same command to go on" in result.stderr
    trials = study_of(out, "s").trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == finished
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == stopped == len(trials) - finished
    assert all(t.user_attrs["reason"] == "interrupted" for t in failed)


def test_a_ctrl_c_while_optuna_records_a_trial_fails_that_trial(invoke, digits, tmp_path,
                                                                monkeypatch):
    """Ctrl-C in Optuna's own recording of a trial's outcome: the trial would be left running
    in the storage (and Optuna's cleanup turns the KeyboardInterrupt into another error)."""
    from optuna.study import _optimize
    from test_tune import study_of

    def pressed_while_recording(**kwargs):
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(_optimize, "_tell_with_warning", pressed_while_recording)
    out = tmp_path / "study"
    result = invoke("tune", *_args(digits), "--pruner", "none", "--trials", "6", "--study", "s",
                    "--out", out)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and "UnboundLocalError" not in result.output
    [trial] = study_of(out, "s").trials
    assert trial.state.name == "FAIL" and trial.user_attrs["reason"] == "interrupted"


def test_a_dropped_ctrl_c_ends_a_run(invoke, digits, tmp_path, monkeypatch):
    _drop_after_first(monkeypatch, "toolbox.train.epoch.run_epoch")
    out = tmp_path / "run"
    result = invoke("finetune", *_args(digits), "--out", out)
    assert result.exit_code == 130, result.output
    assert (out / "checkpoints" / "last.pt").is_file()
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 2  # the header and epoch 1
    resumed = invoke("finetune", "--resume", out)
    assert resumed.exit_code == 0, resumed.output
    with open(out / "metrics.csv", newline="") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [1, 2, 3]

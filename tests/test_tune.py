"""`tb tune`: studies on tiny real data (90 digits, the packaged pretrained backbone frozen at
32 px, so a trial trains in about a second), read back from the study's storage, its run
folders, best.yaml and TensorBoard events."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import TB, ctrl_c_delivered
from finetune_helpers import digits_folder, flat, read_events

from toolbox.errors import UsageError
from toolbox.tune import parse_param

BAD_LR = "1e-6"  # learns nothing in 4 epochs: chance (1/3) at every epoch


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return digits_folder(tmp_path_factory.mktemp("tune-data") / "digits", per_class=30,
                         classes=3)


def args(data: Path, *more: str, epochs: int | None = 3) -> list[str]:
    return ["--data", str(data), "--model", "tf_efficientnet_lite0", "--img-size", "32",
            "--batch-size", "8", "--workers", "0", "--freeze",
            *(["--epochs", str(epochs)] if epochs else []), *more]


def tune_json(invoke, data: Path, *more: str, epochs: int | None = 3) -> dict:
    result = invoke("tune", *args(data, *more, epochs=epochs), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def study_of(out: Path, name: str, storage: str | None = None):
    import optuna

    return optuna.load_study(study_name=name,
                             storage=storage or f"sqlite:///{out / 'study.db'}")


# -- --space ------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ("lr=1e-4..1e-1:log", dict(name="lr", kind="float", low=1e-4, high=0.1, log=True)),
    ("--label-smoothing=0..0.2", dict(name="label_smoothing", low=0.0, high=0.2)),
    ("weight_decay = 0 .. 0.1 : 0.05", dict(name="weight_decay", step=0.05)),
    ("epochs=2..6:2", dict(name="epochs", kind="int", low=2, high=6, step=2)),
    ("opt=adamw,sgd", dict(name="opt", kind="choice", choices=("adamw", "sgd"))),
    ("lr=0.01,0.1", dict(kind="choice", choices=(0.01, 0.1))),
    ("ema=true,false", dict(name="ema", choices=(True, False))),
])
def test_space_values_parse(spec, expected):
    param = parse_param(spec)
    for key, value in expected.items():
        assert getattr(param, key) == value, (key, param)
    assert parse_param(param.spec()) == param


def test_space_grid_values():
    assert parse_param("epochs=2..6:2").grid() == [2, 4, 6]
    assert parse_param("label-smoothing=0..0.2:0.1").grid() == [0.0, 0.1, 0.2]
    assert parse_param("lr=1e-3..1e-1:log").grid() is None


@pytest.mark.parametrize(("spec", "says"), [
    ("lr=0..1e-1:log", "log range must lie above 0"),
    ("lr=-1e-3..1e-1:log", "log range must lie above 0"),
    ("lr=0.1..0.01", "is above HIGH"),
    ("lr=0.1..0.1", "the range is empty"),
    ("lr=0..0.1", "--lr must be positive"),
    ("learning-rate=1e-3..1e-1", "no tb finetune option has that name"),
    ("data=a,b", "not a setting a study can search"),
    ("opt=adamw,adagrad", "unknown optimizer 'adagrad'"),
    ("opt=0..1", "takes a word, not a range"),
    ("epochs=1.5..4", "is not a whole number"),
    ("lr=1e-3..nan", "is not a number"),
    ("lr=1e-3..1e999", "is too large"),
    ("lr", "has no '='"),
    ("opt=adamw,,sgd", "a choice is empty"),
    ("label-smoothing=0..0.2:0", "the step must be above 0"),
    ("label-smoothing=0..1.5", "--label-smoothing"),
])
def test_bad_space_is_a_usage_error_naming_the_option_and_the_form(invoke, data, spec, says):
    result = invoke("tune", *args(data), "--space", spec, "--out", "never")
    assert result.exit_code == 2, result.output
    text = flat(result.stderr)
    assert "--space" in text and says in text, text
    assert "NAME=LOW..HIGH" in text  # the valid form
    assert "Traceback" not in result.output
    assert not Path("never").exists()


def test_space_given_twice_or_with_its_flag_is_refused(invoke, data):
    result = invoke("tune", *args(data), "--space", "lr=0.01..0.1", "--space", "lr=0.1,0.2")
    assert result.exit_code == 2 and "lr is given twice" in flat(result.stderr)
    result = invoke("tune", *args(data), "--lr", "0.1", "--space", "lr=0.01..0.1")
    assert result.exit_code == 2 and "--lr is both set and searched" in flat(result.stderr)


def test_parse_param_raises_usage_errors_for_the_space_option():
    with pytest.raises(UsageError) as info:
        parse_param("momentum=1..0")
    assert info.value.param == "--space"


# -- studies ------------------------------------------------------------------------------

def test_a_small_study_beats_a_bad_fixed_lr(invoke, data, tmp_path):
    fixed = invoke("finetune", *args(data), "--lr", BAD_LR, "--out", tmp_path / "fixed", "--json")
    assert fixed.exit_code == 0, fixed.output
    bad = json.loads(fixed.stdout)["best_val_acc1"]
    payload = tune_json(invoke, data, "--space", "lr=1e-2..3e-1:log", "--trials", "3",
                        "--out", tmp_path / "study")
    assert payload["metric"] == "val_acc" and payload["direction"] == "maximize"
    assert payload["ran"] == 3 and [t["state"] for t in payload["trials"]] == ["complete"] * 3
    assert payload["best"]["value"] > bad + 0.3, (payload["best"], bad)
    assert 1e-2 <= payload["best"]["params"]["lr"] <= 3e-1
    # Every trial's run folder is kept (--keep all): its metrics.csv holds the trial's epochs.
    for trial in payload["trials"]:
        lines = (Path(trial["run_dir"]) / "metrics.csv").read_text().splitlines()
        assert len(lines) == 1 + 3
    # The study is Optuna's: `optuna` tools read the same trials from study.db.
    study = study_of(tmp_path / "study", payload["study"])
    assert [t.value for t in study.trials] == [t["value"] for t in payload["trials"]]


def test_best_yaml_replays_to_the_same_metric_and_hparams_are_logged(invoke, data, tmp_path):
    out = tmp_path / "study"
    payload = tune_json(invoke, data, "--trials", "3", "--out", out, "--keep", "best",
                        "--sampler", "random", "--seed", "3")
    best = payload["best"]
    assert Path(payload["best_config"]) == out / "best.yaml"
    replay = invoke("finetune", "--config", out / "best.yaml", "--out", tmp_path / "replay",
                    "--json")
    assert replay.exit_code == 0, replay.output
    assert json.loads(replay.stdout)["best_val_acc1"] == pytest.approx(best["value"], abs=1e-9)
    settings = yaml.safe_load((out / "best.yaml").read_text())
    assert settings["lr"] == pytest.approx(best["params"]["lr"]) and settings["seed"] == 3
    # --keep best: only the best trial's run folder is left.
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"{best['number']:04d}"]
    # A trial keeps its best weights, not the per-epoch checkpoints nobody resumes.
    kept = out / "trials" / f"{best['number']:04d}"
    assert (kept / "model.safetensors").is_file() and not (kept / "checkpoints").exists()
    # TensorBoard: every trial under one logdir, its hparams and its metric.
    logs = sorted((out / "tensorboard").iterdir())
    assert [p.name for p in logs] == [f"{t['number']:04d}" for t in payload["trials"]]
    for log, trial in zip(logs, payload["trials"], strict=True):
        events = read_events(log)
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
        (point,) = events.Scalars("hparam/val_acc")
        assert point.value == pytest.approx(trial["value"], abs=1e-6)
        assert len(events.Scalars("tune/val_acc")) == 3


def test_pruning_stops_a_bad_trial_early(invoke, data, tmp_path):
    out = tmp_path / "study"
    common = ("--study", "prune", "--out", out)
    good = tune_json(invoke, data, "--space", "lr=0.03..0.3:log", "--trials", "3", *common,
                     epochs=4)
    assert [t["state"] for t in good["trials"]] == ["complete"] * 3
    # A study's ranges may change between runs (its lists of choices may not).
    bad = tune_json(invoke, data, "--space", f"lr={BAD_LR}..2e-6:log", "--trials", "1",
                    *common, epochs=4)
    trial = bad["trials"][-1]
    assert trial["state"] == "pruned" and trial["epochs"] == 2, trial
    assert trial["reason"].startswith("pruned after epoch 2")
    run = Path(trial["run_dir"])
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 2
    result = yaml.safe_load((run / "result.yaml").read_text())
    assert result["status"] == "stopped early" and result["epochs_trained"] == 2


def test_a_study_keeps_its_lists_of_choices(invoke, data, tmp_path):
    tune_json(invoke, data, "--sampler", "grid", "--space", "opt=adamw,sgd", "--trials", "1",
              "--out", tmp_path, "--study", "s", epochs=1)
    result = invoke("tune", *args(data, epochs=1), "--space", "opt=adamw,adam", "--study", "s",
                    "--out", tmp_path)
    assert result.exit_code == 2
    assert "study s searched opt over adamw,sgd" in flat(result.stderr)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(invoke, data, tmp_path):
    # Each end of each range is valid alone; epochs 2 with 2 warm-up epochs is not.
    payload = tune_json(invoke, data, "--sampler", "grid", "--space", "epochs=2..3",
                        "--space", "warmup-epochs=1..2", "--trials", "4", "--out", tmp_path,
                        epochs=None)
    states = {(t["params"]["epochs"], t["params"]["warmup-epochs"]): t for t in
              payload["trials"]}
    assert len(states) == 4
    failed = states[(2, 2)]
    assert failed["state"] == "fail"
    assert "--warmup-epochs must be smaller than --epochs" in failed["reason"]
    assert all(t["state"] == "complete" for key, t in states.items() if key != (2, 2))


def test_trials_that_all_fail_alike_stop_the_study(invoke, data, tmp_path):
    result = invoke("tune", *args(tmp_path / "missing"), "--trials", "10", "--out", tmp_path)
    assert result.exit_code == 1
    assert "3 trials in a row failed" in result.stderr
    assert "Traceback" not in result.output
    study = study_of(tmp_path, _only_study(tmp_path))
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3


def _only_study(out: Path) -> str:
    import optuna

    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{out / 'study.db'}")
    return summary.study_name


@pytest.mark.parametrize("url", ["sqlite:////no/such/folder/s.db", "journal:/no/such/dir/s.log",
                                 "nosuchdb://host/db", "postgresql://u:secret@127.0.0.1:1/db"])
def test_an_unreachable_storage_is_one_line(invoke, data, url):
    result = invoke("tune", *args(data), "--storage", url)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: cannot open the study storage"), lines
    assert len(lines) == 2 and lines[1].startswith("hint:")
    assert "secret" not in result.stderr


def test_a_study_made_for_another_metric_is_not_continued(invoke, data, tmp_path):
    tune_json(invoke, data, "--trials", "1", "--study", "s", "--out", tmp_path)
    result = invoke("tune", *args(data), "--trials", "1", "--study", "s", "--out", tmp_path,
                    "--metric", "val_loss")
    assert result.exit_code == 1 and "study s optimises val_acc, not val_loss" in result.stderr


def test_sampler_takes_the_search_and_the_data_sampler(invoke, data, tmp_path):
    payload = tune_json(invoke, data, "--sampler", "random", "--sampler", "balanced",
                        "--trials", "1", "--out", tmp_path, epochs=1)
    settings = yaml.safe_load((Path(payload["trials"][0]["run_dir"]) / "args.yaml").read_text())
    assert settings["sampler"] == "balanced"
    result = invoke("tune", *args(data), "--sampler", "tpe", "--sampler", "grid")
    assert result.exit_code == 2 and "at most one search sampler" in flat(result.stderr)


def test_timeout_without_trials_runs_until_it_is_up(invoke, data, tmp_path):
    started = time.monotonic()
    payload = tune_json(invoke, data, "--timeout", "2", "--out", tmp_path, epochs=1)
    # No trial starts after 2 s; the one running then finishes (a trial here takes ~1 s).
    assert 1 <= payload["ran"] < 20
    assert time.monotonic() - started < 60


def test_metric_must_fit_the_task(invoke, data):
    result = invoke("tune", *args(data), "--metric", "val_miou")
    assert result.exit_code == 2 and "not measured by --task classify" in flat(result.stderr)


# -- many processes, interruptions -------------------------------------------------------

def _env(session_cache: Path) -> dict:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "HF_HUB_OFFLINE": "1",
            "TB_CACHE_DIR": str(session_cache), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_processes_share_one_study(data, tmp_path, session_cache, kind):
    # Both start on a storage that does not exist yet: they race to make it.
    storage = (f"journal:{tmp_path / 'shared.log'}" if kind == "journal"
               else f"sqlite:///{tmp_path / 'shared.db'}")
    procs = [subprocess.Popen([str(TB), "tune", *args(data), "--study", "shared", "--storage",
                               storage, "--trials", "3", "--pruner", "none",
                               "--out", str(tmp_path / f"m{n}"),
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(session_cache)) for n in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    from toolbox.tune import open_storage

    study = study_of(tmp_path, "shared", open_storage(storage))
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    # Each process ran its 3, each trial in its own process's folder, none twice.
    folders = [Path(t.user_attrs["run_dir"]) for t in study.trials]
    assert len(set(folders)) == 6 and all((f / "model.safetensors").is_file() for f in folders)
    assert sorted(f.parent.parent.name for f in folders) == ["m0"] * 3 + ["m1"] * 3
    # Both report the whole study; different trial parameters (per-trial sampler seeds).
    for out, _ in outputs:
        assert len(json.loads(out)["trials"]) >= 3
    assert len({t.params["lr"] for t in study.trials}) == 6


@pytest.mark.parametrize("message", ["table studies already exists", "database is locked"])
def test_a_process_that_loses_the_race_to_make_the_tables_tries_again(tmp_path, monkeypatch,
                                                                     message):
    """What the other process of a job array makes a moment earlier fails this one's first
    try (SQLite: a table it found missing, then made by the other, or the file locked)."""
    import optuna
    from sqlalchemy.exc import OperationalError

    from toolbox.tune import open_storage

    real, calls = optuna.storages.RDBStorage, []

    def racing(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            real(*a, **k)  # the other process's tables
            raise OperationalError("CREATE TABLE studies", {}, Exception(message))
        return real(*a, **k)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    storage = open_storage(f"sqlite:///{tmp_path / 'shared.db'}")
    assert len(calls) == 2 and storage.get_all_studies() == []


@pytest.mark.slow
def test_an_interrupted_study_continues(data, tmp_path, session_cache):
    command = [str(TB), "tune", *args(data), "--pruner", "none", "--trials", "40", "--study",
               "s", "--out", str(tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(session_cache), preexec_fn=ctrl_c_delivered)
    deadline = time.monotonic() + 300
    done = []
    while time.monotonic() < deadline and len(done) < 2:
        time.sleep(0.5)
        if (tmp_path / "study.db").is_file():
            try:
                done = [t for t in study_of(tmp_path, "s").trials if t.state.name == "COMPLETE"]
            except KeyError:  # the study is not created yet
                done = []
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command to go on" in err and "Traceback" not in err
    before = study_of(tmp_path, "s").trials
    finished = {t.number: t.value for t in before if t.state.name == "COMPLETE"}
    assert len(finished) >= 2
    stopped = [t for t in before if t.state.name != "COMPLETE"]
    assert len(stopped) <= 1  # the trial Ctrl-C ended (none if it came between two)
    assert all(t.state.name == "FAIL" and t.user_attrs.get("reason") == "interrupted"
               for t in stopped)
    again = subprocess.run([*command[:command.index("--trials") + 1], "2",
                            *command[command.index("--trials") + 2:], "--json"],
                           capture_output=True, text=True, env=_env(session_cache), timeout=300)
    assert again.returncode == 0, again.stderr
    payload = json.loads(again.stdout)
    after = {t["number"]: t for t in payload["trials"]}
    assert len(after) == len(before) + 2
    assert all(after[n]["value"] == value for n, value in finished.items())
    assert [after[n]["state"] for n in sorted(after)[-2:]] == ["complete", "complete"]


@pytest.mark.slow
def test_a_segmentation_study_optimises_dice(invoke, tmp_path):
    from segment_helpers import fashion_segmentation

    seg = fashion_segmentation(tmp_path / "seg", root=tmp_path / "fmnist")
    result = invoke("tune", "--task", "segment", "--data", seg, "--model", "test_resnet",
                    "--no-pretrained", "--img-size", "32", "--batch-size", "16", "--workers",
                    "0", "--epochs", "2", "--metric", "val_dice", "--trials", "2",
                    "--pruner", "none", "--out", tmp_path / "study", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["direction"] == "maximize"
    for trial in payload["trials"]:
        # The default space of a segmentation study has no label smoothing.
        assert sorted(trial["params"]) == ["lr", "weight-decay"]
        with open(Path(trial["run_dir"]) / "metrics.csv", newline="") as handle:
            dice = [float(row["val_dice"]) for row in csv.DictReader(handle)]
        assert trial["value"] == pytest.approx(max(dice), abs=1e-5)

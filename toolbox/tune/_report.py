"""A study read back from its storage: a row per trial, the best trial, Optuna's parameter
importances, and `best.yaml`, the best trial's settings that `tb finetune --config` replays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolbox.tensorboard import tensorboard_command
from toolbox.tune._metric import Metric
from toolbox.tune._results import (
    CONFIG_ATTR,
    EPOCHS_ATTR,
    REASON_ATTR,
    RUN_DIR_ATTR,
    TrialRow,
    TuneResult,
)

BEST_FILE = "best.yaml"
MIN_TRIALS_FOR_IMPORTANCES = 2


def trial_row(trial: Any) -> TrialRow:
    """One Optuna `FrozenTrial` as a row."""
    duration = None
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        duration = (trial.datetime_complete - trial.datetime_start).total_seconds()
    run_dir = trial.user_attrs.get(RUN_DIR_ATTR)
    return TrialRow(number=trial.number, state=trial.state.name.lower(), value=trial.value,
                    params=dict(trial.params), duration_s=duration,
                    epochs=int(trial.user_attrs.get(EPOCHS_ATTR, len(trial.intermediate_values))),
                    run_dir=Path(run_dir) if run_dir else None,
                    reason=str(trial.user_attrs.get(REASON_ATTR, "")))


def summarize(study: Any, *, name: str, storage: str, out: Path, metric: Metric, ran: int,
              interrupted: bool, logdir: Path) -> TuneResult:
    """The whole study (every process's trials) as a result; best.yaml written."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    rows = [trial_row(t) for t in trials]
    notes: list[str] = []
    best = best_config = None
    try:
        best_trial = study.best_trial
    except ValueError:  # no trial finished
        best_trial = None
        notes.append("no trial has finished yet, so there is no best.yaml")
    if best_trial is not None:
        best = next(r for r in rows if r.number == best_trial.number)
        best_config = write_best(out, best_trial, name, metric)
        if best_config is None:
            notes.append(f"trial {best.number} holds no tb settings (it was not made by "
                         f"tb tune), so there is no best.yaml")
    importances = _importances(study, rows, notes)
    return TuneResult(study=name, storage=storage, out=out, metric=metric.name,
                      direction=metric.direction, trials=rows, ran=ran, best=best,
                      best_config=best_config, importances=importances,
                      tensorboard_command=tensorboard_command(logdir),
                      interrupted=interrupted, notes=notes)


def _importances(study: Any, rows: list[TrialRow], notes: list[str]) -> dict[str, float]:
    """Optuna's parameter importances (its default evaluator), or {} with a note why not."""
    import optuna

    complete = sum(r.state == "complete" for r in rows)
    if complete < MIN_TRIALS_FOR_IMPORTANCES:
        notes.append(f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCES} "
                     f"finished trials; the study has {complete}")
        return {}
    import warnings

    try:
        with warnings.catch_warnings():  # "importances will be equal": the table shows it
            warnings.simplefilter("ignore", UserWarning)
            found = optuna.importance.get_param_importances(study)
        return {k: float(v) for k, v in found.items()}
    except (ValueError, RuntimeError) as exc:  # e.g. every trial drew the same values
        first = str(exc).strip().splitlines()
        notes.append(f"no parameter importances: {first[0] if first else type(exc).__name__}")
        return {}


def write_best(out: Path, trial: Any, study: str, metric: Metric) -> Path | None:
    """best.yaml in `out`: the settings of `trial`, a comment saying where they come from."""
    import yaml

    from toolbox.fileio import atomic_write_text

    config = trial.user_attrs.get(CONFIG_ATTR)
    if not isinstance(config, dict):
        return None
    path = out / BEST_FILE
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# tb tune: the best trial of study {study}: trial {trial.number}, "
              f"{metric.name} {trial.value:.6g}\n"
              f"# replay it with: tb finetune --config {path}\n")
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path

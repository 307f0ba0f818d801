"""What a study reports: its start, one row per trial, and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A trial's user attributes in the study's storage (what `optuna` tools see of tb's trials).
RUN_DIR_ATTR = "run_dir"
CONFIG_ATTR = "config"  # the trial's whole FinetuneConfig: best.yaml is the best trial's
REASON_ATTR = "reason"  # why a trial failed or was pruned
EPOCHS_ATTR = "epochs"  # epochs trained


@dataclass
class TuneStart:
    """What is about to run: shown as the table before the first trial."""

    study: str
    storage: str  # the URL with any password hidden
    out: Path
    metric: str
    direction: str
    space: list[str]  # each parameter's canonical --space text
    sampler: str
    pruner: str
    trials: int | None
    timeout: float | None
    seed: int
    existing: int  # trials the study held before this process started
    base: str  # model, mode and epochs of every trial, in words


@dataclass
class TrialRow:
    """One trial, from any process of the study."""

    number: int
    state: str  # complete, pruned, fail, running or waiting
    value: float | None  # the metric (a pruned trial: at its last epoch)
    params: dict[str, Any]  # by --space name
    duration_s: float | None
    epochs: int  # epochs that reported a value
    run_dir: Path | None
    reason: str = ""  # why it failed or was pruned


@dataclass
class TuneResult:
    """The study after this process's trials."""

    study: str
    storage: str
    out: Path
    metric: str
    direction: str
    trials: list[TrialRow]  # every trial of the study, by number
    ran: int  # trials this process ran
    best: TrialRow | None
    best_config: Path | None  # best.yaml: `tb finetune --config` replays the best trial
    importances: dict[str, float]  # Optuna's parameter importances (empty: see notes)
    tensorboard_command: str  # hparams of every trial under one logdir
    interrupted: bool = False  # Ctrl-C: the finished trials are kept; rerun to go on
    notes: list[str] = field(default_factory=list)

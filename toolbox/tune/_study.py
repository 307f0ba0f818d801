"""`tune()`: a hyper-parameter study on Optuna whose trials are `tb finetune` runs.

A study lives in Optuna's storage (`_storage`), so any number of `tb tune` processes, on one
machine or many, started with the same `--study` and `--storage` share its trials; and the same
command run again (after Ctrl-C, a killed machine or a finished study) continues it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolbox import interrupt
from toolbox.errors import ToolboxError, UsageError, unknown_name
from toolbox.progress import NullProgress, Progress
from toolbox.train import FinetuneConfig
from toolbox.tune._metric import Metric, metric_for
from toolbox.tune._report import summarize
from toolbox.tune._results import TrialRow, TuneResult, TuneStart
from toolbox.tune._sampling import make_pruner, make_sampler
from toolbox.tune._space import SpaceParam, parse_space
from toolbox.tune._storage import open_storage, quiet_optuna, shown, storage_url
from toolbox.tune._trial import TrialRunner

KEEP = {"all": "every trial's run folder", "best": "only the best trial's run folder"}
TRIALS_DIR, LOGDIR = "trials", "tensorboard"
METRIC_ATTR = "tb_metric"  # the study's metric, so a continuation cannot switch it
# A study stops when this many trials of a process fail in a row for one reason: a reason
# every trial meets (a data folder that is not there) is not worth a study of failures.
SAME_FAILURES = 3


def _check_choices(study: Any, params: list[SpaceParam], grid: bool) -> None:
    """Optuna lets a study's ranges change from one run to the next, but not a list of choices,
    nor a range into a list: say so before every trial fails on it."""
    from optuna.distributions import CategoricalDistribution

    before: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, distribution in trial.distributions.items():
            before.setdefault(name, distribution)
    for param in params:
        old = before.get(param.flag)
        if old is None:
            continue
        listed = grid or param.kind == "choice"
        was_listed = isinstance(old, CategoricalDistribution)
        if listed == was_listed and (not listed or list(old.choices) == param.grid()):
            continue
        earlier = (",".join(str(c).lower() if isinstance(c, bool) else str(c)
                            for c in old.choices) if was_listed else "a range")
        raise UsageError(f"study {study.study_name} searched {param.flag} over {earlier}; a "
                         f"study's ranges may change, its lists of choices may not",
                         f"search {param.flag} as before, or pass another --study",
                         param="--space")


@dataclass(frozen=True)
class TuneSettings:
    """The options of a study (the trials' own settings are a `FinetuneConfig`)."""

    trials: int | None = 20  # this process's trials (Optuna's n_trials); None: until timeout
    timeout: float | None = None  # seconds; no new trial starts after it
    space: tuple[str, ...] = ()  # --space values; () is the default space of the mode
    metric: str | None = None  # None: val_acc (classify) or val_miou (segment)
    study: str | None = None  # None: named for the model and a digest of the settings
    storage: str | None = None  # None: sqlite:///OUT/study.db
    sampler: str = "tpe"
    pruner: str = "median"
    out: str | None = None  # None: runs/tune-<study>
    keep: str = "all"


def tune(config: FinetuneConfig, settings: TuneSettings, *, progress: Progress | None = None,
         on_start: Callable[[TuneStart], None] | None = None,
         on_trial: Callable[[TrialRow], None] | None = None) -> TuneResult:
    """Run this process's trials of a study and report the whole study.

    Args:
        config: every trial's settings before the searched ones are filled in.
        settings: the study's options.
        progress: a task per trial (its epochs) and notes.
        on_start: called once with what is about to run.
        on_trial: called after each trial this process ran.

    Returns:
        The study, interrupted or not (Ctrl-C ends the running trial, recorded as failed
        "interrupted"; every finished one is kept, and running the same command goes on).

    Raises:
        UsageError: a bad space, metric, sampler, pruner or count, before anything runs.
        ToolboxError: the storage cannot be opened; the study exists for another metric;
            trials keep failing for one reason.
    """
    import optuna

    progress = progress or NullProgress()
    config = dataclasses.replace(config)
    config.validate()
    metric = metric_for(settings.metric, config.task)
    params = parse_space(settings.space, config)
    _check(settings)
    sampler = make_sampler(settings.sampler, params, config.seed)
    pruner = make_pruner(settings.pruner)
    name = settings.study or default_study(config, metric, params)
    out = Path(settings.out) if settings.out else Path("runs") / f"tune-{_safe(name)}"
    if settings.storage is None:
        out.mkdir(parents=True, exist_ok=True)
    url = storage_url(settings.storage, out)
    storage = open_storage(url)
    with quiet_optuna():
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    pruner=pruner, direction=metric.direction,
                                    load_if_exists=True)
    _claim(study, metric)
    _check_choices(study, params, settings.sampler == "grid")
    existing = len(study.get_trials(deepcopy=False))
    if on_start is not None:
        on_start(TuneStart(study=name, storage=shown(url), out=out, metric=metric.name,
                           direction=metric.direction, space=[p.spec() for p in params],
                           sampler=settings.sampler, pruner=settings.pruner,
                           trials=settings.trials, timeout=settings.timeout, seed=config.seed,
                           existing=existing, base=_base(config)))
    runner = TrialRunner(config, params, metric, grid=settings.sampler == "grid",
                         prune=settings.pruner != "none", trials_dir=out / TRIALS_DIR,
                         logdir=out / LOGDIR, progress=progress)
    watch = _Watch(out / TRIALS_DIR, settings.keep == "best", on_trial)
    interrupted = False
    try:
        with quiet_optuna():
            study.optimize(runner, n_trials=settings.trials, timeout=settings.timeout,
                           catch=(Exception,), callbacks=[watch])
    except KeyboardInterrupt:
        interrupted = True
    except Exception:
        # Ctrl-C inside Optuna's bookkeeping can surface as another error on its way out.
        if not interrupt.pressed():
            raise
        interrupted = True
    # A Ctrl-C dropped after the last trial's last check (`_Watch` stopped the study for it).
    interrupted = interrupted or interrupt.pressed()
    if interrupted:
        runner.abandon(study)
    if watch.failing:
        raise ToolboxError(f"{SAME_FAILURES} trials in a row failed: {watch.failing}",
                           "fix what the trials share; the study keeps their records")
    if settings.keep == "best":
        watch.clear(study)
    return summarize(study, name=name, storage=shown(url), out=out, metric=metric,
                     ran=runner.ran, interrupted=interrupted, logdir=out / LOGDIR)


def _check(settings: TuneSettings) -> None:
    if settings.trials is not None and settings.trials < 1:
        raise UsageError("--trials must be at least 1")
    if settings.timeout is not None and not settings.timeout > 0:
        raise UsageError("--timeout must be above 0 seconds")
    if settings.keep not in KEEP:
        raise unknown_name("--keep value", settings.keep, KEEP,
                           f"choose one of {', '.join(KEEP)}", param="--keep")


def default_study(config: FinetuneConfig, metric: Metric, params: list[SpaceParam]) -> str:
    """The study a command makes when `--study` is not given: the model's name and a digest of
    what makes its trials comparable (every fixed setting, the metric and the space). The same
    command continues its study; another data set, model, seed or space starts another."""
    searched = {p.name for p in params}
    where = {"out", "workers", "device", "cache", "feature_cache", "feature_cache_dir"}
    fixed = {k: v for k, v in config.to_dict().items() if k not in searched | where}
    text = json.dumps({"settings": fixed, "metric": metric.name,
                       "space": [p.spec() for p in params]}, sort_keys=True)
    return f"{_safe(config.model)}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"


def _safe(name: str) -> str:
    """`name` fit for a folder name (hub names hold ':' and '/')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "study"


def _base(config: FinetuneConfig) -> str:
    data = config.data or config.dataset or "the demo digits"
    return f"{config.model}, {config.mode} training, {config.epochs} epochs on {data}"


def _claim(study: Any, metric: Metric) -> None:
    """Record the study's metric; refuse to continue a study made for another one."""
    recorded = study.user_attrs.get(METRIC_ATTR)
    if recorded is None:
        if study.direction.name.lower() != metric.direction:
            raise ToolboxError(f"study {study.study_name} exists and goes the other way "
                               f"({study.direction.name.lower()})",
                               "choose another --study name")
        study.set_user_attr(METRIC_ATTR, metric.name)
    elif recorded != metric.name:
        raise ToolboxError(f"study {study.study_name} optimises {recorded}, not {metric.name}",
                           f"pass --metric {recorded} to continue it, or another --study")


class _Watch:
    """Optuna's callback after each trial of this process: report it, keep only the best
    trial's folder (`--keep best`), and stop on failures that every trial meets."""

    def __init__(self, trials_dir: Path, keep_best: bool,
                 on_trial: Callable[[TrialRow], None] | None) -> None:
        self.trials_dir, self.keep_best = trials_dir, keep_best
        self.on_trial = on_trial
        self.failures: list[str] = []
        self.failing: str | None = None

    def __call__(self, study: Any, trial: Any) -> None:
        from toolbox.tune._report import trial_row

        row = trial_row(trial)
        if interrupt.pressed():  # a Ctrl-C dropped inside Optuna's bookkeeping
            study.stop()
        self.failures = [*self.failures, row.reason] if row.state == "fail" else []
        if len(self.failures) >= SAME_FAILURES and len(set(self.failures[-SAME_FAILURES:])) == 1:
            self.failing = self.failures[-1]
            study.stop()
        if self.keep_best:
            self.clear(study)
        if self.on_trial is not None:
            self.on_trial(row)

    def clear(self, study: Any) -> None:
        """Remove the run folders of finished trials other than the best (folders of trials
        still running, in this process or another, are left alone)."""
        from optuna.trial import TrialState

        if not self.trials_dir.is_dir():
            return
        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
        try:
            best = study.best_trial.number
        except ValueError:  # no finished trial yet
            best = None
        for folder in self.trials_dir.iterdir():
            number = int(folder.name) if folder.name.isdigit() else None
            if number is not None and number != best and states.get(number) in done:
                shutil.rmtree(folder, ignore_errors=True)


"""One trial of a study: a `tb finetune` run in this process with the trial's parameters, its
epochs reported to Optuna (the pruner may end it after any of them), its outcome recorded on
the trial, and its hyper-parameters in the study's TensorBoard log.

Trials run in the calling process, one after another, not as subprocesses: torch, timm and the
data index load once, and with `--freeze` the feature cache's sets stay open between trials,
so a trial after the first costs its head's training and little else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolbox import interrupt
from toolbox.errors import one_line
from toolbox.progress import NullProgress, Progress
from toolbox.train import FinetuneConfig, RunStart
from toolbox.tune._metric import Metric
from toolbox.tune._results import CONFIG_ATTR, EPOCHS_ATTR, REASON_ATTR, RUN_DIR_ATTR
from toolbox.tune._space import SpaceParam


def trial_folder(root: Path, number: int) -> Path:
    """A trial's folder under `root` (its run folder, or its TensorBoard log): by its number,
    which the storage gives to one trial only, so processes sharing a folder never collide."""
    return root / f"{number:04d}"


@dataclass
class TrialRunner:
    """The objective Optuna calls: trains one trial, returns its metric."""

    base: FinetuneConfig
    params: list[SpaceParam]
    metric: Metric
    grid: bool  # suggest every parameter from its list of values (--sampler grid)
    prune: bool
    trials_dir: Path
    logdir: Path
    progress: Progress
    shown: set[str] = field(default_factory=set)  # run warnings and notes, shown once
    ran: int = 0  # trials this runner started
    last: Any = None  # the last one (an optuna.Trial)

    def __call__(self, trial: Any) -> float:
        import optuna

        from toolbox.train import StopRun, finetune

        self.last = trial
        interrupt.check()  # a Ctrl-C dropped between trials (see toolbox.interrupt)
        try:
            values = {p.name: p.suggest(trial, self.grid) for p in self.params}
        except ValueError as exc:  # Optuna's rules on a study's parameters (see _study)
            trial.set_user_attr(REASON_ATTR, _reason(exc))
            raise
        run_dir = trial_folder(self.trials_dir, trial.number)
        config = dataclasses.replace(self.base, **values, out=str(run_dir))
        trial.set_user_attr(RUN_DIR_ATTR, str(run_dir.resolve()))
        # What best.yaml holds when this trial wins: its settings, without its folder (a replay
        # makes a new one).
        trial.set_user_attr(CONFIG_ATTR, {**config.to_dict(), "out": None})
        curve: list[float] = []
        pruned: list[str] = []

        def on_epoch(row: Any) -> None:
            value = self.metric.of(row)
            curve.append(value)
            trial.report(value, row.epoch)
            self.progress.advance()
            if self.prune and row.epoch < config.epochs and trial.should_prune():
                pruned.append(f"pruned after epoch {row.epoch}: {self.metric.name} {value:.4g} "
                              f"is worse than the median of the earlier trials there")
                raise StopRun(pruned[0])

        self.ran += 1
        self.progress.start(f"trial {trial.number}", total=config.epochs, unit="epochs")
        try:
            finetune(config, progress=NullProgress(),
                     on_start=lambda start: self._on_start(trial.number, start),
                     on_epoch=on_epoch, checkpoints=False)
        except KeyboardInterrupt:
            trial.set_user_attr(REASON_ATTR, "interrupted")
            raise
        except Exception as exc:
            trial.set_user_attr(REASON_ATTR, _reason(exc))
            raise
        finally:
            self.progress.finish()
            trial.set_user_attr(EPOCHS_ATTR, len(curve))
            if curve:
                log_trial(trial_folder(self.logdir, trial.number),
                          {p.flag: values[p.name] for p in self.params}, self.metric.name,
                          curve, self.metric.best(curve))
        if pruned:
            trial.set_user_attr(REASON_ATTR, pruned[0])
            raise optuna.TrialPruned(pruned[0])
        return self.metric.best(curve)

    def abandon(self, study: Any) -> None:
        """After Ctrl-C: record the last trial as failed ("interrupted") if the press came while
        Optuna was still recording it, which leaves it running in the storage for ever."""
        from optuna.trial import TrialState

        if self.last is None:
            return
        state = next(t.state for t in study.get_trials(deepcopy=False)
                     if t.number == self.last.number)
        if state == TrialState.RUNNING:
            self.last.set_user_attr(REASON_ATTR, "interrupted")
            study.tell(self.last, state=TrialState.FAIL)

    def _on_start(self, number: int, start: RunStart) -> None:
        """A run's warnings and notes, each once for the whole study; the first run's feature
        pass (later ones reuse what it computed)."""
        lines = [*start.warnings, *start.notes]
        if start.features and self.ran == 1:
            lines.append(f"trial {number}: features {start.features}")
        for line in lines:
            if line not in self.shown:
                self.shown.add(line)
                self.progress.note(line)


def _reason(exc: BaseException) -> str:
    """Why a trial failed, in one line (tb's own errors as they read; others with their type)."""
    from toolbox.errors import ToolboxError

    text = str(exc) if isinstance(exc, ToolboxError) else f"{type(exc).__name__}: {exc}"
    return one_line(text.strip()) or type(exc).__name__


def log_trial(logdir: Path, hparams: dict[str, Any], metric: str, curve: list[float],
              value: float) -> None:
    """A trial's hyper-parameters and metric in TensorBoard's HParams tab (its own run in the
    study's log dir), with the metric per epoch as a scalar."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    from toolbox.tensorboard import summary_writer

    with summary_writer(logdir) as writer:
        for epoch, point in enumerate(curve, start=1):
            writer.add_scalar(f"tune/{metric}", point, epoch)
        for summary in hparams_summaries(hparams, {f"hparam/{metric}": value}):
            writer.file_writer.add_summary(summary)
        writer.add_scalar(f"hparam/{metric}", value, len(curve))

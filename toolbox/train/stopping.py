"""`--patience`: when a run stops early, decided from its history alone (so resume agrees),
and `result.yaml`, which says how a run ended."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolbox import runs
from toolbox.fileio import atomic_write_text


class StopRun(Exception):
    """Raised by an `on_epoch` callback to end the run after that epoch, as `--patience` does:
    the epoch is saved, result.yaml says "stopped early" with `reason`, and `finetune` returns
    (how `tb tune`'s pruner stops a trial without optuna in the trainer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def early_stop_reason(scores: Sequence[float], patience: int | None, min_delta: float
                      ) -> str | None:
    """Why to stop after the last of `scores` (validation accuracy per epoch), or None.

    An epoch improves when its score beats the best so far by more than `min_delta`; the run
    stops once `patience` epochs in a row did not.
    """
    if patience is None or not scores:
        return None
    best, best_epoch = float("-inf"), 0
    for epoch, score in enumerate(scores, start=1):
        if score > best + min_delta:
            best, best_epoch = score, epoch
    stale = len(scores) - best_epoch
    if stale < patience:
        return None
    return (f"early stop after epoch {len(scores)}: validation accuracy did not improve by more "
            f"than {min_delta:g} for {stale} epochs (best {100 * best:.1f}% at epoch "
            f"{best_epoch})")


def write_result(run_dir: Path, status: str, reason: str, state: Any) -> None:
    """result.yaml: how the run (a `TrainState`) ended, in words a person and a script read."""
    import yaml

    atomic_write_text(run_dir / runs.RESULT_FILE, yaml.safe_dump({
        "status": status, "reason": reason, "epochs_trained": state.epoch,
        "epochs_planned": state.cfg.epochs, "best_epoch": state.best_epoch,
        "best_val_acc1": state.best_acc1, "best_weights": state.best_weights,
    }, sort_keys=False))

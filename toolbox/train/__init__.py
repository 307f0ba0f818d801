"""Fine-tuning service behind `tb finetune`: data, model, loop, checkpoints, DDP, TensorBoard."""

from typing import TYPE_CHECKING, Any

from toolbox.train.config import DEFAULT_LR, DEFAULT_MODEL, DEMO_IMG_SIZE, FinetuneConfig

if TYPE_CHECKING:
    from toolbox.train.run import EpochRow, FinetuneResult, RunStart, finetune

__all__ = ["DEFAULT_LR", "DEFAULT_MODEL", "DEMO_IMG_SIZE", "EpochRow", "FinetuneConfig",
           "FinetuneResult", "RunStart", "finetune"]

_RUN_NAMES = {"EpochRow", "FinetuneResult", "RunStart", "finetune"}


def __getattr__(name: str) -> Any:
    # The run machinery imports torch; the config and its defaults do not, so `tb finetune
    # --help` can show the defaults without paying for torch.
    if name in _RUN_NAMES:
        from toolbox.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'toolbox.train' has no attribute '{name}'")

"""Fine-tuning service behind `tb finetune`: data, model, loop, checkpoints, DDP, TensorBoard."""

from toolbox.train.config import FinetuneConfig
from toolbox.train.distributed import is_main_process
from toolbox.train.results import EpochRow, FinetuneResult, RunStart
from toolbox.train.run import ResumeOverrides, finetune

__all__ = [
    "EpochRow",
    "FinetuneConfig",
    "FinetuneResult",
    "ResumeOverrides",
    "RunStart",
    "finetune",
    "is_main_process",
]

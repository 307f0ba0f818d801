"""Fine-tuning service behind `tb finetune`: data, model, loop, checkpoints, DDP, TensorBoard."""

from toolbox.train.config import DEFAULT_LR, DEMO_IMG_SIZE, FinetuneConfig
from toolbox.train.distributed import is_main_process
from toolbox.train.results import EpochRow, FinetuneResult, RunStart
from toolbox.train.run import ResumeOverrides, finetune

__all__ = [
    "DEFAULT_LR",
    "DEMO_IMG_SIZE",
    "EpochRow",
    "FinetuneConfig",
    "FinetuneResult",
    "ResumeOverrides",
    "RunStart",
    "finetune",
    "is_main_process",
]

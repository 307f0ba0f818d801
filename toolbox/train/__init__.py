"""Fine-tuning service behind `tb finetune`: data, model, loop, checkpoints, DDP, TensorBoard."""

from toolbox.train.config import FinetuneConfig
from toolbox.train.run import EpochRow, FinetuneResult, RunStart, finetune

__all__ = ["EpochRow", "FinetuneConfig", "FinetuneResult", "RunStart", "finetune"]

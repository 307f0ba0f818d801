"""Fine-tuning service behind `tb finetune`: data, model, loop, checkpoints, DDP, TensorBoard."""

from toolbox.train.config import DEFAULT_LR, DEMO_IMG_SIZE, FinetuneConfig
from toolbox.train.config_file import config_yaml, read_config_file, resolve_config
from toolbox.train.distributed import is_main_process
from toolbox.train.results import EpochRow, FinetuneResult, RunStart
from toolbox.train.resume import plan_resume
from toolbox.train.run import ResumeOverrides, finetune
from toolbox.train.stopping import StopRun

__all__ = [
    "DEFAULT_LR",
    "DEMO_IMG_SIZE",
    "EpochRow",
    "FinetuneConfig",
    "FinetuneResult",
    "ResumeOverrides",
    "RunStart",
    "StopRun",
    "config_yaml",
    "finetune",
    "is_main_process",
    "plan_resume",
    "read_config_file",
    "resolve_config",
]

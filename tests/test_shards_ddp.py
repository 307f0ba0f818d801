"""Shards under `torchrun` with 2 processes on the CPU: each process reads its own shards with
two loader workers, together every key once an epoch, and a real fine-tuning run trains on
them with the same number of steps on both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from data_format_helpers import image_tree, shard_keys

from toolbox.datasets import pack

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# Run by each torchrun process: its loader over the shards, two workers, two epochs' keys.
READER = """
import json, sys
from toolbox.models import ModelMeta
from toolbox.train.distributed import launch_ranks
from toolbox.train.shard_data import shard_run_data
from toolbox.train.splits import load_splits

rank, world, _ = launch_ranks()
splits = load_splits(data=sys.argv[1], dataset=None, root=None, val_split=0.2, seed=0)
meta = ModelMeta("test_resnet", 3, splits.classes, input_size=(3, 16, 16))
data = shard_run_data(splits, meta, batch_size=4, seed=3, workers=2, augment=None, buffer=6,
                      cache=None, sampler="shuffle", rank=rank, world_size=world,
                      record_keys=True)
epochs = {}
for epoch in (1, 2):
    steps = sum(1 for _ in data.loader.batches(epoch))
    epochs[epoch] = {"keys": data.loader.keys, "steps": steps}
with open(f"{sys.argv[2]}/keys-{rank}.json", "w") as handle:
    json.dump(epochs, handle)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _torchrun(port: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(port), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=400)


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    # 36 training images in shards of 3 (12 shards: 6 a rank, 3 a loader worker).
    src = image_tree(tmp_path / "src", per_class=12, val_per_class=2)
    pack(src, tmp_path / "shards", shard_size=7000)
    return tmp_path / "shards"


@pytest.mark.timeout(600)
def test_two_processes_with_two_workers_read_every_key_once_an_epoch(shards, tmp_path):
    script = tmp_path / "reader.py"
    script.write_text(READER)
    done = _torchrun(29531, str(script), str(shards), str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"keys-{r}.json").read_text()) for r in (0, 1)]
    everything = Counter(shard_keys(sorted(str(p) for p in shards.glob("train-*.tar"))))
    assert sum(everything.values()) == 36
    for epoch in ("1", "2"):
        keys = [ranks[r][epoch]["keys"] for r in (0, 1)]
        assert not set(keys[0]) & set(keys[1])  # each rank its own shards
        assert Counter(keys[0] + keys[1]) == everything  # together every key, once
        assert ranks[0][epoch]["steps"] == ranks[1][epoch]["steps"] == 18 // 4 + 1
    assert ranks[0]["1"]["keys"] != ranks[0]["2"]["keys"]


@pytest.mark.timeout(600)
def test_torchrun_finetune_from_shards(shards, tmp_path):
    out = tmp_path / "run"
    done = _torchrun(29533, "-m", "toolbox", "finetune", "--data", f"{shards}/train-*.tar",
                     "--model", "test_resnet", "--img-size", "16", "--no-pretrained",
                     "--epochs", "2", "--batch-size", "4", "--workers", "2", "--out", str(out),
                     "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(done.stdout)  # rank 0 alone prints
    assert (payload["start"]["train_images"], payload["start"]["val_images"]) == (36, 6)
    assert payload["start"]["world_size"] == 2
    # 18 samples a rank in batches of 4: 5 steps an epoch on each rank, 10 in two epochs.
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {10.0}

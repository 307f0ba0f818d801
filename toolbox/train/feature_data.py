"""A frozen run's data as features: looked up in the feature cache by content, the missing ones
computed once (each rank its own share), the cache brought up to date, and the loaders of
`train.data` over the feature rows instead of images.

When the cache applies (`cache_off_reason`): a frozen backbone (`--freeze`, no `--unfreeze-at`),
the same images every epoch (no `--augment`, `--mixup`, `--cutmix`), a classifier that splits at
its pooled features (`features.check_split`) and images that can be named without decoding.
Training features are computed under `--amp` when it is on (as the uncached training forward
runs); validation features always in float32, as validation (and `tb evaluate`) runs.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolbox import paths
from toolbox.errors import ToolboxError
from toolbox.sources import SkippedFile
from toolbox.train import balance
from toolbox.train.config import FinetuneConfig
from toolbox.train.data import BatchLoader, ShardLoader
from toolbox.train.feature_keys import (
    ImageKeys,
    keys_array,
    model_key,
    split_keys,
    weights_digest,
)
from toolbox.train.feature_store import FeatureStore, Shard
from toolbox.train.features import (
    SPLIT,
    FeaturePass,
    check_split,
    compute_features,
    feature_batches,
    split_problem,
)
from toolbox.train.run_data import RunData
from toolbox.train.sampling import rank_share

# Features of a run kept in memory up to this size; above it they are read from the mapped
# cache files batch by batch (2,000 images of a 1,280-wide model take 10 MB).
FEATURE_BUDGET_BYTES = 2 * 1024**3


def cache_off_reason(cfg: FinetuneConfig) -> str | None:
    """Why this run computes the backbone's features every epoch, or None (they are cached)."""
    if not cfg.freeze:
        return "the backbone trains; --freeze trains the head on cached features"
    if cfg.unfreeze_at is not None:
        return f"--unfreeze-at {cfg.unfreeze_at} trains the backbone"
    if cfg.augment:
        return "--augment changes the images"
    if cfg.mixup or cfg.cutmix:
        flags = "/".join(f for f, v in (("--mixup", cfg.mixup), ("--cutmix", cfg.cutmix)) if v)
        return f"{flags} mixes the images"
    if not cfg.feature_cache:
        return "--no-feature-cache"
    return None


def default_root() -> Path:
    """The feature cache's default folder: `features/` in tb's cache dir."""
    return paths.cache_dir() / "features"


class MappedRows:
    """Feature rows gathered batch by batch from mapped cache files (a set over the budget):
    `index_select` is all `BatchLoader` and `ShardLoader` ask of a tensor."""

    def __init__(self, shards: list[Shard], where: np.ndarray, dim: int) -> None:
        self.shards, self.where, self.dim = shards, where, dim  # where: (n, 2) shard, row

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        picked = self.where[index.numpy()]
        out = np.empty((len(picked), self.dim), dtype=np.float32)
        for s, shard in enumerate(self.shards):
            mask = picked[:, 0] == s
            if mask.any():
                out[mask] = shard.data[picked[mask, 1]]
        return torch.from_numpy(out)


@dataclass
class FeatureSet:
    """A split's features in the role `data.PreparedImages` plays for images: complete,
    sliced in this process, no workers."""

    tensor: Any  # (n, dim) float32 tensor, or MappedRows
    targets: torch.Tensor
    label: str
    skipped: list[SkippedFile] = field(default_factory=list)
    grid: torch.Tensor | None = None  # decoded training images, when this run decoded some
    complete: bool = True

    def __len__(self) -> int:
        return len(self.targets)

    def readable(self, index: torch.Tensor) -> torch.Tensor:
        return index


@dataclass
class _Request:
    """One split's share: its images, their keys, the feature set and store they belong to."""

    label: str
    source: Any
    keys: ImageKeys
    precision: str
    store: FeatureStore
    found: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    passed: FeaturePass = field(default_factory=FeaturePass)


def _index(shards: list[Shard]) -> dict[bytes, tuple[int, int]]:
    found: dict[bytes, tuple[int, int]] = {}
    for s, shard in enumerate(shards):
        for row, key in enumerate(shard.keys):
            found[key.tobytes()] = (s, row)
    return found


def _precision(amp: Any) -> str:
    return {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(amp.dtype, "float32") \
        if amp.enabled else "float32"


class FeatureData:
    """Builds one run's feature data (`prepare` returns a RunData, or why the cache is off)."""

    def __init__(self, cfg: FinetuneConfig, ctx: Any, device: torch.device, amp: Any,
                 progress: Any, budget: int | None = None) -> None:
        self.cfg, self.ctx, self.device, self.amp = cfg, ctx, device, amp
        self.progress = progress
        self.budget = FEATURE_BUDGET_BYTES if budget is None else budget
        self.warnings: list[str] = []

    def prepare(self, splits: Any, built: Any, meta: Any) -> RunData | str:
        cfg, ctx = self.cfg, self.ctx
        problem = split_problem(built.model, built.head)
        if problem is not None:
            return problem
        memo: dict = {}
        shares = [("training images", rank_share(splits.train, ctx.rank, ctx.world_size),
                   _precision(self.amp)),
                  ("validation images", rank_share(splits.val, ctx.rank, ctx.world_size),
                   "float32")]
        keyed = [(label, source, split_keys(source, memo), precision)
                 for label, source, precision in shares]
        if any(keys is None for _, _, keys, _ in keyed):
            return "these images cannot be named without decoding them"
        digest = weights_digest(built.model, built.head)
        root = Path(cfg.feature_cache_dir) if cfg.feature_cache_dir else default_root()
        stores: dict[Path, FeatureStore] = {}
        requests = []
        for label, source, keys, precision in keyed:
            folder = (root / model_key(meta, digest, precision, SPLIT)
                      / hashlib.blake2b(keys.base.encode(), digest_size=16).hexdigest())
            store = stores.setdefault(folder, FeatureStore(folder))
            requests.append(_Request(label, source, keys, precision, store))
        self._look_up(requests)
        problem = self._compute(requests, built, meta)
        if problem is not None:
            return problem
        self._save(requests)
        return self._run_data(splits, requests)

    def _look_up(self, requests: list[_Request]) -> None:
        damaged: list[str] = []
        for store in dict.fromkeys(r.store for r in requests):
            store.load()
            damaged += store.damaged
        for request in requests:
            request.found = _index(request.store.shards)
        if damaged:
            self.warnings.append(f"{len(damaged)} damaged feature cache file(s), e.g. "
                                 f"{damaged[0]}: not used; their features are computed again")

    def _compute(self, requests: list[_Request], built: Any, meta: Any) -> str | None:
        missing = [[i for i, key in enumerate(r.keys.keys) if key not in r.found]
                   for r in requests]
        problem = (check_split(built.model, built.head, meta.input_size, self.device)
                   if any(missing) else None)
        # Every rank must take the same path: one that could not split stops them all.
        if self.ctx.all_reduce_sum([problem is not None])[0] > 0:
            return problem or "another process could not split the model at its features"
        cfg = self.cfg
        workers = cfg.workers if cfg.workers is not None else _default_workers()
        # The training batch: a frozen backbone keeps no activations for a backward pass, so
        # this is the memory an uncached frozen step takes. Twice it, as validation uses, made
        # a cached run's peak higher than an uncached one's (3,671 against 3,620 MiB at 224 px).
        batches, counts = feature_batches(
            [(r.source, todo, r.label) for r, todo in zip(requests, missing, strict=True)],
            meta, batch_size=cfg.batch_size, workers=workers)
        for request, todo, count in zip(requests, missing, counts, strict=True):
            amp = self.amp if request.precision != "float32" else None
            request.passed = compute_features(
                built.model, itertools.islice(batches, count), len(todo), meta=meta,
                device=self.device,
                autocast=amp.autocast if amp is not None else None, progress=self.progress,
                label=request.label)
        return None

    def _save(self, requests: list[_Request]) -> None:
        """Bring each touched store up to date: one process rewrites the set (live rows kept,
        the new ones added); a rank under torchrun adds a shard of its own new rows."""
        alone = self.ctx.world_size == 1
        for store in dict.fromkeys(r.store for r in requests):
            mine = [r for r in requests if r.store is store]
            new_keys, new_rows = _new_rows(mine)
            live = set().union(*(r.keys.live for r in mine))
            shards = store.shards
            stale = any(key.tobytes() not in live for s in shards for key in s.keys)
            if not new_keys and not (alone and (stale or len(shards) > 1 or store.damaged)):
                continue
            if not new_rows and not shards:
                continue
            dim = (new_rows[0].shape[1] if new_rows else shards[0].data.shape[1])
            if alone:
                keep = [(s, np.flatnonzero([k.tobytes() in live for k in s.keys]))
                        for s in shards]
                keys = np.concatenate([s.keys[rows] for s, rows in keep]
                                      + [keys_array(new_keys)])
                chunks = _chunks(keep, new_rows)
            else:
                keys, chunks = keys_array(new_keys), iter(new_rows)
            try:
                store.save(keys, chunks, dim, replace=alone,
                           tag="" if alone else f"rank{self.ctx.rank}-")
            except OSError as exc:
                self._no_disk(store, exc)
                store.save(keys_array(new_keys), iter(new_rows), dim, replace=False)
        for request in requests:
            request.found = _index(request.store.shards)

    def _no_disk(self, store: FeatureStore, exc: OSError) -> None:
        if not any("not writable" in w for w in self.warnings):
            self.warnings.append(f"the feature cache folder is not writable ({exc}); features "
                                 f"are kept in memory for this run only (--feature-cache DIR "
                                 f"chooses another folder)")
        store.folder = None

    def _feature_set(self, request: _Request, targets: np.ndarray) -> FeatureSet:
        bad = {i for i, _ in request.passed.skipped}
        local = [i for i in range(len(request.keys.keys)) if i not in bad]
        shards = request.store.shards
        where = np.asarray([request.found[request.keys.keys[i]] for i in local],
                           dtype=np.int64).reshape(-1, 2)
        dim = shards[0].data.shape[1] if shards else 0
        tensor: Any = MappedRows(shards, where, dim)
        if len(local) * dim * 4 <= self.budget:
            tensor = tensor.index_select(0, torch.arange(len(local)))
        return FeatureSet(tensor, torch.as_tensor(targets[local], dtype=torch.long),
                          request.label, [skip for _, skip in request.passed.skipped],
                          request.passed.grid)

    def _run_data(self, splits: Any, requests: list[_Request]) -> RunData | str:
        cfg, ctx = self.cfg, self.ctx
        train_req, val_req = requests
        if not (len(train_req.keys.keys) - len(train_req.passed.skipped)):
            first = train_req.passed.skipped[0][1] if train_req.passed.skipped else None
            raise ToolboxError("none of the training images could be read"
                               + (f" ({first.path}: {first.reason})" if first else ""),
                               "check the data folder")
        train = self._feature_set(train_req, np.asarray(train_req.source.targets))
        val = self._feature_set(val_req, np.asarray(val_req.source.targets))
        counts = balance.class_counts(splits.train.targets, len(splits.classes))
        weights = (torch.from_numpy(balance.sample_weights(train.targets.numpy(), counts))
                   if cfg.sampler == "balanced" else None)
        per_rank = math.ceil(len(splits.train) / ctx.world_size)
        loader = BatchLoader(train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                             workers=0, rank=ctx.rank, world_size=ctx.world_size,
                             length=per_rank if ctx.world_size > 1 else None,
                             drop_last=per_rank > cfg.batch_size, weights=weights)
        val_loader = ShardLoader(val, list(range(len(val))), batch_size=cfg.batch_size * 2,
                                 workers=0)
        computed = sum(len(r.passed.indices) for r in requests)
        reused = sum(len(r.keys.keys) for r in requests) - computed - sum(
            len(r.passed.skipped) for r in requests)
        seconds = sum(r.passed.seconds for r in requests)
        totals = ctx.all_reduce_sum([computed, reused])
        line = (f"cached ({int(totals[0])} computed in {seconds:.1f} s, "
                f"{int(totals[1])} reused)")
        return RunData(train, val, loader, val_loader, cached=False, probed=splits.skipped,
                       class_counts=counts, features=line)


def _new_rows(requests: list[_Request]) -> tuple[list[bytes], list[np.ndarray]]:
    """The rows the requests computed, each key once (a set's train and val share a store
    when they come from one data set; identical images share a key)."""
    keys: list[bytes] = []
    rows: list[np.ndarray] = []
    seen: set[bytes] = set()
    for request in requests:
        flat = (np.concatenate(request.passed.rows) if request.passed.rows
                else np.zeros((0, 0), np.float32))
        picked = []
        for j, local in enumerate(request.passed.indices):
            key = request.keys.keys[local]
            if key not in seen:
                seen.add(key)
                keys.append(key)
                picked.append(j)
        if picked:
            rows.append(flat[picked])
    return keys, rows


def _chunks(keep: list[tuple[Shard, np.ndarray]], new_rows: list[np.ndarray],
            size: int = 8192) -> Iterator[np.ndarray]:
    for shard, rows in keep:
        for start in range(0, len(rows), size):
            yield shard.data[rows[start:start + size]]
    yield from new_rows


def _default_workers() -> int:
    from toolbox.devices import default_workers

    return default_workers(cap=8)


def feature_data_for(cfg: FinetuneConfig, ctx: Any, device: torch.device, amp: Any,
                     progress: Any, splits: Any, built: Any, meta: Any
                     ) -> tuple[RunData | None, str, list[str]]:
    """(the run's feature data or None, the start table's features line, warnings)."""
    reason = cache_off_reason(cfg)
    if reason is None:
        maker = FeatureData(cfg, ctx, device, amp, progress)
        found = maker.prepare(splits, built, meta)
        if isinstance(found, RunData):
            return found, found.features or "", maker.warnings
        reason = found
    return None, f"computed each epoch ({reason})", []

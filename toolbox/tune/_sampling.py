"""`--sampler` and `--pruner`: Optuna's own samplers and pruners, with one addition: each trial's
sampler is seeded from `--seed` and the trial's number.

Trial numbers come from the study's storage and are never shared, so N processes started with
the same `--seed` draw N different trials (the same seed in every process would otherwise draw
the same parameters N times), while one process with one seed draws the same study each time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from toolbox.errors import UsageError, unknown_name
from toolbox.tune._space import SpaceParam

SAMPLERS = {
    "tpe": "Tree-structured Parzen Estimator: random for the first 10 trials, then "
           "towards the best ones (Optuna's TPESampler, constant liar for parallel processes)",
    "random": "independent random draws (Optuna's RandomSampler)",
    "grid": "every combination of the values once (Optuna's GridSampler): each --space a list "
            "or a stepped range",
}
PRUNERS = {
    "median": "stop a trial after an epoch whose metric is worse than the median of the "
              "earlier trials at that epoch (from epoch 2, once 3 trials have finished)",
    "none": "every trial trains all its epochs",
}
# MedianPruner: judge from the 2nd epoch on (the first is mostly noise; epochs are reported as
# steps 1, 2, ... and Optuna judges a step from `n_warmup_steps` on), and once a few trials give
# a median (Optuna's default waits for 5: a tb study of 10-30 trials would prune little of it).
PRUNE_STARTUP_TRIALS, PRUNE_FROM_EPOCH = 3, 2


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial `number` (32 bits, as NumPy takes)."""
    digest = hashlib.blake2b(f"tb-tune:{seed}:{number}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def make_sampler(name: str, params: list[SpaceParam], seed: int) -> Any:
    """The Optuna sampler `name` over `params`.

    Raises:
        UsageError: an unknown sampler; grid with a continuous range.
    """
    import optuna

    if name not in SAMPLERS:
        raise unknown_name("sampler", name, SAMPLERS, f"choose one of {', '.join(SAMPLERS)}",
                           param="--sampler")
    if name == "grid":
        grid = {p.flag: p.grid() for p in params}
        continuous = [p.spec() for p in params if grid[p.flag] is None]
        if continuous:
            raise UsageError(f"--sampler grid walks a list of values, and {continuous[0]} is a "
                             f"continuous range", "give a step (lr=0.01..0.05:0.01) or list "
                             "the values (lr=0.001,0.01,0.1)", param="--space")

        def factory(s: int) -> Any:
            return optuna.samplers.GridSampler(grid, seed=s)
    elif name == "random":
        def factory(s: int) -> Any:
            return optuna.samplers.RandomSampler(seed=s)
    else:
        def factory(s: int) -> Any:
            return optuna.samplers.TPESampler(seed=s, constant_liar=True)
    return _per_trial(factory, seed)


def _per_trial(factory: Callable[[int], Any], seed: int) -> Any:
    """A sampler that makes a fresh `factory(trial_seed(seed, number))` for each trial (Optuna's
    samplers keep no state between trials but their random generator: they read the study)."""
    from optuna.samplers import BaseSampler

    class PerTrialSeed(BaseSampler):
        def __init__(self) -> None:
            self.inner = factory(seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self.inner = factory(trial_seed(seed, trial.number))
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str,
                               param_distribution: Any) -> Any:
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return PerTrialSeed()


def make_pruner(name: str) -> Any:
    """The Optuna pruner `name`.

    Raises:
        UsageError: an unknown pruner.
    """
    import optuna

    if name not in PRUNERS:
        raise unknown_name("pruner", name, PRUNERS, f"choose one of {', '.join(PRUNERS)}",
                           param="--pruner")
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS,
                                       n_warmup_steps=PRUNE_FROM_EPOCH)

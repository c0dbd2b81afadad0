"""Rejection-sampling fine-tuning (RAFT, Dong et al. 2023; ReST, Gulcehre et al. 2023): sample a
pool of n completions per training prompt once (shared by every weight vector), then for each
weight vector fine-tune LoRA on each prompt's top-k feasible samples under that vector's
scalarisation (`train.supervised`, `moalign.rl.supervised`). One pool, one cheap supervised run
per weight.

`options.iterations: N` repeats the loop ReST-style: iteration i + 1 samples a new pool from the
policy iteration i trained (its own pool per weight vector) and continues fine-tuning that policy
on its best samples. Earlier iterations are helpers (role `rejection-iteration`, key
`rejection-iteration:<weights>:i<i>:s<seed>`); the last is the front's policy (role `rejection`,
key `rejection:<weights>:s<seed>`).
"""
from __future__ import annotations

from dataclasses import dataclass

from moalign.errors import ConfigError
from moalign.pareto.children import weights_key
from moalign.pareto.strategies.base import TrainUnit, check_training
from moalign.pareto.strategies.pooled import PoolOptions, Pooled, _integer

ROLE = "rejection"
ITERATION_ROLE = "rejection-iteration"  # a helper (children.HELPER_ROLES)


@dataclass
class Options(PoolOptions):
    top_k: int = 1  # samples kept per prompt (the best feasible ones under the weight vector)
    iterations: int = 1  # sample-select-fine-tune rounds; each after the first samples from the last policy

    def __post_init__(self):
        super().__post_init__()
        _integer(self.top_k, "top_k")
        _integer(self.iterations, "iterations")
        if self.top_k > self.n:
            raise ConfigError(f"options.top_k ({self.top_k}) must be <= options.n ({self.n}): a prompt has n samples to keep from")

    def check(self, config) -> None:
        """The fine-tunes' config, checked before anything runs (e.g. a weight schedule: no steps of reward)."""
        check_training(config, supervised={"enabled": True, "pool": "pool.parquet", "select": "top_k", "top_k": self.top_k})


class Rejection(Pooled):
    name = "rejection"
    Options = Options

    def next_units(self, done):
        units = []
        for seed in self.config.training_seeds:
            first = self.pool_unit(seed)
            if first.key not in done:
                units.append(first)
                continue
            for w in self.W:
                unit = self._next(done, tuple(float(x) for x in w), seed, done[first.key]["adapter_dir"])
                if unit is not None:
                    units.append(unit)
        return units

    def _next(self, done, w, seed, pool):
        """The next unit of weight vector `w`'s chain (fine-tune, pool, fine-tune, ...), or None."""
        adapter = None
        for i in range(1, self.options.iterations + 1):
            last = i == self.options.iterations
            unit = TrainUnit(w, seed, ROLE if last else ITERATION_ROLE, init_adapter=adapter, pool=str(pool),
                             tag="" if last else f"i{i}")
            if unit.key not in done:
                return unit
            if last:
                return None
            adapter = str(done[unit.key]["adapter_dir"])
            resample = self.pool_unit(seed, adapter, tag=f"{weights_key(w)}:i{i}")
            if resample.key not in done:
                return resample
            pool = done[resample.key]["adapter_dir"]
        return None

    def train_config(self, unit):
        cfg = super().train_config(unit)
        sup = cfg.supervised
        sup.enabled, sup.pool, sup.select, sup.top_k = True, unit.pool, "top_k", self.options.top_k
        return cfg


STRATEGY = Rejection

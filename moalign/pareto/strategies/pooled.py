"""What the sample-score-select strategies (best_of_n, rejection, rewards_in_context) share: one
pool of scored samples per seed (`PoolUnit`, `moalign.pool`), sampled once and read by every
weight vector, and the options that say how it is sampled."""
from __future__ import annotations

import math
from dataclasses import dataclass

from moalign.errors import ConfigError
from moalign.pareto.strategies.base import PoolUnit, Strategy


def _integer(value, key: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"options.{key} must be an integer >= {low}, got {value!r}")


@dataclass
class PoolOptions:
    n: int = 8  # samples per prompt
    # the pool's sampling temperature; a trained policy is still evaluated as `train.sampling` says, while
    # best-of-n's answers are the pool's samples themselves
    temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self):
        _integer(self.n, "n")
        for key, ok, what in (("temperature", lambda v: v > 0, "> 0"), ("top_p", lambda v: 0 < v <= 1, "in (0, 1]")):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
                raise ConfigError(f"options.{key} must be a number {what}, got {value!r}")


class Pooled(Strategy):
    """A strategy whose policies rest on a pool of `split`'s prompts, one per training seed."""

    split = "train"
    Options = PoolOptions

    def pool_unit(self, seed: int, adapter: str | None = None, tag: str = "", ask: str = "") -> PoolUnit:
        o = self.options
        return PoolUnit(self.split, seed, o.n, float(o.temperature), float(o.top_p), adapter, tag, ask)

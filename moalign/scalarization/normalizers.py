"""Put objectives on comparable scales before weighting them (BLEU is 0-100, toxicity 0-1).

Each normaliser maps every column by one increasing affine map per call (per group for `group`),
so orders, and hence what a decomposition guarantees, survive normalisation. `scale(values, groups)`
is one objective-unit in normalised units, per row; constraints divide their gaps by it so that one
penalty or Lagrange learning rate fits every objective and a constraint's cost counts in the units
of the reward it is subtracted from.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from moalign.errors import ConfigError

NORMALIZATIONS = ("running", "fixed", "group", "none")


class IdentityNormalizer:
    """`none`: raw units; a constraint's gap counts in the objective's own units."""

    def update(self, values: np.ndarray) -> None:
        pass

    def __call__(self, values: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(values, dtype=float)

    def scale(self) -> np.ndarray | float:
        """One unit of each column in normalised units (a scalar or one per objective)."""
        return 1.0

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class RunningNormalizer(IdentityNormalizer):
    """z-score with a running mean and variance per objective (Chan et al.'s parallel update).

    Updated with every batch before use, so the first batch is normalised by its own statistics.
    Rows must be finite: the reward leaves dropped (NaN) samples out of `update`.
    """

    def __init__(self, n_objectives: int, eps: float = 1e-6):
        self.count = 0
        self.mean = np.zeros(n_objectives)
        self.m2 = np.zeros(n_objectives)
        self.eps = eps

    def update(self, values: np.ndarray) -> None:
        values = np.atleast_2d(values)
        n = values.shape[0]
        if n == 0:
            return
        batch_mean = values.mean(0)
        batch_m2 = ((values - batch_mean) ** 2).sum(0)
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + batch_m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count - 1, 1))

    def __call__(self, values: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        return (np.asarray(values, dtype=float) - self.mean) / (self.std + self.eps)

    def scale(self) -> np.ndarray:
        """The running std; 1 (raw units) while it is still zero, i.e. every value seen was equal,
        where dividing by eps would turn a gap of a few words into millions."""
        std = self.std
        return np.where(std > 1e-9 * (1.0 + np.abs(self.mean)), std, 1.0)

    def state_dict(self) -> dict:
        return {"count": int(self.count), "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], np.array(state["mean"], dtype=float), np.array(state["m2"], dtype=float)


class FixedRangeNormalizer(IdentityNormalizer):
    """Maps each objective's [low, high] range onto [0, 1] (values outside are not clipped)."""

    def __init__(self, low, high):
        self.low, self.high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
        if np.any(self.high <= self.low):
            raise ConfigError("reward.ranges: every range needs high > low")

    def __call__(self, values: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        return (np.asarray(values, dtype=float) - self.low) / (self.high - self.low)

    def scale(self) -> np.ndarray:
        return self.high - self.low


class GroupNormalizer(IdentityNormalizer):
    """z-score within each prompt's group, as TRL's `normalize_then_sum` and GDPO do.

    (x - group mean) / (group sample std + 1e-4), TRL's std and epsilon; NaN rows are left out of
    their group's statistics, and a group with one valid member scores 0. A group's spread is no
    objective's scale (siblings may nearly agree), so `scale()` is the running std over every valid
    sample; the reward prices constraints between siblings in the groups' own units itself
    (`MultiObjectiveReward._in_reward_units`).
    """

    eps = 1e-4

    def __init__(self, n_objectives: int):
        self.running = RunningNormalizer(n_objectives)

    def update(self, values: np.ndarray) -> None:
        self.running.update(values)

    def __call__(self, values: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        if groups is None:
            raise ValueError("group normalisation needs each sample's group")
        frame = pd.DataFrame(np.asarray(values, dtype=float))
        by_group = frame.groupby(np.asarray(groups), sort=False)
        std = by_group.transform("std").fillna(0.0)  # pandas: ddof=1, NaN for a group of one
        return ((frame - by_group.transform("mean")) / (std + self.eps)).to_numpy()

    def scale(self) -> np.ndarray:
        return self.running.scale()

    def state_dict(self) -> dict:
        return {"running": self.running.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.running.load_state_dict(state["running"])


def make_normalizer(kind: str, names: list[str], ranges: dict | None = None):
    """The normaliser for `kind` over the columns `names` (fixed: one [low, high] per name)."""
    if kind == "running":
        return RunningNormalizer(len(names))
    if kind == "group":
        return GroupNormalizer(len(names))
    if kind == "none":
        return IdentityNormalizer()
    if kind == "fixed":
        ranges = ranges or {}
        missing = [n for n in names if n not in ranges]
        if missing:
            raise ConfigError(f"reward.ranges: normalization 'fixed' needs a [low, high] range for {missing[0]!r}")
        for name in names:
            pair = ranges[name]
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)):
                raise ConfigError(f"reward.ranges.{name}: expected [low, high], got {pair!r}")
        return FixedRangeNormalizer([ranges[n][0] for n in names], [ranges[n][1] for n in names])
    raise ConfigError(f"reward.normalization must be one of {', '.join(NORMALIZATIONS)}, got {kind!r}")

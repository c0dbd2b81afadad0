"""Put objectives on comparable scales before weighting them (BLEU is 0-100, toxicity 0-1)."""
from __future__ import annotations

import numpy as np

from moalign.errors import ConfigError


class IdentityNormalizer:
    def update(self, values: np.ndarray) -> None:
        pass

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=float)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class RunningNormalizer(IdentityNormalizer):
    """z-score with a running mean and variance per objective (Chan et al.'s parallel update).

    Updated with every batch before use, so the first batch is normalised by its own statistics.
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

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=float) - self.mean) / (self.std + self.eps)

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], np.array(state["mean"]), np.array(state["m2"])


class FixedRangeNormalizer(IdentityNormalizer):
    """Maps each objective's [low, high] range onto [0, 1] (values outside are not clipped)."""

    def __init__(self, low, high):
        self.low, self.high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
        if np.any(self.high <= self.low):
            raise ConfigError("reward.ranges: every range needs high > low")

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=float) - self.low) / (self.high - self.low)


def make_normalizer(kind: str, names: list[str], ranges: dict | None = None):
    if kind == "running":
        return RunningNormalizer(len(names))
    if kind == "none":
        return IdentityNormalizer()
    if kind == "fixed":
        ranges = ranges or {}
        missing = [n for n in names if n not in ranges]
        if missing:
            raise ConfigError(f"reward.ranges: normalization 'fixed' needs a [low, high] range for {missing[0]!r}")
        return FixedRangeNormalizer([ranges[n][0] for n in names], [ranges[n][1] for n in names])
    raise ConfigError(f"reward.normalization must be running|fixed|none, got {kind!r}")

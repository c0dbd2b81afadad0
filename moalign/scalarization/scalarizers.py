"""Weighted decompositions of a multi-objective score into one number, via pymoo.

Inputs are normalised scores converted to minimisation (see `to_minimize`); the scalar is a cost,
so the RL reward is its negation. Chebyshev-type decompositions measure distance from an ideal
point; pymoo defaults it to zero, which is wrong for z-scores, so we track a running ideal
(the best value seen per objective).
"""
from __future__ import annotations

import numpy as np
from pymoo.decomposition.pbi import PBI
from pymoo.decomposition.tchebicheff import Tchebicheff
from pymoo.decomposition.weighted_sum import WeightedSum

from moalign.errors import ConfigError

SCALARIZERS = ("weighted_sum", "chebyshev", "augmented_chebyshev", "pbi")


def validate_weights(weights, names: list[str]) -> np.ndarray:
    """One non-negative weight per objective, not all zero; returned normalised to sum 1."""
    if weights is None:
        return np.full(len(names), 1.0 / len(names))
    try:
        w = np.asarray([float(x) for x in weights], dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"reward.weights: expected numbers, got {weights!r}") from None
    if w.shape != (len(names),):
        raise ConfigError(f"reward.weights: got {w.size} weights for {len(names)} objectives ({', '.join(names)})")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ConfigError(f"reward.weights: weights must be non-negative, got {w.tolist()}")
    if w.sum() == 0:
        raise ConfigError("reward.weights: at least one weight must be positive")
    return w / w.sum()


class Scalarizer:
    """Cost of each row of F (minimisation space) under `weights`; lower is better."""

    def __init__(self, kind: str, weights: np.ndarray, theta: float = 5.0, rho: float = 0.05):
        if kind not in SCALARIZERS:
            raise ConfigError(f"reward.scalarizer must be one of {', '.join(SCALARIZERS)}, got {kind!r}")
        self.kind, self.weights, self.theta, self.rho = kind, np.asarray(weights, dtype=float), theta, rho
        self.ideal: np.ndarray | None = None
        self._decomposition = {"weighted_sum": WeightedSum(), "pbi": PBI(theta=theta)}.get(kind, Tchebicheff())

    def update(self, F: np.ndarray) -> None:
        best = np.atleast_2d(F).min(0)
        self.ideal = best if self.ideal is None else np.minimum(self.ideal, best)

    def __call__(self, F: np.ndarray) -> np.ndarray:
        F = np.atleast_2d(np.asarray(F, dtype=float))
        ideal = self.ideal if self.ideal is not None else F.min(0)
        cost = self._decomposition.do(F, self.weights, ideal_point=ideal)
        if self.kind == "augmented_chebyshev":
            # pymoo has no augmented Tchebycheff (its AASF divides by the weights instead):
            # max_i w_i |f_i - z_i| + rho * sum_i |f_i - z_i|
            cost = cost + self.rho * np.abs(F - ideal).sum(1)
        return np.asarray(cost, dtype=float).reshape(-1)

    def state_dict(self) -> dict:
        return {"ideal": None if self.ideal is None else self.ideal.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.ideal = None if state.get("ideal") is None else np.array(state["ideal"])


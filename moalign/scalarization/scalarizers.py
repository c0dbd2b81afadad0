"""Weighted decompositions of a multi-objective score into one number, via pymoo.

Inputs are normalised scores converted to minimisation (see `to_minimize`); the scalar is a cost,
so the RL reward is its negation. Chebyshev-type decompositions measure distance from an ideal
point, which the caller supplies (pymoo's default of zero is wrong for z-scores; see `ideal.py`).

One weight vector means one trade-off under every decomposition: more weight on an objective
favours samples better on it. Chebyshev's optimum for weights w lies on the ray from the ideal
along 1/w, while pymoo's PBI takes its argument as that ray itself, so PBI gets 1/w: fed w, it
would favour samples *worse* on the heavily weighted objective.
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


def pbi_direction(weights: np.ndarray) -> np.ndarray:
    """The ray PBI should aim along for importance weights w: 1/w, whose limit as some w_i -> 0
    points along those objectives only (w = (1, 0): stay at the ideal on objective 1)."""
    weights = np.asarray(weights, dtype=float)
    direction = (weights == 0).astype(float) if np.any(weights == 0) else 1.0 / weights
    return direction / direction.sum()


class Scalarizer:
    """Cost of each row of F (minimisation space) under `weights`; lower is better. Stateless.

    >>> Scalarizer("chebyshev", np.array([0.5, 0.5]))(np.array([[1.0, 3.0]]), ideal=np.zeros(2)).tolist()
    [1.5]
    """

    def __init__(self, kind: str, weights: np.ndarray, theta: float = 5.0, rho: float = 0.05):
        if kind not in SCALARIZERS:
            raise ConfigError(f"reward.scalarizer must be one of {', '.join(SCALARIZERS)}, got {kind!r}")
        self.kind, self.weights, self.theta, self.rho = kind, np.asarray(weights, dtype=float), theta, rho
        self._decomposition = {"weighted_sum": WeightedSum(), "pbi": PBI(theta=theta)}.get(kind, Tchebicheff())
        self._pymoo_weights = pbi_direction(self.weights) if kind == "pbi" else self.weights

    def __call__(self, F: np.ndarray, ideal: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        """`ideal`: one point [M], or one per row [N, M] (group normalisation); default: F's best.
        `weights`: one vector per row [N, M] (a weight-conditioned policy's groups, each normalised
        to sum 1); default: the configured weights for every row."""
        F = np.atleast_2d(np.asarray(F, dtype=float))
        if len(F) == 0:
            return np.zeros(0)
        if weights is None:
            w, pymoo_w, kind = self.weights, self._pymoo_weights, "auto"
        else:
            w = np.asarray(weights, dtype=float)
            if w.shape != F.shape:
                raise ValueError(f"per-row weights must be [N, M] = {list(F.shape)}, got {list(w.shape)}")
            w = w / w.sum(1, keepdims=True)
            # pymoo pairs row i of F with row i of the weights in its "one_to_one" mode
            pymoo_w, kind = (np.array([pbi_direction(r) for r in w]) if self.kind == "pbi" else w), "one_to_one"
        if self.kind == "weighted_sum":  # no ideal: a plain dot product, as TRL's weighted sum
            return np.asarray(self._decomposition.do(F, w, _type=kind), dtype=float).reshape(-1)
        offset = F - (F.min(0) if ideal is None else ideal)
        # pymoo takes one ideal point; offsets from a per-row ideal against a zero ideal are the same
        cost = self._decomposition.do(offset, pymoo_w, _type=kind, ideal_point=np.zeros(F.shape[1]))
        if self.kind == "augmented_chebyshev":
            # pymoo has no augmented Tchebycheff (its AASF divides by the weights instead):
            # max_i w_i |f_i - z_i| + rho * sum_i |f_i - z_i|
            cost = cost + self.rho * np.abs(offset).sum(1)
        return np.asarray(cost, dtype=float).reshape(-1)

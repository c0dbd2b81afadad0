"""Front metrics on policies' scores: non-dominated set, hypervolume, expected utility.

Scores stay in natural directions in DataFrames; `to_minimize` converts them where they enter
pymoo, which minimises.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from moalign.errors import ConfigError
from moalign.scalarization import to_minimize


def non_dominated(scores: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the rows no other row dominates."""
    F = to_minimize(scores, directions)
    mask = np.zeros(len(F), dtype=bool)
    if len(F):
        mask[NonDominatedSorting().do(F, only_non_dominated_front=True)] = True
    return mask


def reference_point(scores: np.ndarray, directions: Sequence[str], spec="nadir", names: Sequence[str] = (),
                    base_scores: np.ndarray | None = None, margin: float = 0.1) -> np.ndarray:
    """Reference point in minimisation space.

    `"nadir"`: the worst value per objective among `scores`, pushed out by `margin` of the range
    (so extreme points still add volume); `"base"`: the base model's scores; a mapping
    `{objective: value}` in natural direction: as given.
    """
    if isinstance(spec, dict):
        missing = [n for n in names if n not in spec]
        if missing:
            raise ConfigError(f"search.reference_point: no value for {missing[0]!r}")
        return to_minimize([[float(spec[n]) for n in names]], directions)[0]
    if spec == "base":
        if base_scores is None:
            raise ConfigError("search.reference_point 'base' needs the base model to be evaluated")
        return to_minimize(np.atleast_2d(base_scores), directions)[0]
    if spec != "nadir":
        raise ConfigError(f"search.reference_point must be nadir|base|{{objective: value}}, got {spec!r}")
    F = to_minimize(scores, directions)
    span = F.max(0) - F.min(0)
    return F.max(0) + margin * np.where(span > 0, span, 1.0)


def hypervolume(scores: np.ndarray, directions: Sequence[str], ref_point: np.ndarray) -> float:
    """Volume dominated by the rows of `scores` and bounded by `ref_point` (pymoo's HV)."""
    F = to_minimize(scores, directions)
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(ref_point, dtype=float)).do(F))


def expected_utility(scores: np.ndarray, directions: Sequence[str], weights: np.ndarray) -> float:
    """Mean over weight vectors of the best linear utility any policy reaches (Zintgraf et al., 2015).

    Scores are min-max normalised over the candidates first (1 = best seen), so objectives on
    different scales weigh as their weights say.
    """
    U = -to_minimize(scores, directions)  # higher is better on every column
    span = U.max(0) - U.min(0)
    U = (U - U.min(0)) / np.where(span > 0, span, 1.0)
    return float((np.asarray(weights) @ U.T).max(1).mean())

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


REFERENCE_POINTS = ("nadir", "base")


def check_reference_point(spec, names: Sequence[str] | None = None, key: str = "search.reference_point") -> None:
    """`nadir`, `base`, or `{objective: number}`; with `names`, the mapping must give exactly those
    objectives. Checked before any training, so that a typo does not cost a search."""
    if isinstance(spec, dict):
        for name, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ConfigError(f"{key}.{name}: expected a number, got {value!r}")
        if names is not None:
            unknown = [n for n in spec if n not in names]
            if unknown:
                raise ConfigError(f"{key}: {unknown[0]!r} is not an objective of the front "
                                  f"({', '.join(names)})")
            missing = [n for n in names if n not in spec]
            if missing:
                raise ConfigError(f"{key}: no value for {missing[0]!r}")
    elif spec not in REFERENCE_POINTS:
        raise ConfigError(f"{key} must be nadir|base|{{objective: value}}, got {spec!r}")


def reference_point(scores: np.ndarray, directions: Sequence[str], spec="nadir", names: Sequence[str] = (),
                    base_scores: np.ndarray | None = None, margin: float = 0.1) -> np.ndarray:
    """Reference point in minimisation space.

    `"nadir"`: the worst value per objective among `scores`, pushed out by `margin` of the range
    (so extreme points still add volume); `"base"`: the base model's scores; a mapping
    `{objective: value}` in natural direction: as given.
    """
    if isinstance(spec, dict):
        check_reference_point(spec, names)
        return to_minimize([[float(spec[n]) for n in names]], directions)[0]
    if spec == "base":
        if base_scores is None:
            raise ConfigError("search.reference_point 'base' needs the base model to be evaluated")
        return to_minimize(np.atleast_2d(base_scores), directions)[0]
    check_reference_point(spec)
    F = to_minimize(scores, directions)
    span = F.max(0) - F.min(0)
    return F.max(0) + margin * np.where(span > 0, span, 1.0)


def hypervolume(scores: np.ndarray, directions: Sequence[str], ref_point: np.ndarray) -> float:
    """Volume dominated by the rows of `scores` and bounded by `ref_point` (pymoo's HV)."""
    F = to_minimize(scores, directions)
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(ref_point, dtype=float)).do(F))


def expected_utility(scores: np.ndarray, directions: Sequence[str], weights: np.ndarray,
                     scale: np.ndarray | None = None) -> float:
    """Mean over weight vectors of the best linear utility any policy reaches (Zintgraf et al., 2015).

    Scores are min-max normalised first (1 = best seen), so objectives on different scales weigh
    as their weights say. The range comes from `scale` (rows of scores, e.g. every policy of every
    search in a report) or else from `scores` themselves: two searches compare only on one scale
    and one set of weights.
    """
    U = -to_minimize(scores, directions)  # higher is better on every column
    R = U if scale is None else -to_minimize(scale, directions)
    span = R.max(0) - R.min(0)
    U = (U - R.min(0)) / np.where(span > 0, span, 1.0)
    return float((np.asarray(weights) @ U.T).max(1).mean())

"""Adaptive: train the extremes (one-hot weights), then, while the budget of training steps lasts,
the weight vector where the front has its largest gap, warm-started from the nearest trained policy.

The rule is the adaptive weighted-sum method's (Kim & de Weck, "Adaptive weighted-sum method for
bi-objective optimization", Struct. Multidisc. Optim. 29, 2005): refine where neighbouring
solutions lie far apart on the front, since a long segment is where a new solution can add the
most hypervolume. Here neighbours are neighbours in weight space among the non-dominated trained
policies (all trained policies while fewer than two are non-dominated): for two objectives the
consecutive weight vectors, for more the edges of the Delaunay triangulation of the weight vectors
(in the simplex's first m-1 coordinates; every pair if the points are degenerate). Each edge's gap
is the Euclidean distance of its two policies' mean scores after min-max scaling over all trained
policies (so objectives on different scales count alike); the edge with the largest gap gets the
midpoint of its weights. Edges whose weights differ by less than `min_weight_gap` (in every
coordinate) and midpoints already trained are skipped; ties go to the first edge in weight order.
A front edge whose midpoint is trained already (it came out dominated, so its ends are still
neighbours on the front) is replaced by the two segments either side of that midpoint, recursively,
so the search refines there rather than stopping with budget left; a front refined down to
`min_weight_gap` everywhere still ends the search.

The gaps are measured on a validation split (`validation_fraction` of the training prompts, held
out of every child's training; `val/<objective>` metrics), never on the held-out prompts the
front is reported on: a search that chose where to train from those would report on prompts it
had already looked at.

Warm starts (`model.init_adapter`, part of the child's train_hash): each seed continues from its
own run at the nearest trained weights (L1; a tie goes to the larger first weight), for
`warm_steps` steps. Everything is a function of the
finished children, so a killed search asks for the same next weight when re-run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moalign.errors import ConfigError, MoalignError
from moalign.pareto.children import weights_key
from moalign.pareto.front import non_dominated
from moalign.pareto.strategies.base import Strategy, TrainUnit, trained_rows


@dataclass
class AdaptiveOptions:
    budget_steps: int | None = None  # training steps of all trained children together (every seed)
    warm_steps: int | None = None  # steps of each warm-started child; None: train.optim.steps
    min_weight_gap: float = 0.0625  # neighbours closer than this in weight space are not split
    # the share of the training prompts every child holds out and is scored on, to decide where to train
    validation_fraction: float = 0.2

    def __post_init__(self):
        if isinstance(self.budget_steps, bool) or not isinstance(self.budget_steps, int) or self.budget_steps < 1:
            raise ConfigError(f"budget_steps: the adaptive strategy needs an integer budget of training steps >= 1, "
                              f"got {self.budget_steps!r}")
        if self.warm_steps is not None and (isinstance(self.warm_steps, bool) or not isinstance(self.warm_steps, int)
                                            or self.warm_steps < 1):
            raise ConfigError(f"warm_steps: expected an integer >= 1 or null, got {self.warm_steps!r}")
        if not 0 < self.min_weight_gap < 1:
            raise ConfigError(f"min_weight_gap: expected a number in (0, 1), got {self.min_weight_gap!r}")
        if isinstance(self.validation_fraction, bool) or not isinstance(self.validation_fraction, (int, float)) \
                or not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction: the adaptive strategy decides on a validation split of the "
                              f"training prompts: expected a number in (0, 1), got {self.validation_fraction!r}")

    def check(self, config) -> None:
        m, seeds = len(config.train.reward.objectives), len(config.training_seeds)
        need = m * seeds * config.train.optim.steps
        if self.budget_steps < need:
            raise ConfigError(f"options.budget_steps: {self.budget_steps} cannot train the {m} extremes "
                              f"({m} x {seeds} seed(s) x {config.train.optim.steps} steps = {need})")


def _edges(W: np.ndarray) -> list[tuple[int, int]]:
    """Neighbouring pairs of weight vectors (row indices), in weight order."""
    order = [int(k) for k in np.lexsort(W.T[::-1])[::-1]]  # by the first weight, descending, as listed
    if W.shape[1] == 2:
        return list(zip(order[:-1], order[1:]))
    from scipy.spatial import Delaunay, QhullError

    rank = {k: r for r, k in enumerate(order)}
    try:
        simplices = Delaunay(W[:, :-1]).simplices
    except QhullError:  # too few points, or all on one line: every pair
        return [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
    pairs = {tuple(sorted((int(s[i]), int(s[j])), key=rank.get)) for s in simplices
             for i in range(len(s)) for j in range(i + 1, len(s))}
    return sorted(pairs, key=lambda p: (rank[p[0]], rank[p[1]]))


def pick_next_weight(W: np.ndarray, scores: np.ndarray, directions, min_weight_gap: float = 0.0625) -> np.ndarray | None:
    """The next weight vector to train given trained weights `W` [K, m] and their mean scores
    [K, m] (natural direction); None when no gap is left to split. See the module docstring."""
    W, scores = np.asarray(W, dtype=float), np.asarray(scores, dtype=float)
    span = scores.max(0) - scores.min(0)
    F = (scores - scores.min(0)) / np.where(span > 0, span, 1.0)
    front = np.flatnonzero(non_dominated(scores, directions))
    if len(front) < 2:
        front = np.arange(len(W))
    index = {weights_key(w): k for k, w in enumerate(W)}
    candidates = []  # (gap, midpoint), in weight order

    def split(i: int, j: int) -> None:
        """Edge (i, j)'s candidate: its midpoint; where that is trained already (it came out off
        the front), the segments either side of it, recursively."""
        if np.abs(W[i] - W[j]).max() < min_weight_gap:
            return
        mid = (W[i] + W[j]) / 2
        k = index.get(weights_key(mid))
        if k is None:
            candidates.append((float(np.linalg.norm(F[i] - F[j])), mid))
        else:
            split(i, k)
            split(k, j)

    for a, b in _edges(W[front]):
        split(front[a], front[b])
    best, best_gap = None, -1.0
    for gap, mid in candidates:
        if gap > best_gap:  # ties go to the first in weight order
            best, best_gap = mid, gap
    return best


class Adaptive(Strategy):
    name = "adaptive"
    Options = AdaptiveOptions

    def next_units(self, done):
        seeds, m = self.config.training_seeds, len(self.names)
        extremes = [TrainUnit(tuple(float(x) for x in e), s) for s in seeds for e in np.eye(m)]
        missing = [u for u in extremes if u.key not in done]
        if missing:
            return missing
        rows = trained_rows(done)
        warm = self.options.warm_steps or self.config.train.optim.steps
        if sum(int(r["train_steps"]) for r in rows) + warm * len(seeds) > self.options.budget_steps:
            return []
        keys = sorted({r["weights"] for r in rows}, reverse=True)  # weight order, whatever the rows' order
        W = np.array([[float(x) for x in k.split(",")] for k in keys])
        for r in rows:
            if any(pd.isna(r.get(f"val/{n}", np.nan)) for n in self.names):
                raise MoalignError(f"adaptive: child {r['key']} (run {r['run_id']}) has no validation scores (val/...): "
                                   f"it was trained before the search decided on a validation split; "
                                   f"give the search another name to start it afresh")
        scores = np.array([[np.mean([r[f"val/{n}"] for r in rows if r["weights"] == k]) for n in self.names]
                           for k in keys])
        w = pick_next_weight(W, scores, self.directions, self.options.min_weight_gap)
        if w is None:
            return []
        units = []
        for seed in seeds:
            # in weight order (as weight_vectors lists them), so that a tie goes to the same run
            # however the finished children arrived (an executor returns them in any order)
            own = sorted((r for r in rows if r["seed"] == seed), key=lambda r: [-r[f"w_{n}"] for n in self.names])
            dist = [np.abs(np.array([r[f"w_{n}"] for n in self.names]) - w).sum() for r in own]
            nearest = own[int(np.argmin(dist))]
            units.append(TrainUnit(tuple(float(x) for x in w), seed,
                                   init_adapter=str(Path(nearest["adapter_dir"]).resolve()), steps=warm))
        return units

    def train_config(self, unit):
        cfg = super().train_config(unit)
        cfg.data.validation_fraction = float(self.options.validation_fraction)
        return cfg


STRATEGY = Adaptive

"""The multi-objective reward: score samples, normalise, scalarise under weights, enforce constraints.

Samples an objective drops (NaN, `on_invalid: drop`) get reward NaN and touch no statistic: not
the normaliser, the ideal point, the Lagrange multipliers nor the logged means; the trainer masks
them out of the loss.

Constraints count in normalised units (each normaliser's `scale`), so they weigh against the
scalarised reward on its own footing. `lagrangian` subtracts lambda * the signed gap
(value - threshold for `<=`) rather than the violation alone: that is the Lagrangian whose dual
ascent updates lambda, so near the threshold the policy feels a smooth slope on both sides instead
of a kink it oscillates across; a slack constraint drives lambda to 0, so the bonus for exceeding
it disappears once it is met. `penalty` has no multiplier that could fall back to 0, so it charges
the violation only, or it would pay forever for over-satisfying the constraint.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from moalign.errors import ConfigError, MoalignError
from moalign.objective import Batch
from moalign.registry import build_objectives, get_objective
from moalign.rl.config import RewardConfig
from moalign.scalarization import (
    GroupNormalizer, IdealPoint, LagrangeMultipliers, Scalarizer, group_ideal, make_normalizer, parse_constraint, to_minimize, validate_weights,
)
from moalign.scoring import score


def _mean(values: np.ndarray) -> float:
    """Mean as a plain float, NaN (without numpy's empty-slice warning) when nothing is left."""
    return float(values.mean()) if len(values) else float("nan")


class MultiObjectiveReward:
    """Callable: Batch -> (rewards [N], raw scores DataFrame, metrics dict).

    Objectives named only in a constraint (e.g. `toxicity <= 0.1`) are scored with their
    default parameters, carry no weight, and are normalised beside the weighted ones for their scale.
    """

    def __init__(self, config: RewardConfig):
        self.config = config
        self.objectives = build_objectives(config.objectives)
        self.names = list(self.objectives)
        self.weights = validate_weights(config.weights, self.names)
        config.resolve_normalization()  # `auto` outside a TrainConfig: group for several objectives
        self.constraints = [parse_constraint(text) for text in config.constraints]
        constrained = [c.objective for c in self.constraints]
        twice = next((name for name in constrained if constrained.count(name) > 1), None)
        if twice:  # one multiplier and one set of metrics per objective
            raise ConfigError(f"reward.constraints: {twice!r} is constrained more than once; keep one constraint per objective")
        self.constraint_only = {name: get_objective(name) for name in dict.fromkeys(constrained) if name not in self.objectives}
        self.columns = self.names + list(self.constraint_only)
        self.all_directions = [o.direction for o in self.all_objectives.values()]
        self.directions = self.all_directions[: len(self.names)]
        self.normalizer = make_normalizer(config.normalization, self.columns, config.ranges)
        self.scalarizer = Scalarizer(config.scalarizer, self.weights, config.pbi_theta, config.augment_rho)
        self.ideal = IdealPoint()
        self.multipliers = LagrangeMultipliers(len(self.constraints), config.lagrange_lr, config.lagrange_init,
                                               config.lagrange_max)

    @property
    def all_objectives(self) -> dict:
        return {**self.objectives, **self.constraint_only}

    def __call__(self, batch: Batch, weights: np.ndarray | None = None):
        """`weights`: [N, m] per-sample weight vectors (a weight-conditioned policy's groups);
        None: the configured weights. Only the scalarisation reads them: normalisation, the ideal
        point and the constraints are the same under any weights."""
        if weights is not None:
            weights = np.asarray(weights, dtype=float)
            if weights.shape != (len(batch), len(self.names)):
                raise MoalignError(f"per-sample weights must be [{len(batch)}, {len(self.names)}] "
                                   f"(samples x objectives), got {list(weights.shape)}")
            if not (np.isfinite(weights).all() and (weights >= 0).all() and (weights.sum(1) > 0).all()):
                raise MoalignError("per-sample weights must be non-negative and finite, with a positive sum in every row")
        raw = score(batch, self.all_objectives)
        values = raw[self.columns].to_numpy(dtype=float, copy=True)  # ours to blank out dropped rows
        if np.isinf(values).any():
            row, col = np.argwhere(np.isinf(values))[0]
            raise MoalignError(f"objective {self.columns[col]!r} scored sample {row} as {values[row, col]}; "
                               f"a reward needs finite scores (NaN drops a sample)")
        valid = ~np.isnan(values).any(1)
        values[~valid] = np.nan  # a dropped sample stays out of every statistic, its other scores too
        scalarized, normalized = self._scalarize(values, valid, batch.groups, weights)
        m = len(self.names)
        reward = scalarized.copy()
        metrics = {"reward/scalarized": _mean(scalarized[valid]), "reward/dropped": int((~valid).sum())}
        reward[valid] -= self._constraint_costs(values[valid], np.asarray(batch.groups)[valid], metrics)
        for j, name in enumerate(self.names):
            metrics[f"rewards/{name}/mean"] = _mean(values[valid, j])
            metrics[f"rewards/{name}/normalized"] = _mean(normalized[valid, j])
        for j, name in enumerate(self.constraint_only, start=m):
            metrics[f"rewards/{name}/mean"] = _mean(values[valid, j])
        metrics["reward/total"] = _mean(reward[valid])
        return reward, raw, metrics

    def _scalarize(self, values: np.ndarray, valid: np.ndarray, groups, weights) -> tuple[np.ndarray, np.ndarray]:
        """(scalarised score, higher is better, NaN where invalid; normalised values): updates the
        normaliser and the ideal point with the valid rows first."""
        self.normalizer.update(values[valid])
        normalized = self.normalizer(values, groups)
        F = to_minimize(normalized[:, : len(self.names)], self.directions)
        scalarized = np.full(len(values), np.nan)
        scalarized[valid] = -self.scalarizer(F[valid], self._ideal(values, F, valid, groups),
                                             None if weights is None else weights[valid])
        return scalarized, normalized

    def rank_scores(self, values: np.ndarray, groups) -> np.ndarray:
        """The scalarised score of already-scored samples (columns in `self.columns` order), higher
        is better, NaN where a score is missing: what selecting among a pool of samples ranks by.
        Statistics come from `values` themselves, so call it on a fresh reward."""
        values = np.array(values, dtype=float)
        valid = np.isfinite(values).all(1)
        values[~valid] = np.nan
        return self._scalarize(values, valid, np.asarray(groups), None)[0]

    def feasible(self, values: np.ndarray) -> np.ndarray:
        """Whether each row of already-scored samples (columns in `self.columns` order) meets every
        constraint (a missing score does not)."""
        ok = np.ones(len(values), dtype=bool)
        for constraint in self.constraints:
            gap = constraint.gap(np.asarray(values, dtype=float)[:, self.columns.index(constraint.objective)])
            ok &= np.nan_to_num(gap, nan=np.inf) <= 0
        return ok

    def _ideal(self, values: np.ndarray, F: np.ndarray, valid: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """The ideal point in today's normalised units: see `moalign.scalarization.ideal`."""
        if self.config.normalization == "group":
            return group_ideal(F[valid], np.asarray(groups)[valid])
        self.ideal.update(to_minimize(values[valid], self.all_directions))
        if self.ideal.raw is None:  # nothing valid yet (the caller has no rows to score either)
            return np.zeros(F.shape[1])
        natural = to_minimize(self.ideal.raw[None], self.all_directions)  # its own inverse: back to natural
        return to_minimize(self.normalizer(natural)[:, : F.shape[1]], self.directions)[0]

    def _constraint_costs(self, values: np.ndarray, groups: np.ndarray, metrics: dict) -> np.ndarray:
        """What each valid sample pays for the constraints; updates the multipliers first (Safe
        RLHF's order: this batch's gap moves lambda, then lambda prices this batch). Gaps count in
        the normaliser's units (its `scale`), so one coefficient fits every objective; under `group`
        normalisation a sample's cost is its group's mean in those units plus its difference from
        that mean in the group's own units (std + eps, as the reward's z-scores), so that between
        siblings, where RLOO and GRPO compare, a constraint weighs as the reward does, while a group
        whose siblings nearly agree cannot inflate the cost's level, nor lambda's updates."""
        scale = np.broadcast_to(self.normalizer.scale(), (len(self.columns),))
        columns = [self.columns.index(c.objective) for c in self.constraints]
        raw_gaps = [c.gap(values[:, j]) for c, j in zip(self.constraints, columns)]
        gaps = [gap / scale[j] for gap, j in zip(raw_gaps, columns)]
        lagrangian = self.config.constraint_method == "lagrangian"
        if lagrangian:
            self.multipliers.step([_mean(g) if len(g) else None for g in gaps])
        cost = np.zeros(len(values))
        for i, (constraint, raw_gap, gap) in enumerate(zip(self.constraints, raw_gaps, gaps)):
            lam = self.multipliers.values[i] if lagrangian else float(self.config.constraint_penalty)
            charged = raw_gap if lagrangian else np.maximum(raw_gap, 0.0)
            cost += lam * self._in_reward_units(charged, values[:, columns[i]], groups, scale[columns[i]])
            key = f"constraints/{constraint.objective}"
            metrics[f"{key}/lambda"] = lam
            metrics[f"{key}/violation"] = _mean(np.maximum(raw_gap, 0.0))  # raw units, as people read them
            metrics[f"{key}/satisfied"] = _mean((raw_gap <= 0).astype(float))
            metrics[f"{key}/gap"] = _mean(gap)  # normalised, signed: what moves lambda
        return cost

    def _in_reward_units(self, charged: np.ndarray, column: np.ndarray, groups: np.ndarray, scale: float) -> np.ndarray:
        """A raw constraint charge (gap or violation) in the reward's units (see `_constraint_costs`)."""
        if self.config.normalization != "group" or len(charged) == 0:
            return charged / scale
        frame = pd.DataFrame({"charged": charged, "value": column})
        by_group = frame.groupby(np.asarray(groups), sort=False)
        level = by_group["charged"].transform("mean").to_numpy()
        spread = by_group["value"].transform("std").fillna(0.0).to_numpy() + GroupNormalizer.eps
        return level / scale + (charged - level) / spread

    def state_dict(self) -> dict:
        """Plain lists and floats, so `torch.load(weights_only=True)` and JSON both take it."""
        return {"normalizer": self.normalizer.state_dict(), "ideal": self.ideal.state_dict(),
                "lambdas": self.multipliers.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "ideal" not in state:
            raise MoalignError("the checkpoint's reward state predates raw-unit ideal points and Lagrange multipliers "
                               "(its ideal is in z-scores of old statistics); start this run afresh")
        self.normalizer.load_state_dict(state["normalizer"])
        self.ideal.load_state_dict(state["ideal"])
        self.multipliers.load_state_dict(state["lambdas"])

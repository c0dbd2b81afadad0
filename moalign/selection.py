"""Choosing among scored samples: for one weight vector, the feasible samples of each prompt that
its scalarisation ranks best.

This is the "select" of sample-score-select methods: best-of-n keeps one sample per held-out
prompt, rejection-sampling fine-tuning keeps the top k of each training prompt. The ranking is the
reward's own scalarisation (`MultiObjectiveReward.rank_scores`: the configured normalisation,
decomposition and weights), computed on the pool as a whole; where RL would subtract what a
constraint costs, selection keeps only samples that meet every constraint on their raw scores.
"""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from moalign.errors import MoalignError

GROUP = "prompt_index"  # the pool's column tying a prompt's samples together


def selection_reward(reward_cfg, weights=None):
    """A fresh `MultiObjectiveReward` for `reward_cfg` at `weights` (None: the config's own)."""
    from moalign.rl.reward import MultiObjectiveReward

    cfg = copy.deepcopy(reward_cfg)
    if weights is not None:
        cfg.weights = [float(w) for w in weights]
    return MultiObjectiveReward(cfg)


def ranked(pool: pd.DataFrame, reward_cfg, weights=None) -> pd.DataFrame:
    """`pool` with `score` (the scalarised score under `weights`, higher is better), `feasible`
    and `violation` (the sum of constraint gaps past their thresholds, each over the objective's
    spread in the pool: how far from feasible a sample is)."""
    reward = selection_reward(reward_cfg, weights)
    missing = [c for c in reward.columns if c not in pool.columns]
    if missing:
        scored = [c for c in pool.columns if c not in ("prompt", "completion", GROUP, "sample", "completion_tokens",
                                                      "sequence_tokens", "seconds")]
        raise MoalignError(f"the pool has no scores for {missing[0]!r} (it scores: {', '.join(scored) or 'nothing'}); "
                           f"sample a pool with the objectives of the reward")
    values = pool[reward.columns].to_numpy(dtype=float)
    out = pool.copy()
    out["score"] = reward.rank_scores(values, pool[GROUP].to_numpy())
    out["feasible"] = reward.feasible(values)
    spread = np.nanstd(values, axis=0)
    violation = np.zeros(len(pool))
    for constraint in reward.constraints:
        j = reward.columns.index(constraint.objective)
        violation += constraint.violation(values[:, j]) / (spread[j] if spread[j] > 0 else 1.0)
    out["violation"] = np.nan_to_num(violation, nan=np.inf)
    return out


def top_k(pool: pd.DataFrame, reward_cfg, weights=None, k: int = 1, fallback: bool = False) -> pd.DataFrame:
    """The `k` best feasible samples of each prompt under `weights`, best first (ties: the earlier
    sample). A sample with a missing score is never chosen while its prompt has a scored one.
    `fallback` (best-of-n, which must answer every prompt): a prompt with no feasible sample keeps
    its least violating one (scored ones first); otherwise such a prompt keeps none (a fine-tune
    learns only feasible answers)."""
    scored = ranked(pool, reward_cfg, weights)
    finite = np.isfinite(scored["score"])
    order = scored.assign(_unscored=~finite, _infeasible=~(scored["feasible"] & finite),
                          _neg=np.where(finite, -scored["score"], 0.0),
                          _v=np.where(scored["feasible"], 0.0, scored["violation"]))
    order = order.sort_values([GROUP, "_unscored", "_infeasible", "_v", "_neg"], kind="stable")
    has_feasible = order.groupby(GROUP, sort=False)["_infeasible"].transform("min") == 0
    has_scored = order.groupby(GROUP, sort=False)["_unscored"].transform("min") == 0
    keep = ~order["_infeasible"] | (fallback & ~has_feasible & (~order["_unscored"] | ~has_scored))
    picked = order[keep].groupby(GROUP, sort=False).head(k)
    return picked.drop(columns=["_unscored", "_infeasible", "_neg", "_v"])

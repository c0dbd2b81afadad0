"""Advantages, the one thing REINFORCE, RLOO and GRPO differ in (the loss is shared: `loss.py`).

Rewards may hold NaN for samples an objective dropped (`on_invalid: drop`): those samples get
advantage 0 (the trainer also masks them out of the loss) and are left out of every baseline.
"""
from __future__ import annotations

import numpy as np


def reinforce_advantages(rewards: np.ndarray, baseline: float | None, decay: float):
    """r - b with b a moving average of past mean rewards; returns (advantages, new baseline)."""
    valid = np.isfinite(rewards)
    if not valid.any():
        return np.zeros_like(rewards), baseline
    mean = float(rewards[valid].mean())
    b = mean if baseline is None else baseline
    return np.where(valid, rewards - b, 0.0), decay * b + (1 - decay) * mean


def rloo_advantages(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """r_i minus the mean reward of the other valid members of its group (Ahmadian et al., 2024).

    >>> rloo_advantages(np.array([1.0, 0.0, 2.0, 1.0]), 2).tolist()
    [1.0, -1.0, 1.0, -1.0]
    """
    if group_size < 2:
        raise ValueError("RLOO needs sampling.num_generations >= 2")
    r = rewards.reshape(-1, group_size)
    valid = np.isfinite(r)
    filled = np.where(valid, r, 0.0)
    others = valid.sum(1, keepdims=True) - valid  # valid members other than i
    loo_mean = (filled.sum(1, keepdims=True) - filled) / np.maximum(others, 1)
    return np.where(valid & (others > 0), filled - loo_mean, 0.0).reshape(-1)


def grpo_advantages(rewards: np.ndarray, group_size: int, scale: bool = True, eps: float = 1e-4) -> np.ndarray:
    """(r - mean_group) / std_group (Shao et al., 2024); `scale=False` keeps only the centring."""
    r = rewards.reshape(-1, group_size)
    valid = np.isfinite(r)
    count = valid.sum(1, keepdims=True)
    filled = np.where(valid, r, 0.0)
    mean = filled.sum(1, keepdims=True) / np.maximum(count, 1)
    centred = np.where(valid, r - mean, 0.0)
    if scale:  # population std over the valid members, as numpy's default (ddof=0)
        std = np.sqrt((centred**2).sum(1, keepdims=True) / np.maximum(count, 1))
        centred = centred / (std + eps)
    return np.where(valid & (count > 1), centred, 0.0).reshape(-1)


def advantages_for(algorithm, rewards: np.ndarray, group_size: int, state: dict) -> np.ndarray:
    """The configured algorithm's advantages; REINFORCE keeps its baseline in `state`."""
    if algorithm.name == "rloo":
        return rloo_advantages(rewards, group_size)
    if algorithm.name == "grpo":
        return grpo_advantages(rewards, group_size, algorithm.scale_rewards)
    adv, state["baseline"] = reinforce_advantages(rewards, state.get("baseline"), algorithm.baseline_decay)
    return adv

"""Baselines and advantages (REINFORCE, RLOO, GRPO), KL estimators and the adaptive KL controller."""
from __future__ import annotations

import numpy as np
import torch


def reinforce_advantages(rewards: np.ndarray, baseline: float | None, decay: float):
    """r - b with b a moving average of past mean rewards; returns (advantages, new baseline)."""
    mean = float(rewards.mean())
    b = mean if baseline is None else baseline
    return rewards - b, decay * b + (1 - decay) * mean


def rloo_advantages(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """r_i minus the mean reward of the other members of its group (Ahmadian et al., 2024)."""
    if group_size < 2:
        raise ValueError("RLOO needs sampling.num_generations >= 2")
    r = rewards.reshape(-1, group_size)
    return ((r - (r.sum(1, keepdims=True) - r) / (group_size - 1))).reshape(-1)


def grpo_advantages(rewards: np.ndarray, group_size: int, scale: bool = True, eps: float = 1e-4) -> np.ndarray:
    """(r - mean_group) / std_group (Shao et al., 2024); `scale=False` keeps only the centring."""
    r = rewards.reshape(-1, group_size)
    centred = r - r.mean(1, keepdims=True)
    if scale:
        centred = centred / (r.std(1, keepdims=True) + eps)
    return centred.reshape(-1)


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy.

    k1 = log p - log q (unbiased, can be negative); k3 = exp(q - p) - (q - p) - 1 (unbiased,
    never negative, lower variance; Schulman 2020).
    """
    log_ratio = ref_logp - logp
    if estimator == "k1":
        return -log_ratio
    return torch.exp(log_ratio) - log_ratio - 1


class AdaptiveKLController:
    """Proportional controller of kl_coef towards a target KL (Ziegler et al., 2019)."""

    def __init__(self, init_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_coef, target, horizon

    def update(self, current_kl: float, n_steps: int = 1) -> float:
        error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_steps / self.horizon
        return self.value

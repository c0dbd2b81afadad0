"""The KL anchor to the reference policy: estimators, where they act, and the adaptive coefficient.

Completions are sampled from the policy, so KL(pi || ref) is estimated per token from the sampled
token's log-ratio, log r = log ref - log pi (Schulman, 2020, "Approximating KL divergence"):

    k1 = -log r               unbiased value, can be negative
    k2 = (log r)^2 / 2        biased value, never negative, low variance
    k3 = r - 1 - log r        unbiased value, never negative, low variance

What trains the policy is not the value but the *gradient* each estimator gives where it is placed
(Tang & Munos, 2025, "On a few pitfalls in KL divergence gradient estimation for RL"). With
rho = pi/ref, expectations over tokens sampled from pi:

    in the loss    (autograd through the estimate):  E[grad k1] = E[grad log pi] = 0: no anchor at all;
                   E[grad k2] = E[log rho grad log pi] = grad KL(pi || ref);
                   E[grad k3] = E[(1 - r) grad log pi] = grad KL(ref || pi) (GRPO's choice).
    in the reward  (a number subtracted from the reward, then the policy gradient):
                   E[k1 grad log pi] = grad KL(pi || ref) (and per sequence, since k1 sums to the
                   sequence log-ratio); E[k3 grad log pi] = grad KL(pi||ref) - grad KL(ref||pi), and
                   E[k2 grad log pi] likewise, which vanish to second order at the reference and are
                   gradients of no divergence: they do not pull the policy back.

So: k1 in the loss gets the score-function surrogate `k1.detach() * log pi` (the value of k1, the
gradient of KL(pi || ref)); k2 and k3 in the loss are differentiated as they are; in the reward only
k1 is accepted, and `check_anchor` refuses the others with one line. `tests/test_rl_kl.py` checks
every row of this table on exact expectations over a small categorical distribution, and checks by
training that every accepted combination keeps the policy at the reference under a constant reward.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from moalign.errors import ConfigError

if TYPE_CHECKING:  # torch is imported by callers; configs import this module without loading it
    import torch

ESTIMATORS = ("k1", "k2", "k3")
# (estimator, in_reward) -> the divergence whose gradient the combination follows in expectation.
ANCHORS = {
    ("k1", False): "KL(pi || ref), via the score-function surrogate",
    ("k2", False): "KL(pi || ref)",
    ("k3", False): "KL(ref || pi)",
    ("k1", True): "KL(pi || ref)",
}


def check_anchor(estimator: str, in_reward: bool) -> str:
    """The divergence a combination descends, or a ConfigError saying why it does not anchor."""
    if estimator not in ESTIMATORS:
        raise ConfigError(f"algorithm.kl_estimator must be one of {'|'.join(ESTIMATORS)}, got {estimator!r}")
    anchor = ANCHORS.get((estimator, bool(in_reward)))
    if anchor is None:
        raise ConfigError(
            f"algorithm.kl_estimator {estimator!r} with kl_in_reward: true does not anchor (its policy gradient "
            f"E[{estimator} * grad log pi] is the gradient of no divergence); use kl_estimator: k1 in the reward, "
            f"or kl_in_reward: false")
    return anchor


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from tokens sampled from pi (values; see the table above).

    >>> import torch
    >>> kl_per_token(torch.tensor([-1.0]), torch.tensor([-2.0]), "k1").item()
    1.0
    """
    log_r = ref_logp - logp
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    if estimator == "k3":
        return log_r.exp() - 1 - log_r
    raise ConfigError(f"unknown KL estimator {estimator!r}")


def kl_loss_term(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL term for the loss: its value is the estimate, its gradient anchors.

    For k1 the estimate's own gradient is zero in expectation, so the term is the score-function
    surrogate: value k1, gradient k1 * grad log pi (= grad KL(pi || ref) in expectation).
    """
    kl = kl_per_token(logp, ref_logp, estimator)
    if estimator == "k1":
        k1 = kl.detach()
        return k1 + k1 * (logp - logp.detach())
    return kl


def sequence_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str) -> np.ndarray:
    """Summed per-token KL estimate of each sequence [N] (for the in-reward placement), no gradient."""
    return (kl_per_token(logp.detach(), ref_logp.detach(), estimator) * mask).sum(1).float().cpu().numpy()


class AdaptiveKLController:
    """Proportional controller of kl_coef towards a target per-token KL (Ziegler et al., 2019)."""

    def __init__(self, init_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_coef, target, horizon

    def update(self, current_kl: float, n_steps: int = 1) -> float:
        error = float(np.clip(current_kl / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_steps / self.horizon
        return self.value


def exact_kl(logits: "torch.Tensor", ref_logits: "torch.Tensor") -> "torch.Tensor":
    """KL(pi || ref) of each position's whole next-token distribution, [..., V] -> [...].

    Supervised fine-tuning (moalign/rl/supervised.py) trains on tokens it did not sample, so no
    sampled-token estimator applies; with both logits at hand the exact divergence is one sum over
    the vocabulary, and its gradient pulls toward the reference wherever the policy has moved.
    """
    import torch

    logp = torch.log_softmax(logits.float(), -1)
    ref = torch.log_softmax(ref_logits.float(), -1)
    return (logp.exp() * (logp - ref)).sum(-1)

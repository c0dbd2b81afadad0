"""The policy-gradient loss: (clipped) importance ratio x advantage, aggregated over tokens.

REINFORCE, RLOO and GRPO differ only in their advantages (`advantages.py`); they share this loss.
With one optimisation pass per batch the ratio is exp(logp - logp.detach()) = 1, whose gradient is
grad log pi: plain REINFORCE. With `inner_epochs > 1` later passes see a changed policy, and PPO's
clipped surrogate (Schulman et al., 2017) keeps each pass near the policy that sampled the batch.
"""
from __future__ import annotations

import torch


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, advantages: torch.Tensor,
                clip_eps: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss [N, T] and a per-token "was clipped" indicator [N, T].

    `old_logp` is the sampling policy's log-prob (None: the current one, ratio 1); `advantages` is
    [N, 1] (one per sequence) or [N, T].

    >>> lp = torch.tensor([[0.0]], requires_grad=True)
    >>> loss, clipped = policy_loss(lp, torch.tensor([[-1.0]]), torch.tensor([[2.0]]), clip_eps=0.2)
    >>> round(loss.item(), 3), bool(clipped.item())  # ratio e = 2.718 clipped to 1.2: loss -1.2 * 2
    (-2.4, True)
    """
    reference = logp.detach() if old_logp is None else old_logp
    ratio = torch.exp(logp - reference)
    loss = -ratio * advantages
    if clip_eps is None:
        return loss, torch.zeros_like(loss, dtype=torch.bool)
    clipped_loss = -torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    return torch.maximum(loss, clipped_loss), (ratio - 1).abs() > clip_eps


def token_mean(per_token: torch.Tensor, mask: torch.Tensor, n_tokens: torch.Tensor | float) -> torch.Tensor:
    """Sum over the masked tokens divided by the step's token count.

    Dividing micro-batches by the whole step's count (not their own) makes gradient accumulation
    equal one big batch, and weighs every token equally (DAPO's token-level aggregation), so long
    completions are not down-weighted as a per-sequence mean would.
    """
    return (per_token * mask).sum() / n_tokens

"""Per-token log-probabilities of completions: shared by the likelihood objective and RL."""
from __future__ import annotations

import torch


def pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int):
    """Right-padded `input_ids`, `attention_mask` and a mask of the completion tokens."""
    lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(lengths), width), dtype=torch.long)
    completion = torch.zeros((len(lengths), width), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        input_ids[i, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attention[i, : len(p) + len(c)] = 1
        completion[i, len(p) : len(p) + len(c)] = True
    return input_ids, attention, completion


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False):
    """log p(targets) under `logits` [..., V] (and the entropy of each distribution if asked).

    Gathers before normalising with logsumexp, so the [..., V] log-softmax is never stored.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, -1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        entropy = lse - (torch.softmax(logits, -1) * logits).sum(-1)
    return logp, entropy


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """log p(x_t | x_<t) for t >= 1, shape [B, T-1]; position t-1 scores token t (right padding)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    return gather_logprobs(logits, input_ids[:, 1:])[0]

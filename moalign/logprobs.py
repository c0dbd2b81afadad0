"""Log-probabilities of completions given prompts, and sampling from shared prompts.

Prompts are often most of the tokens and are shared (RL samples several completions a prompt),
so `shared_prompt_logprobs` runs each prompt through the network once and reuses its key/value
cache for every completion of that prompt; gradients flow back through the shared prompt.
`generate_from_shared_prompts` does the same for sampling. This is the one module that hands a
KV cache to transformers.
"""
from __future__ import annotations

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

# transformers 5.2x renamed the KV cache `past_key_values` -> `cache` (the old name warns, and goes in
# 5.40); older releases know only the old name. This is the one place moalign passes a cache.
_CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def pad(seqs: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] ids and attention mask; `left=True` pads on the left, so every row ends at the same
    position (how prompts are laid out before their completions)."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            span = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, span] = torch.tensor(s, dtype=torch.long)
            mask[i, span] = 1
    return ids, mask


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


def shared_prompt_logprobs(model, prompt_ids, prompt_mask, rows, completion_ids, completion_mask,
                           temperature: float = 1.0, with_entropy: bool = False):
    """log p of every completion token, [N, T] (and entropies if asked), each prompt run once.

    `prompt_ids`/`prompt_mask` [B, P] are left-padded; `rows` [N] gives each completion's prompt;
    `completion_ids`/`completion_mask` [N, T] are right-padded. Position ids follow the masks, as
    in generation. Values at masked completion positions are meaningless.
    """
    T = completion_ids.shape[1]
    prompt_pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_pos, use_cache=True,
                logits_to_keep=1)
    logits = out.logits[rows, -1:]  # the last prompt position predicts completion token 0
    if T > 1:
        cache = out[_CACHE]
        cache.batch_select_indices(rows)  # one copy of the prompt's cache per completion
        positions = prompt_pos[rows, -1:] + torch.arange(1, T, device=completion_ids.device)
        attention = torch.cat([prompt_mask[rows], completion_mask[:, :-1]], 1)
        rest = model(input_ids=completion_ids[:, :-1], attention_mask=attention, position_ids=positions,
                     use_cache=True, **{_CACHE: cache}).logits
        logits = torch.cat([logits, rest], 1)
    return gather_logprobs(logits, completion_ids, temperature, with_entropy)


def _prompt_cache(model, prompt_ids, prompt_mask):
    """The KV cache of `prompt_ids` [B, P] with positions as `generate` gives them (left padding),
    or None where the model's cache cannot be repeated along the batch (see `generate_from_shared_prompts`)."""
    from transformers import DynamicCache

    position_ids = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1)
    cache = out[_CACHE] if _CACHE in out else None
    return cache if isinstance(cache, DynamicCache) else None


def generate_from_shared_prompts(model, prompt_ids, prompt_mask, n: int, **generate_kwargs):
    """`model.generate` on each prompt row repeated `n` times, the prompts prefilled once.

    All prompt tokens but the last go through the network once per distinct prompt; their cache is
    repeated to the `n` rows (`DynamicCache.batch_repeat_interleave`) and `generate` continues from
    it, processing the last prompt token itself, so its first decoding step and its random draws are
    those of a plain call on the repeated prompts: the same tokens under greedy decoding and the same
    distribution (and, up to float rounding, the same draws under one seed) when sampling.
    Returns None, having generated nothing, where the model's cache is not a `DynamicCache`
    (recurrent or static caches): the caller falls back to the plain call.
    """
    ids, mask = prompt_ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0)
    if prompt_ids.shape[1] < 2:
        return None
    cache = _prompt_cache(model, prompt_ids[:, :-1], prompt_mask[:, :-1])
    if cache is None:
        return None
    cache.batch_repeat_interleave(n)
    return model.generate(input_ids=ids, attention_mask=mask, use_cache=True, **{_CACHE: cache}, **generate_kwargs)

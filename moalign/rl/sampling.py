"""Sampling groups of completions and computing their token log-probabilities."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from moalign.logprobs import gather_logprobs, generate_from_shared_prompts, shared_prompt_logprobs
from moalign.models import format_prompt


def _is_hf_model(model) -> bool:
    """A transformers model or a peft wrapper of one: what the shared-prompt path may run a
    forward pass on and hand a cache (decoding-time mixtures and other model-like objects are not)."""
    from peft import PeftModel
    from transformers import PreTrainedModel

    return isinstance(model, (PreTrainedModel, PeftModel))


@contextmanager
def owned_generation(model):
    """Generation from moalign's own settings only: the model's `generation_config` (what its
    checkpoint's generation_config.json said) is swapped for one that keeps its special token ids
    and nothing else while `model` generates. Otherwise transformers fills every field a call leaves
    unset from it, and a checkpoint's repetition_penalty or min_p would make training sample from
    another distribution than the one its loss and KL differentiate, and make one front's policies
    decode by different rules. Objects that are no transformers model (a decoding-time mix) apply
    their own warpers and are left alone."""
    from transformers import GenerationConfig

    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    original = getattr(target, "generation_config", None) if _is_hf_model(model) else None
    if original is None:
        yield
        return
    ids = {k: getattr(original, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")}
    # transformers fills what a call leaves unset from `model.generation_config`: now this one's defaults
    target.generation_config = GenerationConfig(**{k: v for k, v in ids.items() if v is not None})
    try:
        yield
    finally:
        target.generation_config = original


@dataclass
class Rollout:
    """Sampled sequences: left-padded prompts then right-padded completions, one row a sample."""

    input_ids: torch.Tensor  # [N, P + T]
    attention_mask: torch.Tensor  # [N, P + T]
    completion_mask: torch.Tensor  # [N, T] True for completion tokens up to and including EOS
    texts: list[str]  # decoded completions
    prompt_index: list[int]  # which prompt of the step each row belongs to

    @property
    def n_completion(self) -> int:
        return self.completion_mask.shape[1]

    def padded(self, n_completion: int, pad_token_id: int) -> Rollout:
        """The same samples, completions right-padded (masked out) to `n_completion` tokens."""
        extra = n_completion - self.n_completion
        if extra <= 0:
            return self

        def pad(t, value):
            return torch.cat([t, t.new_full((t.shape[0], extra), value)], 1)

        return Rollout(pad(self.input_ids, pad_token_id), pad(self.attention_mask, 0), pad(self.completion_mask, False),
                       self.texts, self.prompt_index)


@torch.no_grad()  # not inference_mode: the samples feed an autograd forward later
def generate(model, tokenizer, prompts: list[str], n: int, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, use_chat_template: bool = True, seed: int | None = None,
             share_prompt: bool = True, static_cache: bool = False, synced: bool = False) -> Rollout:
    """`n` completions per prompt, grouped (rows i*n ... i*n+n-1 belong to prompt i).

    `temperature == 0` decodes greedily. Seeding per call makes a step's samples reproducible,
    so a resumed run draws what the uninterrupted run would have drawn.
    `share_prompt` prefills each distinct prompt once and repeats its KV cache to its `n` rows
    (`moalign.logprobs.generate_from_shared_prompts`: same tokens as the plain call); models whose
    cache cannot be repeated, and model-like objects that are no transformers/peft model, take the
    plain call. `static_cache` (CUDA only, ignored on CPU) decodes with a static KV cache, which
    transformers compiles with torch.compile; it takes the plain call. `synced` keeps every process
    of a sharded (FSDP) run stepping until all have finished, since each step gathers weights together.
    """
    if seed is not None:
        torch.manual_seed(seed)
    texts = [format_prompt(tokenizer, p, use_chat_template) for p in prompts]
    templated = use_chat_template and bool(getattr(tokenizer, "chat_template", None))
    device = next(model.parameters()).device
    static_cache = static_cache and device.type == "cuda"
    # A static cache is compiled for one shape: prompts padded to a multiple of 64 make steps repeat shapes.
    # Synced, at least 2 tokens, so that every process prefills its shared prompts (one more pad changes nothing).
    # Left padding whatever the tokenizer's default: generation continues from each row's right edge.
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=not templated,
                    pad_to_multiple_of=64 if static_cache else (2 if synced else None))
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    sampling = dict(do_sample=True, temperature=temperature, top_k=top_k or None, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id, **sampling, **({"synced_gpus": True} if synced else {}))
    out = None
    hf = _is_hf_model(model)
    with owned_generation(model):
        if static_cache and hf:  # a decoding-time mix runs its own loop, with its own caches
            kwargs["cache_implementation"] = "static"
        elif share_prompt and n > 1 and hf:
            out = generate_from_shared_prompts(model, prompt_ids, prompt_mask, n, **kwargs)
        ids, mask = prompt_ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0)
        if out is None:
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    completion = out[:, ids.shape[1]:]
    # Keep tokens up to and including the first EOS: stopping is one of the policy's actions.
    is_eos = completion == tokenizer.eos_token_id
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
    completion_mask = ~after_eos
    completion = completion.masked_fill(~completion_mask, tokenizer.pad_token_id)
    decoded = tokenizer.batch_decode(completion.masked_fill(is_eos, tokenizer.pad_token_id), skip_special_tokens=True)
    return Rollout(
        input_ids=torch.cat([ids, completion], 1),
        attention_mask=torch.cat([mask, completion_mask.long()], 1),
        completion_mask=completion_mask,
        texts=[t.strip() for t in decoded],
        prompt_index=[i // n for i in range(len(decoded))],
    )


def completion_logprobs(model, input_ids, attention_mask, n_completion: int, temperature: float = 1.0,
                        with_entropy: bool = False):
    """log p of each completion token [N, T] (and the policy's per-token entropy if asked).

    Position ids follow the attention mask, as in generation with left padding; logits are
    computed for the completion positions only (`logits_to_keep`), which skips the LM head on
    the prompt.
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   logits_to_keep=n_completion + 1, use_cache=False).logits[:, :-1]
    return gather_logprobs(logits, input_ids[:, -n_completion:], temperature, with_entropy)


def grouped_completion_logprobs(model, input_ids, attention_mask, n_completion: int, group_size: int,
                                temperature: float = 1.0, with_entropy: bool = False):
    """Same values as `completion_logprobs` for a rollout whose groups of `group_size` rows share
    a prompt: each prompt goes through the network once (see `shared_prompt_logprobs`)."""
    P = input_ids.shape[1] - n_completion
    rows = torch.arange(input_ids.shape[0], device=input_ids.device) // group_size
    return shared_prompt_logprobs(model, input_ids[::group_size, :P], attention_mask[::group_size, :P], rows,
                                  input_ids[:, P:], attention_mask[:, P:], temperature, with_entropy)

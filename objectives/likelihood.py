"""Fluency as the log-probability of the completion given the prompt under a reference LM."""
from __future__ import annotations

import numpy as np

from moalign.errors import ConfigError
from moalign.objective import MAXIMIZE, Batch, Objective


class Likelihood(Objective):
    """Mean (or summed) token log-probability of the completion; prompt tokens are masked.

    An empty completion scores 0.0 (the log-probability of nothing), not NaN.
    """

    name = "likelihood"
    direction = MAXIMIZE

    def __init__(self, model: str = "smollm2-135m-instruct", reduce: str = "mean",
                 use_chat_template: bool = True, batch_size: int = 16, device: str | None = None):
        if reduce not in ("mean", "sum"):
            raise ConfigError(f"objective 'likelihood': reduce must be 'mean' or 'sum', got {reduce!r}")
        self.model = model
        self.reduce = reduce
        self.use_chat_template = use_chat_template
        self.batch_size = int(batch_size)
        self.device = device

    def _token_ids(self, tokenizer, batch: Batch):
        from moalign.models import format_prompt

        prompts, completions = [], []
        templated = self.use_chat_template and bool(getattr(tokenizer, "chat_template", None))
        for prompt, completion in zip(batch.prompts, batch.completions):
            text = format_prompt(tokenizer, prompt, self.use_chat_template)
            ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
            if not ids:  # the first completion token needs some context to be scored
                ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
            prompts.append(ids)
            completions.append(tokenizer(completion, add_special_tokens=False)["input_ids"])
        return prompts, completions

    def _score(self, batch: Batch) -> np.ndarray:
        import torch

        from moalign.logprobs import pack, token_logprobs
        from moalign.models import cached_tokenizer, frozen_causal_lm

        tokenizer = cached_tokenizer(self.model)
        model = frozen_causal_lm(self.model, self.device)
        prompts, completions = self._token_ids(tokenizer, batch)
        # Sort by length so each mini-batch pads little; restore the order at the end.
        order = np.argsort([len(p) + len(c) for p, c in zip(prompts, completions)])
        values = np.zeros(len(batch))
        device = next(model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            ids, attention, mask = pack([prompts[i] for i in idx], [completions[i] for i in idx], tokenizer.pad_token_id)
            with torch.inference_mode():
                lp = token_logprobs(model, ids.to(device), attention.to(device)).cpu()
            mask = mask[:, 1:]
            total = (lp * mask).sum(-1)
            count = mask.sum(-1)
            out = total if self.reduce == "sum" else total / count.clamp(min=1)
            values[idx] = out.double().numpy()
        return values

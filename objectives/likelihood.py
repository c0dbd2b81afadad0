"""Fluency as the log-probability of the completion given the prompt under a reference LM."""
from __future__ import annotations

import numpy as np

from moalign.errors import MoalignError
from moalign.objective import MAXIMIZE, Batch, Objective


class Likelihood(Objective):
    """Mean (or summed) token log-probability of the completion; prompt tokens are masked. <= 0.

    An empty completion (or one with no tokens) scores log p(EOS | prompt): the model's
    probability of ending right away, which is what answering nothing costs. Scoring it 0 (the
    log-probability of no tokens) would make silence the most fluent answer there is.
    """

    name = "likelihood"
    direction = MAXIMIZE
    bounds = (None, 0.0)
    param_choices = {"reduce": ("mean", "sum")}
    param_ranges = {"batch_size": (1, None)}

    def __init__(self, model: str = "smollm2-135m-instruct", reduce: str = "mean",
                 use_chat_template: bool = True, batch_size: int = 16, device: str | None = None):
        self.model = model
        self.reduce = reduce
        self.use_chat_template = use_chat_template
        self.batch_size = batch_size
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
            completions.append(tokenizer(completion, add_special_tokens=False)["input_ids"] or self._eos(tokenizer))
        return prompts, completions

    def _eos(self, tokenizer) -> list[int]:
        """The one token an empty completion is: the end of sequence."""
        if tokenizer.eos_token_id is None:
            raise MoalignError(f"objective {self.name!r}: model {self.model!r} has no eos token, so an empty "
                               "completion has no likelihood")
        return [tokenizer.eos_token_id]

    def _score(self, batch: Batch) -> np.ndarray:
        import torch

        from moalign.logprobs import pad, shared_prompt_logprobs
        from moalign.models import cached_tokenizer, frozen_causal_lm

        tokenizer = cached_tokenizer(self.model)
        model = frozen_causal_lm(self.model, self.device)
        device = next(model.parameters()).device
        prompts, completions = self._token_ids(tokenizer, batch)
        keys = [tuple(p) for p in prompts]
        # Samples sorted by prompt: a prompt's completions share one mini-batch (and one prompt
        # pass), and neighbouring prompts have similar lengths, so little padding.
        order = sorted(range(len(batch)), key=lambda i: (len(keys[i]), keys[i]))
        values = np.zeros(len(batch))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            unique = list(dict.fromkeys(keys[i] for i in idx))
            rows = torch.tensor([unique.index(keys[i]) for i in idx], device=device)
            p_ids, p_mask = pad([list(k) for k in unique], tokenizer.pad_token_id, left=True)
            c_ids, c_mask = pad([completions[i] for i in idx], tokenizer.pad_token_id)
            with torch.inference_mode():
                lp = shared_prompt_logprobs(model, p_ids.to(device), p_mask.to(device), rows,
                                            c_ids.to(device), c_mask.to(device))[0].cpu()
            total = (lp * c_mask).sum(-1)
            out = total if self.reduce == "sum" else total / c_mask.sum(-1).clamp(min=1)
            values[idx] = out.double().numpy()
        return values

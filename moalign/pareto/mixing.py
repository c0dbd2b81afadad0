"""Decoding-time mixing of endpoint policies (MOD; Shi et al., 2024, "Decoding-Time Language
Model Alignment with Multiple Objectives", arXiv:2406.18853): the policy for weights w draws each
next token from softmax(sum_i w_i log p_i(. | prefix)), p_i the policies trained for one objective
each.

Why it is a policy for w: under reverse KL to a shared reference, the optimum for the reward
sum_i w_i r_i is proportional to prod_i p_i^{w_i} (weights summing to 1) over whole sequences;
MOD takes that product token by token. No training beyond the endpoints, as with soups, but the
price is paid at decoding: every token runs each endpoint with a nonzero weight. For LoRA
endpoints on one base, peft's mixed-adapter batch inference (`adapter_names=`, one adapter per
row) runs them all in ONE forward a token over K replicas of the batch, each with its KV cache.
Full fine-tuning endpoints are K whole models, one forward each a token.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch

from moalign.errors import MoalignError
from moalign.logprobs import _CACHE
from moalign.models import load_causal_lm, load_tokenizer
from moalign.rl.config import ModelConfig


def check_weights(weights: Sequence[float], k: int) -> list[float]:
    """The mixing weights as floats: one per endpoint, finite, with a positive sum (a sum <= 0
    would turn the product into a preference for what the endpoints avoid).

    >>> check_weights([0.25, 0.75], 2)
    [0.25, 0.75]
    """
    weights = [float(w) for w in weights]
    if len(weights) != k:
        raise MoalignError(f"mixing weights {weights}: expected {k}, one per endpoint")
    if not all(torch.isfinite(torch.tensor(weights))) or sum(weights) <= 0:
        raise MoalignError(f"mixing weights {weights}: expected finite numbers with a positive sum")
    return weights


class DecodingMix:
    """A base model with K endpoint adapters loaded once; `mixed(weights)` yields a policy that
    decodes with their weighted product (same surface as `moalign.pareto.soups.AdapterSoup`)."""

    def __init__(self, model: ModelConfig, adapter_dirs: Sequence[str | Path], device: str | None = None):
        if not adapter_dirs:
            raise MoalignError("decoding-time mixing needs at least one endpoint")
        self.config = model
        self.tokenizer = load_tokenizer(model.name, trust_remote_code=model.trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.names = [f"endpoint{i}" for i in range(len(adapter_dirs))]

        def load():
            return load_causal_lm(model.name, model.dtype, device, model.trust_remote_code, model.attn_implementation)

        if model.lora:
            from peft import PeftModel

            from moalign.rl.policy import peft_wrapping

            with peft_wrapping():
                self.model = PeftModel.from_pretrained(load(), str(adapter_dirs[0]), adapter_name=self.names[0])
            for name, path in zip(self.names[1:], adapter_dirs[1:]):
                self.model.load_adapter(str(path), adapter_name=name)
            self.models = None
        else:  # no shared base to batch through: K whole models (K times the memory)
            self.models = []
            for path in adapter_dirs:
                endpoint = load()
                endpoint.load_state_dict(torch.load(Path(path) / "model.pt", map_location=endpoint.device,
                                                    weights_only=True))
                self.models.append(endpoint.eval().requires_grad_(False))
            self.model = self.models[0]
        # eval for good: peft refuses `adapter_names` in training mode, and nothing here trains
        self.model.eval().requires_grad_(False)

    def policy(self, weights: Sequence[float]) -> "MixedPolicy":
        """The policy decoding with prod_i p_i^{w_i}, valid as long as this DecodingMix."""
        return MixedPolicy(self, check_weights(weights, len(self.names)))

    @contextmanager
    def mixed(self, weights: Sequence[float]):
        """`policy(weights)` as a context manager like AdapterSoup.mixed, though nothing needs
        undoing: the mix lives in the decoding loop, not in the weights."""
        yield self.policy(weights)

    def logprobs(self, active: list[int], input_ids, attention_mask, position_ids, caches):
        """log p_i(. | prefix) at the last position, [len(active), N, V], for the endpoints
        `active`; `caches` (one per forward, None at first) are updated in place or created."""
        n = input_ids.shape[0]
        if self.models is None:  # one forward over the replicas, endpoint-major rows
            reps = len(active)
            out = self.model(input_ids=input_ids.repeat(reps, 1), attention_mask=attention_mask.repeat(reps, 1),
                             position_ids=position_ids.repeat(reps, 1), use_cache=True, logits_to_keep=1,
                             adapter_names=[self.names[i] for i in active for _ in range(n)],
                             **{_CACHE: caches[0]})
            caches[0] = out[_CACHE]
            logits = out.logits[:, -1].view(reps, n, -1)
        else:
            logits = []
            for j, i in enumerate(active):
                out = self.models[i](input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                     use_cache=True, logits_to_keep=1, **{_CACHE: caches[j]})
                caches[j] = out[_CACHE]
                logits.append(out.logits[:, -1])
            logits = torch.stack(logits)
        return torch.log_softmax(logits.float(), -1)


class MixedPolicy:
    """What `DecodingMix.mixed` yields: model-like enough for `moalign.rl.sampling.generate` and
    `evaluate_policy` (generate, parameters, training, eval, train)."""

    def __init__(self, mix: DecodingMix, weights: list[float]):
        self.mix, self.weights = mix, weights
        self.active = [i for i, w in enumerate(weights) if w != 0]  # a zero weight costs no forward
        self.training = False
        self.generation_config = mix.model.generation_config

    @property
    def forwards_per_token(self) -> int:
        """Endpoint forwards each token costs (those with a nonzero weight): a search's
        `cost/forward_tokens` for this policy is this many times the tokens it decodes."""
        return len(self.active)

    def parameters(self):
        return self.mix.model.parameters()

    def train(self, mode: bool = True):
        self.training = mode  # a flag only: the endpoints stay in eval mode
        return self

    def eval(self):
        return self.train(False)

    def save_pretrained(self, *args, **kwargs):
        raise MoalignError("a decoding-time mix has no single set of weights to save: it runs its endpoints "
                           "side by side at every token (export the endpoints, or a soup at these weights)")

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 20, pad_token_id=None, eos_token_id=None,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
                 logits_processor=None):
        """[N, P + T] ids: left-padded prompts, then up to `max_new_tokens` tokens, each drawn from
        the mix after HF's temperature, top-k and top-p warpers (argmax if not `do_sample`); a row
        stops at EOS and is padded after, and decoding stops once every row has. Extra
        `logits_processor`s see sum_i w_i log p_i before the warpers, as in HF generate."""
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        tokenizer = self.mix.tokenizer
        pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
        eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        eos = torch.tensor([eos] if isinstance(eos, int) else list(eos), device=input_ids.device)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        warpers = LogitsProcessorList(logits_processor or [])
        if do_sample:  # the order of HF generate's own warpers
            if temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(temperature))
            if top_k:
                warpers.append(TopKLogitsWarper(top_k))
            if top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p))
        active = self.active
        w = torch.tensor([self.weights[i] for i in active], device=input_ids.device).view(-1, 1, 1)
        caches = [None] * (1 if self.mix.models is None else len(active))
        ids, step_ids = input_ids, input_ids
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions follow the mask
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            logp = self.mix.logprobs(active, step_ids, mask, positions, caches)
            scores = warpers(ids, (w * logp).sum(0))
            if do_sample:
                token = torch.multinomial(torch.softmax(scores, -1), 1).squeeze(1)
            else:
                token = scores.argmax(-1)
            token = token.masked_fill(done, pad_token_id)
            done |= torch.isin(token, eos)
            ids = torch.cat([ids, token[:, None]], 1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)  # as HF generate extends it
            step_ids, positions = token[:, None], positions[:, -1:] + 1
            if done.all():
                break
        return ids

"""Rewarded soups (Ramé et al., 2023): policies for intermediate weights by interpolating the
fine-tuned weights of per-objective runs, instead of training one run per weight vector.

For LoRA, interpolating A and B separately would not interpolate the weight deltas (B A is
bilinear), so the mix uses peft's `cat` combination: A = [w_i s_i A_i], B = [B_i], which gives
exactly delta = sum_i w_i s_i B_i A_i.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch

from moalign.models import load_causal_lm, load_tokenizer
from moalign.rl.config import ModelConfig
from moalign.rl.policy import peft_wrapping

MIX = "soup"


class AdapterSoup:
    """A base model with several fine-tuned adapters loaded once; `mixed(weights)` yields a policy."""

    def __init__(self, model: ModelConfig, adapter_dirs: Sequence[str | Path], device: str | None = None):
        from peft import PeftModel

        self.config = model
        self.tokenizer = load_tokenizer(model.name, trust_remote_code=model.trust_remote_code)
        self.tokenizer.padding_side = "left"
        base = load_causal_lm(model.name, model.dtype, device, model.trust_remote_code, model.attn_implementation)
        self.names = [f"endpoint{i}" for i in range(len(adapter_dirs))]
        if model.lora:
            with peft_wrapping():
                self.model = PeftModel.from_pretrained(base, str(adapter_dirs[0]), adapter_name=self.names[0])
            for name, path in zip(self.names[1:], adapter_dirs[1:]):
                self.model.load_adapter(str(path), adapter_name=name)
            self.states = None
        else:  # full fine-tuning: interpolate the weights themselves
            self.model = base
            self.states = [torch.load(Path(p) / "model.pt", map_location="cpu", weights_only=True) for p in adapter_dirs]
            self.base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
        self.model.eval().requires_grad_(False)

    @contextmanager
    def mixed(self, weights: Sequence[float]):
        """The policy base + sum_i w_i * delta_i (weights need not sum to 1)."""
        weights = [float(w) for w in weights]
        if self.states is None:
            active = [(n, w) for n, w in zip(self.names, weights) if w != 0]
            if not active:
                with self.model.disable_adapter():
                    yield self.model
                return
            self.model.add_weighted_adapter([n for n, _ in active], [w for _, w in active], MIX, combination_type="cat")
            self.model.set_adapter(MIX)
            try:
                yield self.model
            finally:
                self.model.set_adapter(self.names[0])
                self.model.delete_adapter(MIX)
        else:
            mixed = {k: v + sum(w * (s[k] - v) for w, s in zip(weights, self.states)) if v.is_floating_point() else v
                     for k, v in self.base_state.items()}
            self.model.load_state_dict(mixed)
            try:
                yield self.model
            finally:
                self.model.load_state_dict(self.base_state)

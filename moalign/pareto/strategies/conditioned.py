"""Conditioned: one weight-conditioned policy per seed (Conditioned Language Policies, Rewards-in-
Context, Panacea; `moalign.rl.conditioning`), trained once under weights drawn per prompt group,
then evaluated at every weight vector of the search without more training, each told its weights
in the prompt.

The training run (role `conditioned-train`, key `conditioned-train:s<seed>`) is a helper, not a
point of the front: its own evaluation is at `reward.weights`. Each weight vector is an
evaluation child (role `conditioned`, key `conditioned:<weights>:s<seed>`) whose tag
`moalign.endpoints` names the training run and whose param `reward.weights` holds the weights, so
that `moalign.load_policy` rebuilds it: that run's weights with a tokenizer whose chat template
states the weights (`conditioned_tokenizer`). The weights are stated in hundredths, the precision
the policy was trained at.
"""
from __future__ import annotations

from dataclasses import dataclass

from moalign.pareto.strategies.base import Strategy, TrainUnit, check_training

TRAIN_ROLE = "conditioned-train"  # a helper (children.HELPER_ROLES): no point of the front
ROLE = "conditioned"


@dataclass
class Options:
    """No options of its own: the weights are drawn as `train.conditioning` says."""

    def check(self, config) -> None:
        """The training run's config, conditioned, is checked before anything runs."""
        check_training(config, conditioning={"enabled": True})


class Conditioned(Strategy):
    name = "conditioned"
    Options = Options

    def next_units(self, done):
        units = []
        for seed in self.config.training_seeds:
            training = TrainUnit(None, seed, role=TRAIN_ROLE)
            if training.key not in done:
                units.append(training)
                continue
            row = done[training.key]
            units += self.evaluations(ROLE, row, seed, done)
        return units

    def train_config(self, unit: TrainUnit):
        cfg = super().train_config(unit)
        cfg.conditioning.enabled = True  # drawn as `train.conditioning` says (default: Dirichlet(1))
        return cfg

    def policies(self, units):
        if units[0].role == "base":
            yield from super().policies(units)
            return
        from pathlib import Path

        from moalign.models import apply_weights, load_causal_lm, load_tokenizer
        from moalign.rl.conditioning import conditioned_tokenizer

        model_cfg = self.config.train.model
        tokenizer = load_tokenizer(model_cfg.name, model_cfg.trust_remote_code)
        tokenizer.padding_side = "left"
        base = load_causal_lm(model_cfg.name, model_cfg.dtype, None, model_cfg.trust_remote_code,
                             model_cfg.attn_implementation)
        model = apply_weights(base, model_cfg, Path(units[0].source_dirs[0])).eval()  # merged, as load_policy builds it
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        names = list(self.config.train.reward.objectives)
        for unit in units:
            yield unit, model, conditioned_tokenizer(tokenizer, names, unit.weights)


STRATEGY = Conditioned

"""Rewards-in-Context (Yang et al., 2024): one supervised run on the whole pool of scored training
samples, each sample's scores stated in its prompt (`moalign.rl.rewards_in_context`), then every
weight vector of the search evaluated without more training, the policy asked in its prompt for
the scores RiC's preference-to-reward mapping gives that vector: one run's cost for the whole front.

Children: the pool (`pool:train:s<seed>`, shared with `rejection`), the training run (role
`rewards_in_context-train`, a helper evaluated at `reward.weights`) and one evaluation child per
weight vector (role `rewards_in_context`, key `rewards_in_context:<weights>:s<seed>`, tag
`moalign.endpoints` naming the training run, param `reward.weights`), which `load_policy` rebuilds
as that run's weights with a tokenizer stating the vector's targets.
"""
from __future__ import annotations

from dataclasses import dataclass

from moalign.pareto.strategies.base import TrainUnit, check_training
from moalign.pareto.strategies.pooled import PoolOptions, Pooled

TRAIN_ROLE = "rewards_in_context-train"  # a helper (children.HELPER_ROLES)
ROLE = "rewards_in_context"


@dataclass
class Options(PoolOptions):
    def check(self, config) -> None:
        """The one fine-tune's config, checked before anything runs (e.g. it needs the chat template)."""
        check_training(config, supervised={"enabled": True, "pool": "pool.parquet", "select": "rewards_in_context"})


class RewardsInContext(Pooled):
    name = "rewards_in_context"
    Options = Options

    def next_units(self, done):
        units = []
        for seed in self.config.training_seeds:
            pool = self.pool_unit(seed)
            if pool.key not in done:
                units.append(pool)
                continue
            training = TrainUnit(None, seed, TRAIN_ROLE, pool=str(done[pool.key]["adapter_dir"]))
            if training.key not in done:
                units.append(training)
                continue
            row = done[training.key]
            units += self.evaluations(ROLE, row, seed, done)
        return units

    def train_config(self, unit):
        cfg = super().train_config(unit)
        sup = cfg.supervised
        sup.enabled, sup.pool, sup.select = True, unit.pool, "rewards_in_context"
        return cfg

    def policies(self, units):
        if units[0].role != ROLE:
            yield from super().policies(units)
            return
        from pathlib import Path

        from moalign.models import apply_weights, load_causal_lm, load_tokenizer
        from moalign.rl.rewards_in_context import ScoreScale, targets_tokenizer

        model_cfg = self.config.train.model
        adapter = Path(units[0].source_dirs[0])
        scale = ScoreScale.load(adapter)
        tokenizer = load_tokenizer(model_cfg.name, model_cfg.trust_remote_code)
        tokenizer.padding_side = "left"
        base = load_causal_lm(model_cfg.name, model_cfg.dtype, None, model_cfg.trust_remote_code, model_cfg.attn_implementation)
        model = apply_weights(base, model_cfg, adapter).eval()
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        for unit in units:
            yield unit, model, targets_tokenizer(tokenizer, scale.names, scale.targets(unit.weights))


STRATEGY = RewardsInContext

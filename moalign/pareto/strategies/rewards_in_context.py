"""Rewards-in-Context (Yang et al., 2024): one supervised run on the whole pool of scored training
samples, each sample's scores stated in its prompt (`moalign.rl.rewards_in_context`), then every
weight vector of the search evaluated without more training, the policy asked in its prompt for
the scores RiC's preference-to-reward mapping gives that vector: one run's cost for the whole front.

Children: the pool (`pool:train:s<seed>`, shared with `rejection`), the training run (role
`rewards_in_context-train`, a helper evaluated at `reward.weights`) and one evaluation child per
weight vector (role `rewards_in_context`, key `rewards_in_context:<weights>:s<seed>`, tag
`moalign.endpoints` naming the training run, param `reward.weights`), which `load_policy` rebuilds
as that run's weights with a tokenizer stating the vector's targets.

`options.online: R` adds RiC's online stage, R rounds of it: round r samples a pool from the
policy round r - 1 trained, each training prompt asking for the targets of one of the search's
weight vectors in turn (`pool:train:online<r>:s<seed>`, `PoolSpec.ask`), then continues fine-tuning
that policy on the first pool and every online pool so far (`supervised.online_pools`), each
sample stated with the scores it got, on the first run's scale, only the samples near the front
kept (`options.online_quantile`, RiC's multi-objective rejection sampling). The front is the last
round's policy.
"""
from __future__ import annotations

from dataclasses import dataclass

from moalign.errors import ConfigError
from moalign.pareto.children import weights_key
from moalign.pareto.strategies.base import TrainUnit, check_training
from moalign.pareto.strategies.pooled import PoolOptions, Pooled, _integer

TRAIN_ROLE = "rewards_in_context-train"  # a helper (children.HELPER_ROLES)
ROLE = "rewards_in_context"


@dataclass
class Options(PoolOptions):
    online: int = 0  # rounds of online augmentation (RiC's online stage); 0: the offline run alone
    online_quantile: float = 0.7  # a sample is kept if some objective is at or above this quantile of its source's

    def __post_init__(self):
        super().__post_init__()
        _integer(self.online, "online", low=0)
        q = self.online_quantile
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q < 1:
            raise ConfigError(f"options.online_quantile must be a number in [0, 1), got {q!r}")

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
            first = str(done[pool.key]["adapter_dir"])
            training, online = TrainUnit(None, seed, TRAIN_ROLE, pool=first), []
            for r in range(1, self.options.online + 1):
                if training.key not in done:
                    break
                adapter = str(done[training.key]["adapter_dir"])
                asked = self.pool_unit(seed, adapter, tag=f"online{r}", ask=";".join(weights_key(w) for w in self.W))
                if asked.key not in done:
                    training = asked
                    break
                online.append(str(done[asked.key]["adapter_dir"]))
                training = TrainUnit(None, seed, TRAIN_ROLE, init_adapter=adapter, pool=first, tag=f"online{r}",
                                     online_pools=tuple(online))
            if training.key not in done:
                units.append(training)
                continue
            units += self.evaluations(ROLE, done[training.key], seed, done)
        return units

    def train_config(self, unit):
        cfg = super().train_config(unit)
        sup = cfg.supervised
        sup.enabled, sup.pool, sup.select = True, unit.pool, "rewards_in_context"
        if unit.online_pools:  # the offline round's config is the plain run's: a search with or without rounds shares it
            sup.online_pools, sup.online_quantile = list(unit.online_pools), float(self.options.online_quantile)
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

"""Decoding-time mixing (MOD; Shi et al., 2024): train one policy per objective, as soups do (the
same runs, reused), then evaluate each weight vector in between as a policy that decodes every
token from the endpoints' weighted product (`moalign.pareto.mixing.DecodingMix`), each seed mixing
its own endpoints. Children: role `mix`, key `mix:<weights>:s<seed>`, tag `moalign.endpoints`."""
from __future__ import annotations

from dataclasses import replace

from moalign.pareto.strategies.base import EvalUnit
from moalign.pareto.strategies.soups import Soups

ROLE = "mix"


class Mixing(Soups):
    """Soups' plan (endpoints first, then the weight vectors between them, one-hot ones skipped as
    they are the endpoints), with each soup unit evaluated as a decoding-time mix instead."""

    name = "mixing"

    def next_units(self, done):
        units = []
        for unit in super().next_units(done):
            if isinstance(unit, EvalUnit) and unit.role == "soup":
                unit = replace(unit, role=ROLE, group=f"{ROLE}:s{unit.seed}")
                if unit.key in done:
                    continue
            units.append(unit)
        return units

    def policies(self, units):
        if units[0].role != ROLE:
            yield from super().policies(units)
            return
        from moalign.pareto.mixing import DecodingMix

        mix = DecodingMix(self.config.train.model, list(units[0].source_dirs))  # endpoints loaded once a group
        for unit in units:
            yield unit, mix.policy(unit.weights), mix.tokenizer


STRATEGY = Mixing

"""Rewarded soups (Ramé et al., 2023): train one policy per objective (the one-hot weights), then
evaluate the weight vectors in between by interpolating the endpoints' fine-tuned weights
(`moalign.pareto.soups.AdapterSoup`), each seed mixing its own endpoints."""
from __future__ import annotations

import numpy as np

from moalign.pareto.children import weights_key
from moalign.pareto.strategies.base import EvalUnit, Strategy, TrainUnit


class Soups(Strategy):
    name = "soups"

    def next_units(self, done):
        units = []
        for seed in self.config.training_seeds:
            ends = [TrainUnit(tuple(float(x) for x in e), seed) for e in np.eye(len(self.names))]
            missing = [u for u in ends if u.key not in done]
            if missing:
                units += missing
                continue
            rows = [done[u.key] for u in ends]
            ids = tuple(r["run_id"] for r in rows)
            # a soup at a one-hot weight vector is its endpoint: evaluating it again would count one
            # policy twice on the front
            for w in self.W:
                if weights_key(w) in {r["weights"] for r in rows}:
                    continue
                unit = EvalUnit("soup", tuple(float(x) for x in w), seed, ids if all(ids) else (),
                                tuple(str(r["adapter_dir"]) for r in rows), group=f"soup:s{seed}")
                if unit.key not in done:
                    units.append(unit)
        return units

    def policies(self, units):
        if units[0].role == "base":
            yield from super().policies(units)
            return
        from moalign.pareto.soups import AdapterSoup

        soup = AdapterSoup(self.config.train.model, list(units[0].source_dirs))
        for unit in units:
            with soup.mixed(unit.weights) as model:
                yield unit, model, soup.tokenizer


STRATEGY = Soups

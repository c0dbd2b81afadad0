"""Grid: one RL run per weight vector (and training seed), the baseline every other strategy is
measured against."""
from __future__ import annotations

from moalign.pareto.strategies.base import Strategy, TrainUnit


class Grid(Strategy):
    name = "grid"

    def next_units(self, done):
        units = [TrainUnit(tuple(float(x) for x in w), seed) for seed in self.config.training_seeds for w in self.W]
        return [u for u in units if u.key not in done]


STRATEGY = Grid

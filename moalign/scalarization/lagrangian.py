"""Lagrange multipliers for reward constraints, learnt by projected dual ascent.

Constrained RLHF (Moskovitz et al. 2023) and Safe RLHF (Dai et al. 2023) maximise
reward - lambda * (cost - threshold) and move lambda along the measured constraint gap:
lambda <- clip(lambda + lr * g, 0, lambda_max), g the batch's mean signed gap. lambda grows while
the constraint is broken and decays to 0 once it holds with room to spare, so a satisfied
constraint stops costing reward. The gap is in normalised units (see the normalisers' `scale`),
so one learning rate fits every objective.
"""
from __future__ import annotations

from moalign.errors import MoalignError


class LagrangeMultipliers:
    """One multiplier per constraint.

    >>> m = LagrangeMultipliers(2, lr=0.5, init=0.0, maximum=1.0)
    >>> m.step([1.0, -1.0])
    [0.5, 0.0]
    """

    def __init__(self, n: int, lr: float, init: float, maximum: float):
        self.lr, self.maximum = lr, maximum
        self.values = [float(init)] * n

    def step(self, gaps) -> list[float]:
        """One ascent step on the batch's mean signed gaps (None: no valid sample, no step)."""
        self.values = [lam if g is None else min(max(lam + self.lr * float(g), 0.0), self.maximum)
                       for lam, g in zip(self.values, gaps)]
        return list(self.values)

    def state_dict(self) -> list[float]:
        return list(self.values)

    def load_state_dict(self, state: list) -> None:
        if len(state) != len(self.values):
            raise MoalignError(f"reward state has {len(state)} Lagrange multipliers for {len(self.values)} constraints")
        self.values = [float(v) for v in state]

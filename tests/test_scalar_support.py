"""Helpers for the tests/test_scalar_*.py files: objectives whose raw scores the test writes itself.

A completion "0.5 30 nan" scores 0.5 in column 0, 30 in column 1 and NaN in column 2 (an invalid
sample, as an objective configured with `on_invalid: drop` reports it), so every test chooses the
exact raw scores the reward sees, with no model in the way.
"""
import numpy as np

from moalign import Batch, Objective, register_objective
from moalign.rl.config import RewardConfig
from moalign.rl.reward import MultiObjectiveReward


class Column(Objective):
    """Reads number `index` of the completion; `direction` says which way is better."""

    name = "column"

    def __init__(self, index: int = 0, direction: str = "maximize"):
        self.index, self.direction = index, direction

    def score(self, batch):
        # Bypasses the base class's validation on purpose: the tests feed NaN and inf directly.
        return np.array([float(c.split()[self.index]) for c in batch.completions])


class LastColumnMinimized(Column):
    """A registered objective for constraint-only tests (those are built by name, with defaults)."""

    name = "scalar_test_cost"

    def __init__(self, index: int = -1, direction: str = "minimize"):
        super().__init__(index, direction)


register_objective("scalar_test_cost", LastColumnMinimized)


def make_batch(rows, groups=None) -> Batch:
    """One sample per row of raw scores; `groups` ties samples of one prompt (default: one group)."""
    rows = np.atleast_2d(np.asarray(rows, dtype=float))
    groups = np.zeros(len(rows), dtype=int) if groups is None else np.asarray(groups)
    return Batch(prompts=[f"prompt {g}" for g in groups], completions=[" ".join(repr(float(v)) for v in r) for r in rows],
                 groups=groups)


def make_reward(directions=("maximize", "maximize"), **config) -> MultiObjectiveReward:
    """Objectives named a, b, ... reading columns 0, 1, ... in the given directions; `running`
    normalisation unless another is named (these tests pin a normaliser's behaviour, not the default)."""
    objectives = {chr(ord("a") + i): Column(i, d) for i, d in enumerate(directions)}
    config.setdefault("normalization", "running")
    return MultiObjectiveReward(RewardConfig(objectives=objectives, **config))

"""The ideal point of Chebyshev-type decompositions, kept in raw units.

The best value seen per objective must be remembered in raw (minimisation-space) units and
normalised afresh at every call: a minimum of z-scores mixes statistics from different steps, so
once they drift an old z-score no sample can reach any more sits in the ideal and that one
objective decides every sample's cost.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


class IdealPoint:
    """Element-wise minimum of every (finite) row seen, in raw minimisation units; None before any."""

    def __init__(self):
        self.raw: np.ndarray | None = None

    def update(self, F_raw: np.ndarray) -> None:
        F_raw = np.atleast_2d(F_raw)
        if F_raw.shape[0] == 0:
            return
        best = F_raw.min(0)
        self.raw = best if self.raw is None else np.minimum(self.raw, best)

    def state_dict(self) -> dict:
        return {"raw": None if self.raw is None else self.raw.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.raw = None if state["raw"] is None else np.array(state["raw"], dtype=float)


def group_ideal(F: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each row's ideal: the best value of its own group on each objective (rows must be finite).

    Under group normalisation scores only mean something next to their siblings, so the ideal is
    the group's best, rebuilt every call; a group of one is its own ideal.
    """
    return pd.DataFrame(F).groupby(np.asarray(groups), sort=False).transform("min").to_numpy()

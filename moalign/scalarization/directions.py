"""The one place where scores change sign: pymoo minimises, moalign keeps natural directions."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from moalign.objective import MAXIMIZE, MINIMIZE


def to_minimize(values, directions: Sequence[str]) -> np.ndarray:
    """Scores [N, M] in natural directions -> [N, M] where lower is better on every column.

    >>> to_minimize([[0.5, 10.0]], ["maximize", "minimize"]).tolist()
    [[-0.5, 10.0]]
    """
    values = np.atleast_2d(np.asarray(values, dtype=float))
    bad = [d for d in directions if d not in (MAXIMIZE, MINIMIZE)]
    if bad or len(directions) != values.shape[1]:
        raise ValueError(f"need one direction (maximize|minimize) per column, got {list(directions)}")
    signs = np.array([-1.0 if d == MAXIMIZE else 1.0 for d in directions])
    return values * signs

"""How policies and intervals read as text, the same in every table, figure and hover label."""
from __future__ import annotations

import numpy as np

# Every role a front's policy can have, in the order tables and legends list them; a role added
# by a new strategy and missing here is still drawn (after these), never dropped.
ROLES = ("base", "trained", "soup", "mix", "conditioned", "best_of_n", "rejection", "rewards_in_context")


def roles_in(table) -> list[str]:
    """The roles present in a policies table, known ones first in ROLES order."""
    present = list(dict.fromkeys(table["role"]))
    return [r for r in ROLES if r in present] + [r for r in present if r not in ROLES]


def weights_label(weights: str) -> str:
    """'0.7500,0.2500' -> 'w=0.75/0.25'."""
    return "w=" + "/".join(f"{float(w):g}" for w in weights.split(","))


def policy_label(role: str, weights: str) -> str:
    """'trained', '0.7500,0.2500' -> 'trained w=0.75/0.25' (the key of curves and samples)."""
    return role if not weights else f"{role} {weights_label(weights)}"


def interval(mean: float, low: float, high: float) -> str:
    """A mean and its interval as text, rounded to what the interval supports (two significant
    digits of its width): more digits would be noise. The mean alone where there is no interval.

    >>> interval(54.31, 52.08, 56.04), interval(0.04235, 0.02763, 0.06108), interval(0.5, float("nan"), float("nan"))
    ('54.3 [52.1, 56.0]', '0.042 [0.028, 0.061]', '0.5')
    """
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:.4g}"
    width = high - low
    if not width > 0:  # no spread: the value itself
        return f"{mean:.4g} [{low:.4g}, {high:.4g}]"
    digits = max(0, 1 - int(np.floor(np.log10(width))))
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

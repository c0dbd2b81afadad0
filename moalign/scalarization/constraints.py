"""Constraints on raw objective values ("toxicity <= 0.1"); the reward enforces them (see reward.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from moalign.errors import ConfigError

_PATTERN = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(<=|>=)\s*(-?[\d.]+(?:e-?\d+)?)\s*$")


@dataclass(frozen=True)
class Constraint:
    objective: str
    op: str
    threshold: float

    def gap(self, values: np.ndarray) -> np.ndarray:
        """Signed distance past the threshold: positive when violated, negative with room to spare."""
        values = np.asarray(values, dtype=float)
        return values - self.threshold if self.op == "<=" else self.threshold - values

    def violation(self, values: np.ndarray) -> np.ndarray:
        """How far each value is on the wrong side of the threshold (0 when satisfied)."""
        return np.maximum(self.gap(values), 0.0)

    def __str__(self) -> str:
        return f"{self.objective} {self.op} {self.threshold:g}"


def parse_constraint(text: str, names: list[str] | None = None) -> Constraint:
    """`"toxicity <= 0.1"` -> Constraint; the objective must be among `names` when given."""
    match = _PATTERN.match(str(text))
    if not match:
        raise ConfigError(f"reward.constraints: cannot parse {text!r} (expected e.g. 'toxicity <= 0.1')")
    name, op, value = match.groups()
    if names is not None and name not in names:
        raise ConfigError(f"reward.constraints: {text!r} names {name!r}, which is not among the objectives ({', '.join(names)})")
    return Constraint(name, op, float(value))

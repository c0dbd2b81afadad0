"""Reward weights that change during training: a curriculum (fluency first, the task later).

`reward.weight_schedule` gives the weights in force at each step, a pure function of the step,
so a resumed run continues the schedule exactly where the uninterrupted one would be:

- `constant`: `start` throughout (the configured `reward.weights` when `start` is not given);
- `linear` / `cosine`: from `start` at step 1 to `end` at step `steps` (default: the last step),
  then `end`; `end` defaults to `reward.weights`, so in a search each point anneals from a common
  start to its own weights;
- `piecewise`: `points`, a list of `[step, weights]`: each weight vector from its step on.

The trainer scalarises each step under its weights (`MultiObjectiveReward(batch, weights=...)`,
the per-row weights conditioned policies use) and logs them as `weight/<objective>` metrics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from moalign.errors import ConfigError

KINDS = ("constant", "linear", "cosine", "piecewise")


@dataclass
class WeightSchedule:
    kind: str = "linear"
    start: list[float] | None = None  # weights at step 1 (default: reward.weights)
    end: list[float] | None = None  # weights from step `steps` on (linear, cosine; default: reward.weights)
    steps: int | None = None  # the step `end` is reached at (default: optim.steps)
    points: list = field(default_factory=list)  # piecewise: [[step, [w, ...]], ...], each from its step on

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"reward.weight_schedule.kind must be one of {' | '.join(KINDS)}, got {self.kind!r}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1):
            raise ConfigError(f"reward.weight_schedule.steps must be an integer >= 1, got {self.steps!r}")
        if self.kind == "piecewise":
            if not isinstance(self.points, list) or not self.points:
                raise ConfigError("reward.weight_schedule.points: piecewise needs [[step, [weights...]], ...], from step 1")
            steps = []
            for i, point in enumerate(self.points):
                if not (isinstance(point, (list, tuple)) and len(point) == 2 and isinstance(point[0], int)
                        and not isinstance(point[0], bool) and point[0] >= 1):
                    raise ConfigError(f"reward.weight_schedule.points[{i}]: expected [step >= 1, [weights...]], got {point!r}")
                steps.append(point[0])
            if steps[0] != 1 or steps != sorted(set(steps)):
                raise ConfigError(f"reward.weight_schedule.points: steps must start at 1 and increase, got {steps}")

    def resolve(self, names: list[str], weights, total_steps: int) -> "ResolvedSchedule":
        """Checked against the reward's objectives: every vector one non-negative weight per objective."""
        from moalign.scalarization import validate_weights

        def vector(value, key):
            try:
                return validate_weights(value, names)
            except ConfigError as exc:
                raise ConfigError(str(exc).replace("reward.weights", f"reward.weight_schedule.{key}")) from None

        start = vector(self.start if self.start is not None else weights, "start")
        end = vector(self.end if self.end is not None else weights, "end")
        points = [(step, vector(w, f"points[{i}]")) for i, (step, w) in enumerate(self.points)]
        return ResolvedSchedule(self.kind, start, end, self.steps or total_steps, points)


@dataclass
class ResolvedSchedule:
    kind: str
    start: np.ndarray
    end: np.ndarray
    steps: int
    points: list

    def at(self, step: int) -> np.ndarray:
        """The weights in force at `step` (1-based), normalised to sum 1."""
        if self.kind == "constant":
            return self.start
        if self.kind == "piecewise":
            return [w for s, w in self.points if s <= step][-1]
        t = 1.0 if self.steps <= 1 else min(max((step - 1) / (self.steps - 1), 0.0), 1.0)
        if self.kind == "cosine":
            t = (1 - math.cos(math.pi * t)) / 2
        w = (1 - t) * self.start + t * self.end
        return w / w.sum()

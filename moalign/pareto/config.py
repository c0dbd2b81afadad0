"""Search configuration: a base training config and how to vary its reward weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moalign.errors import ConfigError
from moalign.rl.config import TrainConfig

STRATEGIES = ("grid", "soups")


@dataclass
class SearchConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: str = "grid"  # grid: one RL run per weight vector; soups: one per objective, then interpolate
    weights: Any = field(default_factory=lambda: {"method": "das-dennis", "n_partitions": 4})
    reference_point: Any = "nadir"  # nadir | base | {objective: value} (natural direction)
    name: str | None = None  # the parent run's name in MLflow
    evaluate_base: bool = True

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")

"""Search configuration: a base training config and how to vary its reward weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moalign.errors import ConfigError
from moalign.pareto.front import check_reference_point
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
    # Training seeds: each trained policy is trained once per seed, so the front shows how much of
    # a difference is the seed's. None: train.seed only.
    seeds: list[int] | None = None
    n_bootstrap: int = 1000  # resamples of prompts (and seeds) behind every interval

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        check_reference_point(self.reference_point, key="reference_point")
        if self.reference_point == "base" and not self.evaluate_base:
            raise ConfigError("reference_point 'base' needs evaluate_base: true")
        if self.seeds is not None:
            if (not isinstance(self.seeds, list) or not self.seeds
                    or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds)):
                raise ConfigError(f"seeds: expected a non-empty list of integers, got {self.seeds!r}")
            if len(set(self.seeds)) != len(self.seeds):
                raise ConfigError(f"seeds: {self.seeds} repeats a seed")
        if isinstance(self.n_bootstrap, bool) or not isinstance(self.n_bootstrap, int) or self.n_bootstrap < 100:
            raise ConfigError(f"n_bootstrap: expected an integer >= 100, got {self.n_bootstrap!r}")

    @property
    def training_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.train.seed]

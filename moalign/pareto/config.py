"""Search configuration: a base training config and how to vary its reward weights."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moalign.errors import ConfigError
from moalign.pareto.front import check_reference_point
from moalign.pareto.strategies import get_strategy
from moalign.rl.config import TrainConfig


EXECUTORS = ("local", "ray")


@dataclass
class RayConfig:
    """Where and with what a search's children run under `executor: ray` (see pareto/executors.py)."""

    # None: a local cluster on this machine; else a running cluster's address ("auto", "ray://host:10001"),
    # whose nodes all reach the MLflow server and read train.output_dir
    address: str | None = None
    num_cpus: float = 1  # what each child requests from the cluster
    num_gpus: float = 0
    max_retries: int = 3  # times a child whose worker died is run again (it resumes from its checkpoint)

    def __post_init__(self):
        for key in ("num_cpus", "num_gpus"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"ray.{key}: expected a number >= 0, got {value!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"ray.max_retries: expected an integer >= 0, got {self.max_retries!r}")


@dataclass
class SearchConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    # a name in moalign.pareto.strategies.STRATEGIES: grid (one RL run per weight vector), soups (one per
    # objective, then interpolate), adaptive (extremes, then where the front has its largest gap), ...
    strategy: str = "grid"
    options: dict = field(default_factory=dict)  # the strategy's own options, validated by its `Options`
    weights: Any = field(default_factory=lambda: {"method": "das-dennis", "n_partitions": 4})
    reference_point: Any = "nadir"  # nadir | base | {objective: value} (natural direction)
    name: str | None = None  # the parent run's name in MLflow
    evaluate_base: bool = True
    # Training seeds: each trained policy is trained once per seed, so the front shows how much of
    # a difference is the seed's. None: train.seed only.
    seeds: list[int] | None = None
    n_bootstrap: int = 1000  # resamples of prompts (and seeds) behind every interval
    # local: the children run here one after another; ray: each a Ray task, as many at once as the
    # cluster allows (a pipeline's top-level `executor`/`ray` apply to searches that set neither)
    executor: str = "local"
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self):
        strategy = get_strategy(self.strategy)
        if not isinstance(self.options, dict):
            raise ConfigError(f"options: expected a mapping of the {self.strategy!r} strategy's options, got {self.options!r}")
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
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        # the options alone; against `train` (e.g. a budget against the step count) when the search
        # starts or its pipeline is validated: a pipeline's searches get their `train` after parsing
        strategy.parse_options(self.options)

    @property
    def training_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.train.seed]

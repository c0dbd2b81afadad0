"""Pipelines: one YAML file runs data -> search(es) -> report.

    experiment: quickstart          # MLflow experiment (overrides train.tracking.experiment)
    train: {...}                    # a TrainConfig: model, data, sampling, reward, algorithm, optim
    searches:                       # one or more searches over the same training setup
      - {strategy: soups, weights: {method: das-dennis, n_partitions: 4}}
      - {strategy: grid, weights: [[1, 0], [0.5, 0.5], [0, 1]]}
      - {strategy: adaptive, options: {budget_steps: 200}}   # a strategy's own options (see pareto/strategies)
    report: {out: moalign-report}
    executor: local                 # or ray: every search's children as Ray tasks (see pareto/executors.py)
    ray: {address: null, num_cpus: 1, num_gpus: 0}  # a search's own `executor`/`ray` override these

Everything is validated before any training: unknown keys, weights that do not match the
objectives, a missing dataset all fail with one line naming the file and key.
"""
from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from moalign.config import apply_overrides, from_dict, load_yaml
from moalign.errors import ConfigError, MoalignError
from moalign.pareto.config import EXECUTORS, RayConfig, SearchConfig
from moalign.rl.config import TrainConfig


@dataclass
class ReportConfig:
    enabled: bool = True
    out: str = "moalign-report"


@dataclass
class PipelineConfig:
    experiment: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    searches: list = field(default_factory=lambda: [{"strategy": "grid"}])
    report: ReportConfig = field(default_factory=ReportConfig)
    executor: str = "local"  # the searches' default (SearchConfig.executor)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if not isinstance(self.searches, list) or not self.searches:
            raise ConfigError("searches: give a list of at least one search")
        if self.experiment:
            self.train.tracking.experiment = self.experiment
        if self.report.enabled and not self.train.tracking.enabled:
            raise ConfigError("report.enabled needs train.tracking.enabled (the report reads MLflow)")

    def search_configs(self) -> list[SearchConfig]:
        out = []
        for i, spec in enumerate(self.searches):
            if not isinstance(spec, dict):
                raise ConfigError(f"searches[{i}]: expected a mapping")
            if "train" in spec:
                raise ConfigError(f"unknown key 'searches[{i}].train' (the training setup is the top-level 'train')")
            search = from_dict(SearchConfig, spec, f"searches[{i}]")
            search.train = self.train
            if "executor" not in spec:
                search.executor = self.executor
            if "ray" not in spec:
                search.ray = self.ray
            out.append(search)
        return out


def load_pipeline(path: str | Path, overrides: list[str] = ()) -> tuple[PipelineConfig, list[SearchConfig]]:
    data = apply_overrides(load_yaml(path), overrides)
    try:
        config = from_dict(PipelineConfig, data)
        searches = config.search_configs()
        validate(config, searches)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config, searches


_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def _under_train(message: str) -> str:
    """A training-config error (`reward.weights: ...`) named from the pipeline's top (`train.reward...`)."""
    head = re.match(r"[a-z_]+(?=[.:\[])", message)
    return f"train.{message}" if head and head.group(0) in _TRAIN_KEYS else message


def validate(config: PipelineConfig, searches: list[SearchConfig]) -> None:
    """Everything in the files that can fail before training, checked before training."""
    from moalign.pareto.executors import check_ray_address, check_shared_store
    from moalign.pareto.front import check_reference_point
    from moalign.pareto.strategies import get_strategy
    from moalign.pareto.weights import weight_vectors
    from moalign.rl.cli import check_inputs
    from moalign.rl.reward import MultiObjectiveReward

    try:
        check_inputs(config.train)
    except ConfigError as exc:
        raise ConfigError(_under_train(str(exc))) from None
    names = MultiObjectiveReward(config.train.reward).names
    for i, search in enumerate(searches):
        try:  # every search's, before the first one trains: a typo in the second costs nothing
            weight_vectors(search.weights, names)
            check_reference_point(search.reference_point, names)
            # again against the pipeline's `train` (at parse time the search saw the default one)
            get_strategy(search.strategy).parse_options(search.options, search)
        except ConfigError as exc:
            detail = str(exc).removeprefix("search.").removeprefix("reward.")
            raise ConfigError(f"searches[{i}].{detail}") from None
        check_shared_store(search)  # names the top-level train's keys
        check_ray_address(search)


def check_environment(config: PipelineConfig) -> None:
    """What this machine must provide (the model, writable output folders), checked before any
    model loads or MLflow run starts, so a report folder that cannot be written is not found
    only after every policy has been trained."""
    from moalign.data import check_writable
    from moalign.rl.cli import check_environment as check_train_environment

    try:
        check_train_environment(config.train)
    except ConfigError as exc:
        raise ConfigError(_under_train(str(exc))) from None
    if config.report.enabled:
        try:
            check_writable(config.report.out, directory=True)
        except MoalignError as exc:
            raise ConfigError(f"report.out: {exc}") from None


def run_pipeline(config: PipelineConfig, searches: list[SearchConfig]) -> dict:
    from moalign.pareto.search import run_search
    from moalign.tracking import make_tracker

    started = time.perf_counter()
    check_environment(config)
    tracking = config.train.tracking
    # Opened before any model loads: it probes the store, so a wrong URI fails in seconds.
    tracker = make_tracker(tracking.enabled, tracking.experiment, tracking.tracking_uri)
    results = []
    for i, search in enumerate(searches, 1):
        print(f"[{i}/{len(searches)}] {search.strategy} search: {search.name or ''}", flush=True)
        result = run_search(search, tracker=tracker)
        results.append(result)
        low, high = result.hypervolume_ci
        print(f"    hypervolume {result.hypervolume:.4g} [95% interval {low:.4g}, {high:.4g}; {result.n_prompts} prompts x "
              f"{len(result.seeds)} seed(s)], {int(result.policies['non_dominated'].sum())}/{len(result.policies)} "
              f"policies non-dominated{_left_off(result.policies)}", flush=True)
    paths = []
    if config.report.enabled:
        from moalign.reports.build import build_report

        paths = build_report(config.train.tracking.experiment, config.report.out,
                             run_ids=[r.parent_run_id for r in results], tracking_uri=config.train.tracking.tracking_uri)
    from moalign.tracking import resolve_tracking_uri

    print(f"done in {time.perf_counter() - started:.0f}s")
    for path in paths:
        print(f"report: {path.resolve()}")
    print(f"MLflow UI: moalign ui  (store: {resolve_tracking_uri(config.train.tracking.tracking_uri)}), "
          f"experiment {config.train.tracking.experiment!r}")
    return {"searches": results, "report": paths}


def _left_off(policies) -> str:
    """', 2 kept off the front by the constraints (2 infeasible)' where the constraints left some out."""
    counts = policies["feasible"].value_counts() if "feasible" in policies else {}
    out = {v: int(counts.get(v, 0)) for v in ("infeasible", "undecided") if counts.get(v, 0)}
    if not out:
        return ""
    return f", {sum(out.values())} kept off the front by the constraints ({', '.join(f'{n} {v}' for v, n in out.items())})"


def run_pipeline_file(path: str | Path, overrides: list[str] = ()) -> dict:
    if not Path(path).is_file():
        raise MoalignError(f"{path}: no such pipeline file")
    config, searches = load_pipeline(path, overrides)
    return run_pipeline(config, searches)

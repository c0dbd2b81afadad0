"""Read searches back from MLflow into pandas: policies, learning curves, sample generations."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moalign.errors import MoalignError
from moalign.pareto.children import SAMPLES
from moalign.pareto.front import reference_point
from moalign.pareto.uncertainty import PolicyScores
from moalign.tracking import read_table


@dataclass
class Search:
    run_id: str
    name: str
    strategy: str
    objectives: list[str]  # the front's objectives (weighted in the reward)
    directions: dict  # of every evaluated objective, front ones first
    metrics: dict
    policies: pd.DataFrame  # one row a policy (role, weights): means over seeds, intervals, non_dominated
    runs: pd.DataFrame  # one row a child run (policy x seed)
    scores: PolicyScores  # per-prompt scores behind the intervals
    bounds: dict = field(default_factory=dict)  # objective -> (low, high), None = unbounded
    n_bootstrap: int = 1000
    curves: dict = field(default_factory=dict)  # label -> DataFrame indexed by step
    samples: dict = field(default_factory=dict)  # policy label -> eval samples DataFrame (its first seed)

    @property
    def n_prompts(self) -> int:
        return self.scores.n_prompts

    @property
    def seeds(self) -> list[int]:
        return self.scores.seeds


def policy_label(role: str, weights: str) -> str:
    """'trained', '0.7500,0.2500' -> 'trained w=0.75/0.25' (the key of curves and samples)."""
    from reports.plots import weights_label

    return role if not weights else f"{role} {weights_label(weights)}"


def _bounds(params: dict) -> dict:
    """bounds.<objective> = '[0.0, 1.0]' (the tracker flattens the mapping); searches logged before
    bounds existed have none."""
    return {k.split(".", 1)[1]: tuple(json.loads(v)) for k, v in params.items() if k.startswith("bounds.")}


def _seed(child) -> int:
    """The child's training seed; runs from before seeds were tagged are their config's seed."""
    return int(child.data.tags.get("moalign.seed", child.data.params.get("seed", 0)))


def load_search(client, parent) -> Search:
    params = parent.data.params
    objectives = json.loads(params["objectives"])
    directions = dict(zip(objectives, json.loads(params["directions"])))
    for key, value in params.items():  # eval_directions is flattened by the tracker: eval_directions.<name>
        if key.startswith("eval_directions."):
            directions.setdefault(key.split(".", 1)[1], value)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  max_results=10_000)
    if not children:
        raise MoalignError(f"search run {parent.info.run_id} has no child runs")
    rows, samples = [], {}
    for child in children:
        tags, metrics = child.data.tags, child.data.metrics
        weights = json.loads(child.data.params["reward.weights"]) if "reward.weights" in child.data.params else None
        row = {"key": tags.get("moalign.key", child.info.run_id), "role": tags.get("moalign.role", "?"),
               "weights": ",".join(f"{w:.4f}" for w in weights) if weights else "", "seed": _seed(child),
               "run_id": child.info.run_id, "status": child.info.status,
               # a run copied from another search has its learning curves in the original
               "history_run_id": tags.get("moalign.reused_from", child.info.run_id),
               "train_steps": int(metrics.get("train_steps", 0)),
               "wall_time_s": metrics.get("train_wall_time_s", metrics.get("eval_wall_time_s", 0.0))}
        row.update({k[5:]: v for k, v in metrics.items() if k.startswith("eval/")})
        rows.append(row)
        samples[row["key"]] = read_table(client, child.info.run_id, SAMPLES)
    order = {"base": 0, "trained": 1, "soup": 2}
    runs = pd.DataFrame(rows).sort_values(["role", "weights", "seed"], ascending=[True, False, True],
                                          key=lambda s: s.map(order) if s.name == "role" else s).reset_index(drop=True)
    evaluated = [c for c in directions if c in runs.columns]
    scores = PolicyScores(runs, samples, evaluated)
    dirs = [directions[o] for o in objectives]
    tagged = parent.data.tags.get("moalign.reference_point")  # absent if the search never finished
    ref = np.array(json.loads(tagged)) if tagged else reference_point(scores.means(objectives), dirs, "nadir")
    n_bootstrap = int(params.get("n_bootstrap", 1000))
    bounds = _bounds(params)
    policies = scores.estimate(objectives, dirs, ref, bounds, n_bootstrap).table
    curves, first_samples = {}, {}
    for _, run in runs.iterrows():
        label = policy_label(run["role"], run["weights"])
        if run["role"] == "trained":
            history = {}
            for key in ["reward/total", "kl"] + [f"rewards/{o}/mean" for o in objectives]:
                points = client.get_metric_history(run["history_run_id"], key)
                if points:
                    history[key] = pd.Series({p.step: p.value for p in points})
            curves[label if len(scores.seeds) == 1 else f"{label} s{run['seed']}"] = pd.DataFrame(history).sort_index()
        if samples[run["key"]] is not None:
            first_samples.setdefault(label, samples[run["key"]])
    return Search(parent.info.run_id, parent.info.run_name or parent.info.run_id[:8], params.get("strategy", "?"),
                  objectives, directions, dict(parent.data.metrics), policies, runs, scores, bounds, n_bootstrap,
                  curves, first_samples)


def _parents(client, exp, experiment: str, run_ids: list[str]) -> list:
    """The named runs, each checked to be a search of `experiment`, or one line saying which is not."""
    from mlflow.exceptions import MlflowException

    parents = []
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            known = client.search_runs([exp.experiment_id], "tags.`moalign.kind` = 'search'", max_results=20)
            listing = ", ".join(f"{r.info.run_id} ({r.info.run_name})" for r in known) or "none"
            raise MoalignError(f"--runs: no run {run_id!r} in the MLflow store "
                               f"(searches in {experiment!r}: {listing})") from None
        if run.info.experiment_id != exp.experiment_id or run.data.tags.get("moalign.kind") != "search":
            raise MoalignError(f"--runs: run {run_id!r} is not a search of experiment {experiment!r}")
        parents.append(run)
    return parents


def load_searches(experiment: str, run_ids: list[str] | None = None, tracking_uri: str | None = None) -> list[Search]:
    from mlflow.tracking import MlflowClient

    from moalign.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise MoalignError(f"no MLflow experiment {experiment!r} (experiments: {names})")
    if run_ids:
        parents = _parents(client, exp, experiment, run_ids)
    else:
        parents = client.search_runs([exp.experiment_id], "tags.`moalign.kind` = 'search' and attributes.status = 'FINISHED'",
                                     order_by=["attributes.start_time ASC"], max_results=1000)
    if not parents:
        raise MoalignError(f"experiment {experiment!r} has no finished searches")
    return [load_search(client, p) for p in parents]

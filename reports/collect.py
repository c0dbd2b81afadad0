"""Read searches back from MLflow into pandas: policies, learning curves, sample generations."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from moalign.errors import MoalignError
from moalign.tracking import read_table


@dataclass
class Search:
    run_id: str
    name: str
    strategy: str
    objectives: list[str]  # the front's objectives (weighted in the reward)
    directions: dict  # of every evaluated objective, front ones first
    metrics: dict
    policies: pd.DataFrame  # one row a child run
    curves: dict = field(default_factory=dict)  # label -> DataFrame indexed by step
    samples: dict = field(default_factory=dict)  # label -> eval samples DataFrame


def policy_label(role: str, weights: str) -> str:
    """'trained', '0.7500,0.2500' -> 'trained w=0.75/0.25' (the key of curves and samples)."""
    from reports.plots import weights_label

    return role if not weights else f"{role} {weights_label(weights)}"


def load_search(client, parent) -> Search:
    params = parent.data.params
    objectives = json.loads(params["objectives"])
    directions = dict(zip(objectives, json.loads(params["directions"])))
    for key, value in params.items():  # eval_directions is flattened by the tracker: eval_directions.<name>
        if key.startswith("eval_directions."):
            directions.setdefault(key.split(".", 1)[1], value)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  max_results=10_000)
    rows, curves, samples = [], {}, {}
    for child in children:
        tags, metrics = child.data.tags, child.data.metrics
        role = tags.get("moalign.role", "?")
        weights = json.loads(child.data.params["reward.weights"]) if "reward.weights" in child.data.params else None
        wkey = ",".join(f"{w:.4f}" for w in weights) if weights else ""
        row = {"role": role, "weights": wkey, "run_id": child.info.run_id, "status": child.info.status,
               "non_dominated": tags.get("moalign.non_dominated") == "true",
               "train_steps": int(metrics.get("train_steps", 0)),
               "wall_time_s": metrics.get("train_wall_time_s", metrics.get("eval_wall_time_s", 0.0))}
        row.update({k[5:]: v for k, v in metrics.items() if k.startswith("eval/")})
        rows.append(row)
        label = policy_label(role, wkey)
        if role == "trained":
            history = {}
            for key in ["reward/total", "kl"] + [f"rewards/{o}/mean" for o in objectives]:
                points = client.get_metric_history(child.info.run_id, key)
                if points:
                    history[key] = pd.Series({p.step: p.value for p in points})
            curves[label] = pd.DataFrame(history).sort_index()
        table = read_table(client, child.info.run_id, "eval_samples.json")
        if table is not None:
            samples[label] = table
    policies = pd.DataFrame(rows)
    if policies.empty:
        raise MoalignError(f"search run {parent.info.run_id} has no child runs")
    order = {"base": 0, "trained": 1, "soup": 2}
    policies = policies.sort_values(["role", "weights"], key=lambda s: s.map(order) if s.name == "role" else s,
                                    ascending=[True, False]).reset_index(drop=True)
    return Search(parent.info.run_id, parent.info.run_name or parent.info.run_id[:8], params.get("strategy", "?"),
                  objectives, directions, dict(parent.data.metrics), policies, curves, samples)


def load_searches(experiment: str, run_ids: list[str] | None = None, tracking_uri: str | None = None) -> list[Search]:
    from mlflow.tracking import MlflowClient

    from moalign.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise MoalignError(f"no MLflow experiment {experiment!r} (experiments: {names})")
    if run_ids:
        parents = [client.get_run(r) for r in run_ids]
    else:
        parents = client.search_runs([exp.experiment_id], "tags.`moalign.kind` = 'search' and attributes.status = 'FINISHED'",
                                     order_by=["attributes.start_time ASC"], max_results=1000)
    if not parents:
        raise MoalignError(f"experiment {experiment!r} has no finished searches")
    return [load_search(client, p) for p in parents]

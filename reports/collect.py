"""Read searches back from MLflow into pandas: policies, learning curves, sample generations."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moalign.errors import MoalignError
from moalign.pareto.children import HELPER_ROLES, SAMPLES, reused_runs
from moalign.pareto.front import reference_point
from moalign.pareto.uncertainty import PolicyScores
from moalign.tracking import MlflowTracker
from moalign.reports.interactive import policy_samples
from moalign.reports.labels import ROLES, policy_label


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
    run_samples: dict = field(default_factory=dict)  # run key -> eval samples DataFrame (None: not logged)
    kl: dict = field(default_factory=dict)  # run key -> the trainer's logged `kl` by step (trained runs)
    oracle: bool = False  # its policies chose among samples with the references' help: a ceiling, no policy
    preferences: list = field(default_factory=list)  # weights inferred from a user's judgements (moalign prefer)
    constraints: list = field(default_factory=list)  # the search's constraints (moalign.scalarization.Constraint)

    @property
    def feasible(self):
        """Mask of the policies that count on the front (all, for a search from before constraints counted)."""
        return (self.policies["feasible"] == "feasible").to_numpy() if "feasible" in self.policies else \
            np.ones(len(self.policies), dtype=bool)

    @property
    def n_prompts(self) -> int:
        return self.scores.n_prompts

    @property
    def seeds(self) -> list[int]:
        return self.scores.seeds


def _bounds(params: dict) -> dict:
    """bounds.<objective> = '[0.0, 1.0]' (the tracker flattens the mapping); searches logged before
    bounds existed have none."""
    return {k.split(".", 1)[1]: tuple(json.loads(v)) for k, v in params.items() if k.startswith("bounds.")}


def _seed(child) -> int:
    """The child's training seed; runs from before seeds were tagged are their config's seed."""
    return int(child.data.tags.get("moalign.seed", child.data.params.get("seed", 0)))


def _children(tracker, parent, finished_only: bool = False) -> list[tuple[str, object]]:
    """(key, run) of each child: its own runs, and those it reused from other searches (a reused
    run is a child of the search that trained it, listed on this parent by `moalign.reused`)."""
    status = " and attributes.status = 'FINISHED'" if finished_only else ""
    own = tracker.find_runs(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'{status}")
    children = [(r.data.tags.get("moalign.key", r.info.run_id), r) for r in own]
    children += [(key, tracker.get_run(run_id)) for key, run_id in reused_runs(parent).items()]
    if not children:
        raise MoalignError(f"search run {parent.info.run_id} has no child runs")
    return children


def _common_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the seeds that every policy trained on several seeds has finished (a policy with
    one run, the base model, stands for all), so a front in progress compares like with like."""
    multi = runs[runs["role"] != "base"].groupby(["role", "weights"])["seed"].agg(set)
    if multi.empty:
        return runs
    common = set.intersection(*multi.tolist()) or {min(min(s) for s in multi)}
    return runs[(runs["role"] == "base") | runs["seed"].isin(common)].reset_index(drop=True)


def load_search(tracker, parent, finished_only: bool = False) -> Search:
    """A search read back from MLflow; `finished_only`: its finished children only (a search still running)."""
    params = parent.data.params
    objectives = json.loads(params["objectives"])
    directions = dict(zip(objectives, json.loads(params["directions"])))
    for key, value in params.items():  # eval_directions is flattened by the tracker: eval_directions.<name>
        if key.startswith("eval_directions."):
            directions.setdefault(key.split(".", 1)[1], value)
    rows, samples, prefs = [], {}, []
    for key, child in _children(tracker, parent, finished_only):
        tags, metrics = child.data.tags, child.data.metrics
        weights = json.loads(child.data.params["reward.weights"]) if "reward.weights" in child.data.params else None
        row = {"key": key, "role": tags.get("moalign.role", "?"),
               "weights": ",".join(f"{w:.4f}" for w in weights) if weights else "", "seed": _seed(child),
               "run_id": child.info.run_id, "status": child.info.status,
               # cost/...: what every child logs since costs were tracked; the older names before
               "train_steps": int(metrics.get("cost/train_steps", metrics.get("train_steps", 0))),
               "wall_time_s": metrics.get("cost/wall_time_s",
                                          metrics.get("train_wall_time_s", metrics.get("eval_wall_time_s", 0.0)))}
        row.update({f"w_{o}": float(weights[i]) if weights else np.nan for i, o in enumerate(objectives)})
        row.update({k[5:]: v for k, v in metrics.items() if k.startswith("eval/")})
        rows.append(row)
        samples[key] = None if row["role"] in HELPER_ROLES else tracker.read_table(child.info.run_id, SAMPLES)
        if row["role"] == "preferences":
            prefs.append({"run": child.info.run_id[:8], "judgements": int(metrics.get("n_judgements", 0)),
                          **{o: (metrics.get(f"weight/{o}", np.nan), metrics.get(f"weight/{o}/ci_low", np.nan),
                                 metrics.get(f"weight/{o}/ci_high", np.nan)) for o in objectives},
                          "held-out accuracy": metrics.get("heldout_accuracy", np.nan),
                          "nearest policy": tags.get("moalign.nearest", "")})
    order = {role: i for i, role in enumerate(ROLES)}
    runs = pd.DataFrame(rows).sort_values(["role", "weights", "seed"], ascending=[True, False, True],
                                          key=lambda s: s.map(order).fillna(len(order)) if s.name == "role" else s).reset_index(drop=True)
    evaluated = [c for c in directions if c in runs.columns]
    # helpers (pools, a conditioned search's training run) are no points of the front, as the search counts them
    policies_runs = runs[~runs["role"].isin(HELPER_ROLES)].reset_index(drop=True)
    if finished_only:  # a search still running: the seeds every trained policy has finished so far
        policies_runs = _common_seeds(policies_runs)
    scores = PolicyScores(policies_runs, samples, evaluated)
    dirs = [directions[o] for o in objectives]
    tagged = parent.data.tags.get("moalign.reference_point")  # absent if the search never finished
    ref = np.array(json.loads(tagged)) if tagged else reference_point(scores.means(objectives), dirs, "nadir")
    n_bootstrap = int(params.get("n_bootstrap", 1000))
    bounds = _bounds(params)
    from moalign.scalarization import parse_constraint

    constraints = [parse_constraint(c) for c in json.loads(params.get("constraints", "[]"))]
    policies = scores.estimate(objectives, dirs, ref, bounds, n_bootstrap, constraints=constraints).table
    oracle = parent.data.tags.get("moalign.oracle") == "true"
    policies["oracle"] = oracle & (policies["role"] != "base")
    curves, kl = {}, {}
    for _, run in runs[runs["role"] == "trained"].iterrows():
        label = policy_label(run["role"], run["weights"])
        history = {}
        for key in ["reward/total", "kl"] + [f"rewards/{o}/mean" for o in objectives]:
            points = tracker.metric_history(run["run_id"], key)
            if points:
                history[key] = pd.Series(points)
        if "kl" in history:
            kl[run["key"]] = history["kl"]
        curves[label if len(scores.seeds) == 1 else f"{label} s{run['seed']}"] = pd.DataFrame(history).sort_index()
    return Search(parent.info.run_id, parent.info.run_name or parent.info.run_id[:8], params.get("strategy", "?"),
                  objectives, directions, dict(parent.data.metrics), policies, runs, scores, bounds, n_bootstrap,
                  curves, policy_samples(runs, samples), samples, kl, oracle=oracle, constraints=constraints,
                  preferences=prefs)


def _parents(tracker, experiment: str, run_ids: list[str]) -> list:
    """The named runs, each checked to be a search of `experiment`, or one line saying which is not."""
    parents = []
    for run_id in run_ids:
        run = tracker.find_run(run_id)
        if run is None:
            known = tracker.find_runs("tags.`moalign.kind` = 'search'")[:20]
            listing = ", ".join(f"{r.info.run_id} ({r.info.run_name})" for r in known) or "none"
            raise MoalignError(f"--runs: no run {run_id!r} in the MLflow store "
                               f"(searches in {experiment!r}: {listing})")
        if run.info.experiment_id != tracker.experiment_id or run.data.tags.get("moalign.kind") != "search":
            raise MoalignError(f"--runs: run {run_id!r} is not a search of experiment {experiment!r}")
        parents.append(run)
    return parents


def load_searches(experiment: str, run_ids: list[str] | None = None, tracking_uri: str | None = None) -> list[Search]:
    """The searches of `experiment` (or those named by `run_ids`), oldest first. Every MLflow call
    goes through the tracker, so a store that fails midway is one line (MoalignError)."""
    tracker = MlflowTracker(None, tracking_uri)
    exp = tracker.find_experiment(experiment)
    if exp is None:
        names = ", ".join(e.name for e in tracker.experiments()) or "none"
        raise MoalignError(f"no MLflow experiment {experiment!r} (experiments: {names})")
    tracker.experiment_id = exp.experiment_id
    if run_ids:
        parents = _parents(tracker, experiment, run_ids)
    else:
        parents = tracker.find_runs("tags.`moalign.kind` = 'search' and attributes.status = 'FINISHED'",
                                    order_by=["attributes.start_time ASC"])
    if not parents:
        raise MoalignError(f"experiment {experiment!r} has no finished searches")
    return [load_search(tracker, p) for p in parents]

"""Run a Pareto search: train or interpolate one policy per weight vector, evaluate every policy
on the held-out prompts, and record the front in MLflow (a parent run, one child per policy).

Resumable: the parent is found again by a hash of the config; finished children are read back
instead of recomputed, interrupted ones continue from their checkpoints.
"""
from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from moalign.pareto.config import SearchConfig
from moalign.pareto.front import expected_utility, hypervolume, non_dominated, reference_point
from moalign.pareto.weights import weight_vectors
from moalign.registry import build_objectives
from moalign.rl.evaluation import evaluate_policy
from moalign.rl.reward import MultiObjectiveReward
from moalign.rl.trainer import check_objective_fields, load_data, train
from moalign.tracking import make_tracker


@dataclass
class SearchResult:
    parent_run_id: str | None
    policies: pd.DataFrame  # one row a policy: key, role, run_id, weights, w_<obj>, <objective>..., non_dominated
    objectives: list[str]
    directions: list[str]
    hypervolume: float
    expected_utility: float
    reference_point: list[float]


def weights_key(weights) -> str:
    return ",".join(f"{w:.4f}" for w in weights)


def search_id(config: SearchConfig) -> str:
    """Same config, same id: how a re-run finds its earlier parent run."""
    data = asdict(config)
    data["train"].pop("progress", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Children:
    """The children of a parent run, by key; runs each missing or unfinished one."""

    def __init__(self, tracker, parent_id, experiment_runs):
        self.tracker, self.parent_id = tracker, parent_id
        self.runs = {r.data.tags.get("moalign.key"): r for r in experiment_runs}

    def finished(self, key):
        run = self.runs.get(key)
        return run if run is not None and run.info.status == "FINISHED" else None

    def unfinished_id(self, key):
        run = self.runs.get(key)
        return run.info.run_id if run is not None and run.info.status != "FINISHED" else None


def _row(key, role, run_id, weights, names, scores, steps, wall_time, adapter_dir=None):
    """One policy of the search: identity, weights (none for the base model), cost and scores."""
    row = {"key": key, "role": role, "run_id": run_id, "weights": weights_key(weights) if weights is not None else "",
           "train_steps": steps, "wall_time_s": wall_time, "adapter_dir": str(adapter_dir) if adapter_dir else ""}
    for i, name in enumerate(names):
        row[f"w_{name}"] = float(weights[i]) if weights is not None else np.nan
    row.update(scores)
    return row


def _row_from_run(run, key, role, names, weights):
    scores = {k[len("eval/"):]: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
    checkpoint = run.data.tags.get("moalign.checkpoint_dir")
    adapter = Path(checkpoint).parent / "adapter" if checkpoint else None
    wall = run.data.metrics.get("train_wall_time_s", run.data.metrics.get("eval_wall_time_s", 0.0))
    return _row(key, role, run.info.run_id, weights, names, scores, int(run.data.metrics.get("train_steps", 0)), wall, adapter)


def _evaluate_child(tracker, children, key, role, weights, names, model, tokenizer, eval_records, objectives, train_cfg, tags):
    """An evaluation-only child run (base model or interpolated policy)."""
    t0 = time.perf_counter()
    run_id = children.unfinished_id(key)
    if run_id:
        tracker.resume_run(run_id)
    else:
        run_id = tracker.start_run(f"{role}:{weights_key(weights)}" if weights is not None else role, tags, children.parent_id)
        if weights is not None:
            tracker.log_params(run_id, {"reward.weights": [float(w) for w in weights]})
    try:
        scores_df, samples = evaluate_policy(model, tokenizer, eval_records, objectives, train_cfg.sampling,
                                             train_cfg.model.use_chat_template, seed=train_cfg.seed)
    except BaseException:
        tracker.end_run(run_id, "KILLED")
        raise
    scores = {n: float(scores_df[n].mean()) for n in scores_df.columns}
    wall = time.perf_counter() - t0
    tracker.log_metrics(run_id, [(0, {**{f"eval/{k}": v for k, v in scores.items()}, "eval_wall_time_s": wall, "train_steps": 0})])
    tracker.log_table(run_id, samples, "eval_samples.json")
    tracker.end_run(run_id, "FINISHED")
    return _row(key, role, run_id, weights, names, scores, 0, wall)


def train_hash(cfg) -> str:
    """Identity of a training run's outcome: its config without bookkeeping fields."""
    data = asdict(cfg)
    data.pop("progress", None)
    data["tracking"] = {}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _reuse(tracker, children, key, role, weights, names, thash, tags):
    """A finished run with the same training config elsewhere in the experiment (e.g. the soups'
    endpoints when a grid includes the extremes): copy its record instead of training again."""
    for run in tracker.find_runs(f"tags.`moalign.train_hash` = '{thash}' and attributes.status = 'FINISHED'"):
        if run.data.tags.get("mlflow.parentRunId") == children.parent_id:
            continue
        metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("eval/") or k in ("train_steps", "train_wall_time_s")}
        run_id = tracker.start_run(f"{role}:{weights_key(weights)}", {**tags, "moalign.reused_from": run.info.run_id,
                                                                      "moalign.train_hash": thash,
                                                                      **{k: v for k, v in run.data.tags.items() if k == "moalign.checkpoint_dir"}},
                                   children.parent_id)
        tracker.log_params(run_id, {"reward.weights": [float(w) for w in weights]})
        tracker.log_metrics(run_id, [(0, metrics)])
        samples = tracker.read_table(run.info.run_id, "eval_samples.json")
        if samples is not None:
            tracker.log_table(run_id, samples, "eval_samples.json")
        tracker.end_run(run_id, "FINISHED")
        return _row_from_run(tracker.get_run(run_id), key, role, names, weights)
    return None


def _train_child(tracker, children, key, role, weights, names, train_cfg, tags):
    run = children.finished(key)
    if run is not None:
        return _row_from_run(run, key, role, names, weights)
    cfg = copy.deepcopy(train_cfg)
    cfg.reward.weights = [float(w) for w in weights]
    cfg.tracking.run_name = f"{role}:{weights_key(weights)}"
    thash = train_hash(cfg)
    resume = children.unfinished_id(key)
    if resume is None:
        reused = _reuse(tracker, children, key, role, weights, names, thash, tags)
        if reused is not None:
            return reused
    result = train(cfg, resume_run_id=resume, parent_run_id=children.parent_id,
                   tags={**tags, "moalign.train_hash": thash}, tracker=tracker)
    tracker.log_metrics(result.run_id, [(result.steps, {"train_steps": result.steps})])
    return _row(key, role, result.run_id, weights, names, result.eval_scores, result.steps, result.wall_time, result.adapter_dir)


def run_search(config: SearchConfig, tracker=None) -> SearchResult:
    """Search the front for `config`; see the module docstring."""
    started = time.perf_counter()
    train_cfg = config.train
    reward = MultiObjectiveReward(train_cfg.reward)  # validates objectives, weights and constraints
    names, directions = reward.names, reward.directions
    W = weight_vectors(config.weights, names)
    _, eval_records = load_data(train_cfg)
    objectives = {**reward.all_objectives, **(build_objectives(train_cfg.eval_objectives) if train_cfg.eval_objectives else {})}
    check_objective_fields(objectives, eval_records)

    tracker = tracker or make_tracker(train_cfg.tracking.enabled, train_cfg.tracking.experiment, train_cfg.tracking.tracking_uri)
    sid = search_id(config)
    found = tracker.find_runs(f"tags.`moalign.search_id` = '{sid}' and tags.`moalign.kind` = 'search'")
    if found:
        parent_id = found[0].info.run_id
        tracker.resume_run(parent_id)
    else:
        parent_id = tracker.start_run(config.name or f"{config.strategy}-search", {
            "moalign.search_id": sid, "moalign.kind": "search", "moalign.strategy": config.strategy})
        tracker.log_params(parent_id, {"strategy": config.strategy, "objectives": names, "directions": directions,
                                       "eval_directions": {n: o.direction for n, o in objectives.items()},
                                       "weights": W.round(4).tolist(), "reference_point": config.reference_point,
                                       "model": train_cfg.model.name, "algorithm": train_cfg.algorithm.name,
                                       "steps_per_run": train_cfg.optim.steps})
    existing = tracker.find_runs(f"tags.`mlflow.parentRunId` = '{parent_id}'") if parent_id else []
    children = _Children(tracker, parent_id, existing)

    def tags(key: str, role: str) -> dict:
        return {"moalign.key": key, "moalign.role": role, "moalign.search_id": sid}

    rows = []
    try:
        if config.evaluate_base:
            run = children.finished("base")
            if run is not None:
                rows.append(_row_from_run(run, "base", "base", names, None))
            else:
                from moalign.models import load_causal_lm, load_tokenizer

                tokenizer = load_tokenizer(train_cfg.model.name, train_cfg.model.trust_remote_code)
                tokenizer.padding_side = "left"
                model = load_causal_lm(train_cfg.model.name, train_cfg.model.dtype, None, train_cfg.model.trust_remote_code)
                rows.append(_evaluate_child(tracker, children, "base", "base", None, names, model, tokenizer,
                                            eval_records, objectives, train_cfg, tags("base", "base")))
                del model
        if config.strategy == "grid":
            for w in W:
                key = f"train:{weights_key(w)}"
                rows.append(_train_child(tracker, children, key, "trained", w, names, train_cfg, tags(key, "trained")))
        else:
            endpoints = []
            for i in range(len(names)):
                e = np.eye(len(names))[i]
                key = f"train:{weights_key(e)}"
                endpoints.append(_train_child(tracker, children, key, "trained", e, names, train_cfg, tags(key, "trained")))
            rows += endpoints
            pending = [w for w in W if children.finished(f"soup:{weights_key(w)}") is None]
            for w in W:
                run = children.finished(f"soup:{weights_key(w)}")
                if run is not None:
                    rows.append(_row_from_run(run, f"soup:{weights_key(w)}", "soup", names, w))
            if pending:
                from moalign.pareto.soups import AdapterSoup

                soup = AdapterSoup(train_cfg.model, [r["adapter_dir"] for r in endpoints])
                for w in tqdm(pending, desc="soups", disable=not train_cfg.progress):
                    key = f"soup:{weights_key(w)}"
                    with soup.mixed(w) as model:
                        rows.append(_evaluate_child(tracker, children, key, "soup", w, names, model, soup.tokenizer,
                                                    eval_records, objectives, train_cfg, tags(key, "soup")))
    except KeyboardInterrupt:
        tracker.end_run(parent_id, "KILLED")
        raise
    except BaseException:
        tracker.end_run(parent_id, "FAILED")
        raise

    table = pd.DataFrame(rows)
    scores = table[names].to_numpy(dtype=float)
    table["non_dominated"] = non_dominated(scores, directions)
    base = table.loc[table["role"] == "base", names].to_numpy(dtype=float)
    ref = reference_point(scores, directions, config.reference_point, names, base[0] if len(base) else None)
    hv = hypervolume(scores, directions, ref)
    eu = expected_utility(scores, directions, W)
    for run_id, nd in zip(table["run_id"], table["non_dominated"]):
        tracker.set_tags(run_id, {"moalign.non_dominated": str(bool(nd)).lower()})
    tracker.log_metrics(parent_id, [(0, {
        "hypervolume": hv, "expected_utility": eu, "n_nondominated": int(table["non_dominated"].sum()),
        "n_policies": len(table), "total_train_steps": int(table["train_steps"].sum()),
        "total_policy_time_s": float(table["wall_time_s"].sum()), "wall_time_s": time.perf_counter() - started})])
    tracker.set_tags(parent_id, {"moalign.reference_point": json.dumps(ref.tolist())})
    if parent_id:
        with tempfile.TemporaryDirectory() as tmp:
            table.drop(columns=["adapter_dir"]).to_csv(Path(tmp) / "front.csv", index=False)
            from reports.plots import save_front_png

            save_front_png(table, names, directions, Path(tmp) / "front.png", title=config.name or config.strategy)
            tracker.log_artifacts(parent_id, tmp)
    tracker.end_run(parent_id, "FINISHED")
    return SearchResult(parent_id, table, names, directions, hv, eu, ref.tolist())

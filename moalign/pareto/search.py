"""Run a Pareto search: train or interpolate one policy per weight vector (once per training seed),
evaluate every policy on the held-out prompts, and record the front with its uncertainty in MLflow
(a parent run, one child per policy and seed).

Resumable: the parent is found again by a hash of the config; finished children are read back
instead of recomputed, interrupted ones continue from their checkpoints (see children.py).
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

from moalign.errors import ConfigError
from moalign.pareto.children import Children, child_key, weights_key
from moalign.pareto.config import SearchConfig
from moalign.pareto.front import check_reference_point, expected_utility, reference_point
from moalign.pareto.uncertainty import CONFIDENCE, PolicyScores
from moalign.pareto.weights import weight_vectors
from moalign.registry import build_objectives
from moalign.rl.reward import MultiObjectiveReward
from moalign.rl.trainer import check_objective_fields, load_data
from moalign.tracking import make_tracker


@dataclass
class SearchResult:
    parent_run_id: str | None
    # one row a policy (role, weights): w_<obj>, n_seeds, <objective> (mean over seeds),
    # <objective>_ci_low/_ci_high, non_dominated, train_steps and wall_time_s (all seeds)
    policies: pd.DataFrame
    runs: pd.DataFrame  # one row a child run: key, role, seed, run_id, weights, adapter_dir, <objective>...
    objectives: list[str]
    directions: list[str]
    hypervolume: float  # of the policies' means
    hypervolume_ci: tuple[float, float]  # 95% bootstrap interval over prompts and seeds
    expected_utility: float
    reference_point: list[float]
    n_prompts: int
    seeds: list[int]


def search_id(config: SearchConfig) -> str:
    """Same config, same id: how a re-run finds its earlier parent run."""
    data = asdict(config)
    data["train"].pop("progress", None)
    data.pop("n_bootstrap", None)  # summarises the children, does not change them
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _parent(tracker, config: SearchConfig, sid: str, params: dict) -> str | None:
    found = tracker.find_runs(f"tags.`moalign.search_id` = '{sid}' and tags.`moalign.kind` = 'search'")
    if found:
        tracker.resume_run(found[0].info.run_id)
        return found[0].info.run_id
    parent_id = tracker.start_run(config.name or f"{config.strategy}-search", {
        "moalign.search_id": sid, "moalign.kind": "search", "moalign.strategy": config.strategy})
    tracker.log_params(parent_id, params)
    return parent_id


def _run_children(config: SearchConfig, children: Children, W: np.ndarray, seeds: list[int]) -> None:
    """Base model once; then per seed: the grid's policies, or the soups' endpoints and their mixes."""
    train_cfg, m = config.train, len(children.names)
    if config.evaluate_base and children.read_back("base", "base", train_cfg.seed, None) is None:
        from moalign.models import load_causal_lm, load_tokenizer

        tokenizer = load_tokenizer(train_cfg.model.name, train_cfg.model.trust_remote_code)
        tokenizer.padding_side = "left"
        model = load_causal_lm(train_cfg.model.name, train_cfg.model.dtype, None, train_cfg.model.trust_remote_code)
        children.evaluate("base", train_cfg.seed, None, model, tokenizer)
        del model
    for seed in seeds:
        if config.strategy == "grid":
            for w in W:
                children.train(w, seed)
            continue
        endpoints = [children.train(e, seed) for e in np.eye(m)]
        # a soup at a one-hot weight vector is its endpoint: evaluating it again would count one
        # policy twice on the front
        mixes = [w for w in W if weights_key(w) not in {r["weights"] for r in endpoints}]
        pending = [w for w in mixes if children.read_back(child_key("soup", w, seed), "soup", seed, w) is None]
        if pending:
            from moalign.pareto.soups import AdapterSoup

            soup = AdapterSoup(train_cfg.model, [r["adapter_dir"] for r in endpoints])
            ids = [r["run_id"] for r in endpoints]  # what rebuilds the soup, with its weights
            for w in tqdm(pending, desc=f"soups (seed {seed})", disable=not train_cfg.progress):
                with soup.mixed(w) as model:
                    children.evaluate("soup", seed, w, model, soup.tokenizer, ids if all(ids) else None)
            del soup


def run_search(config: SearchConfig, tracker=None) -> SearchResult:
    """Search the front for `config`; see the module docstring."""
    started = time.perf_counter()
    train_cfg = config.train
    reward = MultiObjectiveReward(train_cfg.reward)  # validates objectives, weights and constraints
    names, directions = reward.names, reward.directions
    check_reference_point(config.reference_point, names)
    W = weight_vectors(config.weights, names)
    _, eval_records = load_data(train_cfg)
    objectives = {**reward.all_objectives, **(build_objectives(train_cfg.eval_objectives) if train_cfg.eval_objectives else {})}
    check_objective_fields(objectives, eval_records)
    seeds = config.training_seeds
    # objectives declare (low, high) bounds where they have them; intervals are clipped to them
    bounds = {n: tuple(getattr(o, "bounds", (None, None))) for n, o in objectives.items()}

    tracker = tracker or make_tracker(train_cfg.tracking.enabled, train_cfg.tracking.experiment, train_cfg.tracking.tracking_uri)
    sid = search_id(config)
    parent_id = _parent(tracker, config, sid, {
        "strategy": config.strategy, "objectives": names, "directions": directions,
        "eval_directions": {n: o.direction for n, o in objectives.items()},
        "bounds": {n: list(b) for n, b in bounds.items()}, "weights": W.round(4).tolist(),
        "reference_point": config.reference_point, "seeds": seeds, "n_bootstrap": config.n_bootstrap,
        "confidence": CONFIDENCE, "model": train_cfg.model.name, "algorithm": train_cfg.algorithm.name,
        "steps_per_run": train_cfg.optim.steps})
    children = Children(tracker, parent_id, sid, train_cfg, names, objectives, eval_records)
    try:
        _run_children(config, children, W, seeds)
    except KeyboardInterrupt:
        tracker.end_run(parent_id, "KILLED")
        raise
    except BaseException:
        tracker.end_run(parent_id, "FAILED")
        raise

    runs = pd.DataFrame(children.rows)
    scores = PolicyScores(runs, children.samples, list(objectives))
    base = scores.table.loc[scores.table["role"] == "base", names].to_numpy(dtype=float)
    ref = reference_point(scores.means(names), directions, config.reference_point, names,
                          base[0] if len(base) else None)
    front = scores.estimate(names, directions, ref, bounds, config.n_bootstrap)  # seed 0, as the report redraws
    table = front.table
    eu = expected_utility(scores.means(names), directions, W)
    nd = dict(zip(zip(table["role"], table["weights"]), table["non_dominated"]))
    for run_id, role, weights, reused in zip(runs["run_id"], runs["role"], runs["weights"], runs["reused"]):
        if not reused:  # a reused run's tag speaks of the front of the search that trained it
            tracker.set_tags(run_id, {"moalign.non_dominated": str(bool(nd[(role, weights)])).lower()})
    metrics = {"hypervolume": front.hypervolume, "expected_utility": eu,
               "n_nondominated": int(table["non_dominated"].sum()), "n_policies": len(table), "n_runs": len(runs),
               "n_prompts": front.n_prompts, "n_seeds": front.n_seeds, "total_train_steps": int(runs["train_steps"].sum()),
               "total_policy_time_s": float(runs["wall_time_s"].sum()), "wall_time_s": time.perf_counter() - started}
    if front.n_prompts:
        metrics.update(hypervolume_ci_low=front.hypervolume_ci[0], hypervolume_ci_high=front.hypervolume_ci[1])
    tracker.log_metrics(parent_id, [(0, metrics)])
    tracker.set_tags(parent_id, {"moalign.reference_point": json.dumps(ref.tolist())})
    if parent_id:
        with tempfile.TemporaryDirectory() as tmp:
            table.to_csv(Path(tmp) / "front.csv", index=False)
            from moalign.reports.interactive import policy_samples, save_front_html
            from moalign.reports.plots import save_front_png

            title = config.name or config.strategy
            save_front_png(table, names, directions, Path(tmp) / "front.png", title=title)
            directions_all = {**dict(zip(names, directions)), **{n: o.direction for n, o in objectives.items()}}
            save_front_html(table, names, directions_all, policy_samples(runs, children.samples),
                            Path(tmp) / "front.html", title=title)
            tracker.log_artifacts(parent_id, tmp)
    tracker.end_run(parent_id, "FINISHED")
    return SearchResult(parent_id, table, runs, names, directions, front.hypervolume, front.hypervolume_ci, eu,
                        ref.tolist(), front.n_prompts, seeds)

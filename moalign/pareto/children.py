"""The child runs of a search, one per policy and training seed, keyed by `moalign.key`:
`base`, `train:<weights>:s<seed>`, `soup:<weights>:s<seed>`.

A finished child is read back, an unfinished one continued in the same run, a missing one trained
or evaluated. A training run finished by another search with the same training config is reused,
not trained again and not copied (a copy would show the same policy twice in the MLflow UI): the
parent's tag `moalign.reused` holds {child key: run id} as JSON, and the front names that run.
Every child's eval samples (per-sample scores) are kept, because the front's intervals resample them.

What the MLflow UI and `load_policy` read from a child: params `weight/<objective>` (one number
each, so the chart view can colour a scatter of `eval/<objective>` metrics by weight) and
`reward.weights`; a soup child's tag `moalign.endpoints`, the JSON list of its endpoints' run ids
in objective order, which with `reward.weights` rebuilds it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from moalign.rl.evaluation import evaluate_policy
from moalign.rl.trainer import train

SAMPLES = "eval_samples.json"
REUSED = "moalign.reused"  # the parent's tag: {child key: run id} of runs reused from other searches, as JSON
TAG_LIMIT = 8000  # MLflow's maximum length of a tag value


def reused_runs(parent) -> dict[str, str]:
    """{child key: run id} of the runs a search reused from other searches."""
    return json.loads(parent.data.tags.get(REUSED) or "{}")


def weight_params(names, weights) -> dict:
    """{"weight/<objective>": w}: numeric params, one per objective, for the MLflow chart view."""
    return {f"weight/{name}": float(w) for name, w in zip(names, weights)}


def weights_key(weights) -> str:
    return ",".join(f"{w:.4f}" for w in weights)


def child_key(role: str, weights=None, seed: int | None = None) -> str:
    """The child's `moalign.key`.

    >>> child_key("trained", [1.0, 0.0], 2), child_key("soup", [0.5, 0.5], 0), child_key("base")
    ('train:1.0000,0.0000:s2', 'soup:0.5000,0.5000:s0', 'base')
    """
    if role == "base":
        return "base"
    return f"{'train' if role == 'trained' else role}:{weights_key(weights)}:s{seed}"


def train_hash(cfg) -> str:
    """Identity of a training run's outcome: its config (seed included) without bookkeeping fields."""
    data = asdict(cfg)
    data.pop("progress", None)
    data["tracking"] = {}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _row(key, role, seed, run_id, weights, names, scores, steps, wall_time, adapter_dir=None) -> dict:
    """One run of the search: identity, weights (none for the base model), cost and mean scores."""
    row = {"key": key, "role": role, "seed": int(seed), "run_id": run_id,
           "weights": weights_key(weights) if weights is not None else "",
           "train_steps": steps, "wall_time_s": wall_time, "adapter_dir": str(adapter_dir) if adapter_dir else ""}
    for i, name in enumerate(names):
        row[f"w_{name}"] = float(weights[i]) if weights is not None else np.nan
    row.update(scores)
    return row


class Children:
    """The children of one parent run; `rows` and `samples` collect what each call produced."""

    def __init__(self, tracker, parent_id, search_id: str, train_cfg, names, objectives, eval_records):
        self.tracker, self.parent_id, self.search_id = tracker, parent_id, search_id
        self.train_cfg, self.names, self.objectives, self.eval_records = train_cfg, names, objectives, eval_records
        existing = tracker.find_runs(f"tags.`mlflow.parentRunId` = '{parent_id}'") if parent_id else []
        self.runs = {r.data.tags.get("moalign.key"): r for r in existing}
        self.reused = reused_runs(tracker.get_run(parent_id)) if parent_id else {}
        for key, run_id in self.reused.items():  # finished before they were reused
            self.runs[key] = tracker.get_run(run_id)
        self.rows: list[dict] = []
        self.samples: dict[str, pd.DataFrame | None] = {}

    def finished(self, key):
        run = self.runs.get(key)
        return run if run is not None and run.info.status == "FINISHED" else None

    def unfinished_id(self, key):
        run = self.runs.get(key)
        return run.info.run_id if run is not None and run.info.status != "FINISHED" else None

    def tags(self, key: str, role: str, seed: int) -> dict:
        return {"moalign.key": key, "moalign.role": role, "moalign.search_id": self.search_id,
                "moalign.seed": str(seed)}

    def _add(self, row: dict, samples: pd.DataFrame | None) -> dict:
        row["reused"] = row["key"] in self.reused
        self.rows.append(row)
        self.samples[row["key"]] = samples
        return row

    def _row_from_run(self, run, key, role, seed, weights) -> dict:
        scores = {k[len("eval/"):]: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
        checkpoint = run.data.tags.get("moalign.checkpoint_dir")
        adapter = Path(checkpoint).parent / "adapter" if checkpoint else None
        wall = run.data.metrics.get("train_wall_time_s", run.data.metrics.get("eval_wall_time_s", 0.0))
        return _row(key, role, seed, run.info.run_id, weights, self.names, scores,
                    int(run.data.metrics.get("train_steps", 0)), wall, adapter)

    def read_back(self, key, role, seed, weights) -> dict | None:
        """A finished child's row and samples, or None."""
        run = self.finished(key)
        if run is None:
            return None
        samples = self.tracker.read_table(run.info.run_id, SAMPLES)
        return self._add(self._row_from_run(run, key, role, seed, weights), samples)

    def evaluate(self, role, seed, weights, model, tokenizer, endpoints: list[str] | None = None) -> dict:
        """An evaluation-only child (base model or interpolated policy), sampled with `seed`; a
        soup names the `endpoints` (run ids) it mixes."""
        key = child_key(role, weights, seed)
        t0 = time.perf_counter()
        run_id = self.unfinished_id(key)
        if run_id:
            self.tracker.resume_run(run_id)
        else:
            name = key if weights is None else f"{role}:{weights_key(weights)}:s{seed}"
            tags = self.tags(key, role, seed)
            if endpoints is not None:
                tags["moalign.endpoints"] = json.dumps(endpoints)
            run_id = self.tracker.start_run(name, tags, self.parent_id)
            if weights is not None:
                self.tracker.log_params(run_id, {"reward.weights": [float(w) for w in weights],
                                                 **weight_params(self.names, weights)})
        cfg = self.train_cfg
        try:
            scores_df, samples = evaluate_policy(model, tokenizer, self.eval_records, self.objectives, cfg.sampling,
                                                 cfg.model.use_chat_template, seed=seed)
        except BaseException:
            self.tracker.end_run(run_id, "KILLED")
            raise
        scores = {n: float(scores_df[n].mean()) for n in scores_df.columns}
        wall = time.perf_counter() - t0
        self.tracker.log_metrics(run_id, [(0, {**{f"eval/{k}": v for k, v in scores.items()},
                                               "eval_wall_time_s": wall, "train_steps": 0})])
        self.tracker.log_table(run_id, samples, SAMPLES)
        self.tracker.end_run(run_id, "FINISHED")
        return self._add(_row(key, role, seed, run_id, weights, self.names, scores, 0, wall), samples)

    def train(self, weights, seed: int) -> dict:
        """A trained child: read back, continued (also when stopped before its first checkpoint),
        copied from another search, or trained."""
        key = child_key("trained", weights, seed)
        done = self.read_back(key, "trained", seed, weights)
        if done is not None:
            return done
        cfg = copy.deepcopy(self.train_cfg)
        cfg.reward.weights = [float(w) for w in weights]
        cfg.seed = int(seed)
        cfg.tracking.run_name = f"trained:{weights_key(weights)}:s{seed}"
        thash = train_hash(cfg)
        tags = self.tags(key, "trained", seed)
        resume = self.unfinished_id(key)
        if resume is None:
            reused = self._reuse(key, seed, weights, thash)
            if reused is not None:
                return reused
        result = train(cfg, resume_run_id=resume, parent_run_id=self.parent_id,
                       tags={**tags, "moalign.train_hash": thash}, tracker=self.tracker)
        self.tracker.log_params(result.run_id, weight_params(self.names, weights))  # beside the config's
        self.tracker.log_metrics(result.run_id, [(result.steps, {"train_steps": result.steps})])
        row = _row(key, "trained", seed, result.run_id, weights, self.names, result.eval_scores, result.steps,
                   result.wall_time, result.adapter_dir)
        return self._add(row, result.eval_samples)

    def _reuse(self, key, seed, weights, thash) -> dict | None:
        """A finished run with the same training config elsewhere in the experiment (e.g. the soups'
        endpoints when a grid includes the extremes): recorded on the parent, read back as it is.
        None (train it) when the parent's tag has no room left for one more."""
        found = self.tracker.find_runs(f"tags.`moalign.train_hash` = '{thash}' and attributes.status = 'FINISHED'")
        for run in found:
            if run.data.tags.get("mlflow.parentRunId") == self.parent_id:
                continue
            reused = json.dumps({**self.reused, key: run.info.run_id}, separators=(",", ":"))
            if len(reused) > TAG_LIMIT:
                return None
            self.tracker.set_tags(self.parent_id, {REUSED: reused})
            self.reused[key], self.runs[key] = run.info.run_id, run
            return self.read_back(key, "trained", seed, weights)
        return None

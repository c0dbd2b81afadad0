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

A sample pool (`pool:<split>:s<seed>`, `moalign.pool`) is a child too: a helper, no policy of the
front, reused like a training run by any search whose pool has the same `moalign.pool_hash`.

Each child is an independent unit of work: `run_train(ctx, unit)`, `run_eval(ctx, units)` and
`run_pool(ctx, unit)` need only a `ChildContext` (the search's config, parent run id, search id, tracking URI), so an executor
can run them in another process. They never write the parent run: a reuse comes back as a row with
`reused` true and the orchestrator records it (`Children.record_reused`).

Every child logs its cost at its last step: `cost/train_steps`, `cost/generated_tokens`,
`cost/forward_tokens`, `cost/trained_tokens`, `cost/wall_time_s` (see `moalign.rl.runs.cost_of`
for what each counts).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from moalign.errors import MoalignError

SAMPLES = "eval_samples.json"
REUSED = "moalign.reused"  # the parent's tag: {child key: run id} of runs reused from other searches, as JSON
TAG_LIMIT = 8000  # MLflow's maximum length of a tag value
COSTS = ("train_steps", "generated_tokens", "forward_tokens", "trained_tokens", "wall_time_s")  # metrics cost/<name>, row columns
# children that are no policy of the front: sample pools and training runs whose policies are
# evaluated under other keys (a conditioned or Rewards-in-Context run, a rejection iteration)
HELPER_ROLES = ("pool", "conditioned-train", "rewards_in_context-train", "rejection-iteration", "preferences")


def reused_runs(parent) -> dict[str, str]:
    """{child key: run id} of the runs a search reused from other searches."""
    return json.loads(parent.data.tags.get(REUSED) or "{}")


def weight_params(names, weights) -> dict:
    """{"weight/<objective>": w}: numeric params, one per objective, for the MLflow chart view."""
    return {f"weight/{name}": float(w) for name, w in zip(names, weights)}


def weights_key(weights) -> str:
    return ",".join(f"{w:.4f}" for w in weights)


def child_key(role: str, weights=None, seed: int | None = None, tag: str = "") -> str:
    """The child's `moalign.key`; `tag` tells apart children of one role, weights and seed.

    >>> child_key("trained", [1.0, 0.0], 2), child_key("soup", [0.5, 0.5], 0), child_key("base")
    ('train:1.0000,0.0000:s2', 'soup:0.5000,0.5000:s0', 'base')
    >>> child_key("pool", None, 0, "train"), child_key("rejection-iteration", [1, 0], 0, "i1")
    ('pool:train:s0', 'rejection-iteration:1.0000,0.0000:i1:s0')
    """
    if role == "base":
        return "base"
    tag = f"{tag}:" if tag else ""
    if weights is None:  # a policy for all weights (e.g. a conditioned one)
        return f"{role}:{tag}s{seed}"
    return f"{'train' if role == 'trained' else role}:{weights_key(weights)}:{tag}s{seed}"


# Training fields added after runs were made, left out of identities (train_hash, search_id) while
# they are at the value that means "as before", so those runs and searches are still found.
AS_BEFORE = {("model", "init_adapter"): None, ("model", "attn_implementation"): None,
             ("sampling", "static_cache"): False, ("model", "disable_dropout"): False,
             ("reward", "weight_schedule"): None, ("data", "validation_fraction"): 0.0,
             ("supervised", "online_pools"): [], ("supervised", "online_quantile"): 0.7}


def as_before(train: dict) -> dict:
    """`asdict(TrainConfig)` without the fields in `AS_BEFORE` at their old meaning, nor a disabled
    `conditioning` or `supervised` section."""
    for (section, key), value in AS_BEFORE.items():
        if key in train.get(section, {}) and train[section][key] == value:
            del train[section][key]
    for section in ("conditioning", "supervised"):
        if not (train.get(section) or {}).get("enabled", True):
            del train[section]
    return train


def train_hash(cfg) -> str:
    """Identity of a training run's outcome: its config (seed included) without bookkeeping fields."""
    data = as_before(asdict(cfg))
    data.pop("progress", None)
    data["tracking"] = {}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cost_metrics(steps: int, generated: int, forward: int, wall: float, trained: int = 0) -> dict:
    """The `cost/...` metrics every child logs (see `moalign.rl.runs.cost_of` for what each counts)."""
    return {"cost/train_steps": int(steps), "cost/generated_tokens": int(generated),
            "cost/forward_tokens": int(forward), "cost/trained_tokens": int(trained), "cost/wall_time_s": float(wall)}


def _row(key, role, seed, run_id, weights, names, scores, cost: dict, adapter_dir=None) -> dict:
    """One run of the search: identity, weights (none for the base model), cost and mean scores."""
    row = {"key": key, "role": role, "seed": int(seed), "run_id": run_id,
           "weights": weights_key(weights) if weights is not None else "",
           **{name: cost.get(f"cost/{name}", 0) for name in COSTS},
           "adapter_dir": str(adapter_dir) if adapter_dir else ""}
    for i, name in enumerate(names):
        row[f"w_{name}"] = float(weights[i]) if weights is not None else np.nan
    row.update(scores)
    return row


@dataclass
class ChildContext:
    """What a child needs besides its unit: picklable, so that it can run in another process."""

    config: object  # the SearchConfig
    parent_run_id: str | None
    search_id: str
    tracking_uri: str | None  # resolved; None with tracking disabled


class Children:
    """The children of one parent run. Workers (`run_train`, `run_eval`) return (row, samples);
    the orchestrator's instance collects them in `rows` and `samples` with `add`."""

    def __init__(self, tracker, parent_id, search_id: str, train_cfg, names, objectives, eval_records, directions):
        self.tracker, self.parent_id, self.search_id, self.directions = tracker, parent_id, search_id, directions
        self.train_cfg, self.names, self.objectives, self.eval_records = train_cfg, names, objectives, eval_records
        existing = tracker.find_runs(f"tags.`mlflow.parentRunId` = '{parent_id}'") if parent_id else []
        self.runs = {r.data.tags.get("moalign.key"): r for r in existing}
        self.reused = reused_runs(tracker.get_run(parent_id)) if parent_id else {}
        self.recorded = dict(self.reused)  # what the parent's tag holds; `reused` gains this process's finds
        for key, run_id in self.reused.items():  # finished before they were reused
            self.runs[key] = tracker.get_run(run_id)
        self.rows: list[dict] = []
        self.samples: dict[str, pd.DataFrame | None] = {}

    @classmethod
    def open(cls, ctx: ChildContext, tracker=None) -> "Children":
        """A worker's view of the search's children, built from the context alone."""
        from moalign.registry import build_objectives
        from moalign.rl.reward import MultiObjectiveReward
        from moalign.rl.trainer import load_data
        from moalign.tracking import make_tracker

        train_cfg = ctx.config.train
        if tracker is None:
            tracking = train_cfg.tracking
            tracker = make_tracker(tracking.enabled, tracking.experiment, ctx.tracking_uri)
        reward = MultiObjectiveReward(train_cfg.reward)
        extra = build_objectives(train_cfg.eval_objectives) if train_cfg.eval_objectives else {}
        _, eval_records = load_data(train_cfg)
        return cls(tracker, ctx.parent_run_id, ctx.search_id, train_cfg, reward.names,
                   {**reward.all_objectives, **extra}, eval_records, reward.directions)

    def finished(self, key):
        run = self.runs.get(key)
        return run if run is not None and run.info.status == "FINISHED" else None

    def unfinished_id(self, key):
        run = self.runs.get(key)
        return run.info.run_id if run is not None and run.info.status != "FINISHED" else None

    def tags(self, key: str, role: str, seed: int) -> dict:
        return {"moalign.key": key, "moalign.role": role, "moalign.search_id": self.search_id,
                "moalign.seed": str(seed), **ray_node()}

    def add(self, row: dict, samples: pd.DataFrame | None) -> dict:
        self.rows.append(row)
        self.samples[row["key"]] = samples
        return row

    def record_reused(self, row: dict) -> None:
        """Name a reused run on the parent (the orchestrator's job: workers never write the parent)."""
        if row.get("reused") and self.recorded.get(row["key"]) != row["run_id"]:
            self.recorded[row["key"]] = self.reused[row["key"]] = row["run_id"]
            self.tracker.set_tags(self.parent_id, {REUSED: json.dumps(self.recorded, separators=(",", ":"))})

    def _row_from_run(self, run, key, role, seed, weights) -> dict:
        metrics = run.data.metrics
        scores = {k[len("eval/"):]: v for k, v in metrics.items() if k.startswith("eval/")}
        scores.update({k: v for k, v in metrics.items() if k.startswith("val/")})  # the validation split's, as named
        adapter = self._verified_folder(run, role)
        # runs from before cost/ metrics: their steps and wall time, tokens unknown
        cost = {"cost/train_steps": metrics.get("train_steps", 0), "cost/generated_tokens": np.nan,
                "cost/forward_tokens": np.nan, "cost/trained_tokens": np.nan,
                "cost/wall_time_s": metrics.get("train_wall_time_s", metrics.get("eval_wall_time_s", 0.0))}
        cost.update({k: v for k, v in metrics.items() if k.startswith("cost/")})
        cost["cost/train_steps"] = int(cost["cost/train_steps"])
        row = _row(key, role, seed, run.info.run_id, weights, self.names, scores, cost, adapter)
        row["reused"] = key in self.reused
        return row

    def _verified_folder(self, run, role: str) -> Path | None:
        """What a finished run made, checked against the hash it logged (`moalign.integrity`): a
        pool's table, a training run's adapter; the local copy a tag points at when it is that, else
        the run's logged artifact, downloaded beside it. None for runs that made neither."""
        from moalign.integrity import ADAPTER_HASH, POOL_HASH, check_pool, file_sha256, verified_dir
        from moalign.policies import guard

        tags, run_id = run.data.tags, run.info.run_id
        scratch = Path(self.train_cfg.output_dir) / run_id / "verified"
        if role == "pool":
            if POOL_HASH not in run.data.params:
                raise MoalignError(f"pool run {run_id} logged no {POOL_HASH}: its table cannot be checked")
            local = tags.get("moalign.pool_path")
            if local and check_pool(run, local):
                return Path(local)
            with guard(self.tracker.uri, f"read the pool of run {run_id}"):
                path = Path(self.tracker.client.download_artifacts(run_id, "pool/pool.parquet", str(scratch)))
            if file_sha256(path) != run.data.params.get(POOL_HASH):
                raise MoalignError(f"pool run {run_id}: its logged table does not hash to the {POOL_HASH} it logged")
            return path
        if "moalign.checkpoint_dir" not in tags:
            return None
        if ADAPTER_HASH not in run.data.params:  # a run from before hashes were logged: its folder as it is
            return Path(tags["moalign.checkpoint_dir"]).parent / "adapter"
        return verified_dir(self.tracker, run, scratch)

    def read_back(self, key, role, seed, weights) -> tuple[dict, pd.DataFrame | None] | None:
        """A finished child's row and samples, or None."""
        run = self.finished(key)
        if run is None:
            return None
        samples = self.tracker.read_table(run.info.run_id, SAMPLES)
        return self._row_from_run(run, key, role, seed, weights), samples

    def _open_eval(self, unit) -> str | None:
        """The evaluation child's run: the unfinished one continued, or a new one with its tags
        (a policy built from other runs names them, `unit.sources`, in `moalign.endpoints`)."""
        role, seed, weights, key = unit.role, unit.seed, unit.weights, unit.key
        run_id = self.unfinished_id(key)
        if run_id:
            self.tracker.resume_run(run_id)
            if node := ray_node():  # a retried child may run on another node
                self.tracker.set_tags(run_id, node)
            return run_id
        tags = self.tags(key, role, seed)
        if unit.sources:
            tags["moalign.endpoints"] = json.dumps(list(unit.sources))
        run_id = self.tracker.start_run(key if weights is None else f"{role}:{weights_key(weights)}:s{seed}",
                                        tags, self.parent_id)
        if weights is not None:
            self.tracker.log_params(run_id, {"reward.weights": [float(w) for w in weights],
                                             **weight_params(self.names, weights)})
        return run_id

    def _close_eval(self, unit, run_id, samples: pd.DataFrame, cost: dict, extra: dict | None = None) -> tuple[dict, pd.DataFrame]:
        scores = {n: float(samples[n].mean()) for n in self.objectives if n in samples}
        self.tracker.log_metrics(run_id, [(0, {**{f"eval/{k}": v for k, v in scores.items()}, **(extra or {}),
                                               "eval_wall_time_s": cost["cost/wall_time_s"], "train_steps": 0, **cost})])
        self.tracker.log_table(run_id, samples, SAMPLES)
        self.tracker.end_run(run_id, "FINISHED")
        row = _row(unit.key, unit.role, unit.seed, run_id, unit.weights, self.names, scores, cost)
        row["reused"] = False
        return row, samples

    def evaluate(self, unit, model, tokenizer) -> tuple[dict, pd.DataFrame]:
        """An evaluation-only child (base model, soup, mix), sampled with the unit's seed."""
        from moalign.rl.evaluation import evaluate_policy

        t0 = time.perf_counter()
        run_id = self._open_eval(unit)
        cfg = self.train_cfg
        counts = {}
        try:
            _, samples = evaluate_policy(model, tokenizer, self.eval_records, self.objectives, cfg.sampling,
                                         cfg.model.use_chat_template, seed=unit.seed, counter=counts, progress=cfg.progress)
        except BaseException:
            self.tracker.end_run(run_id, "KILLED")
            raise
        # a decoding-time mix runs each of its endpoints on every token
        forward = counts["forward_tokens"] * getattr(model, "forwards_per_token", 1)
        cost = cost_metrics(0, counts["generated_tokens"], forward, time.perf_counter() - t0)
        return self._close_eval(unit, run_id, samples, cost)

    def record_chosen(self, unit, samples: pd.DataFrame, extra: dict) -> tuple[dict, pd.DataFrame]:
        """An evaluation child whose samples were chosen among scored ones (best-of-n): nothing is
        generated here, so its own cost is the choosing; what the samples cost is their pool's."""
        t0 = time.perf_counter()
        run_id = self._open_eval(unit)
        # what `load_policy` rebuilds it from: the search's settings (its scalarisation, constraints, model)
        self.tracker.log_dict(run_id, asdict(self.train_cfg), "config.yaml")
        return self._close_eval(unit, run_id, samples, cost_metrics(0, 0, 0, time.perf_counter() - t0), extra)

    def pool(self, unit, spec, objectives: dict, records: list[dict]) -> tuple[dict, None]:
        """A sample pool child (`moalign.pool`): read back, continued from its last whole part,
        reused from any finished pool with the same `pool_hash` in the experiment, or sampled."""
        from moalign.pool import TABLE, build_pool, pool_cost, pool_hash, write_table

        key = unit.key
        done = self.read_back(key, unit.role, unit.seed, None)
        if done is not None:
            return done[0], None
        from moalign.pool import matches, records_digest

        phash = pool_hash(self.train_cfg, spec, objectives, records)
        run_id = self.unfinished_id(key)
        if run_id is None:
            reused = self._reuse(key, unit, "moalign.pool_hash", phash,
                                 lambda run: matches(run, self._verified_folder(run, "pool"), spec, records, objectives))
            if reused is not None:
                return reused[0], None
            tags = {**self.tags(key, unit.role, unit.seed), "moalign.pool_hash": phash}
            run_id = self.tracker.start_run(key, tags, self.parent_id)
            self.tracker.log_params(run_id, {**{f"pool.{k}": v for k, v in spec.fields().items()},
                                             "pool.objectives": sorted(objectives), "pool.prompts": len(records),
                                             "pool.records": records_digest(records),
                                             "pool.max_new_tokens": self.train_cfg.sampling.max_new_tokens})
            self.tracker.log_dict(run_id, asdict(self.train_cfg), "config.yaml")  # the model and data it sampled
        else:
            self.tracker.resume_run(run_id)
        folder = Path(self.train_cfg.output_dir) / (run_id or f"untracked-pool-{phash}")
        try:
            frame = build_pool(self.train_cfg, spec, records, objectives, folder / "parts", self.train_cfg.progress)
            path = write_table(frame, folder / "pool" / TABLE)
            from moalign.integrity import POOL_HASH, file_sha256

            self.tracker.log_params(run_id, {POOL_HASH: file_sha256(path)})  # what reusers check the table against
            cost = pool_cost(frame)
            means = {f"pool/{n}/mean": float(frame[n].mean()) for n in objectives if n in frame}
            self.tracker.log_metrics(run_id, [(0, {**means, **cost, "pool/samples": len(frame)})])
            self.tracker.log_artifacts(run_id, path.parent, "pool")
            self.tracker.set_tags(run_id, {"moalign.pool_path": str(path.resolve())})
            self.tracker.end_run(run_id, "FINISHED")
        except KeyboardInterrupt:
            self.tracker.end_run(run_id, "KILLED")
            raise
        except BaseException:
            self.tracker.end_run(run_id, "FAILED")
            raise
        row = _row(key, unit.role, unit.seed, run_id, None, self.names, {}, cost, path)
        row["reused"] = False
        return row, None

    def train(self, unit, cfg) -> tuple[dict, pd.DataFrame | None]:
        """A trained child under `cfg`: read back, continued (also when stopped before its first
        checkpoint), reused from another search, or trained."""
        from moalign.rl.trainer import train

        key, seed, weights = unit.key, unit.seed, unit.weights
        done = self.read_back(key, unit.role, seed, weights)
        if done is not None:
            return done
        thash = train_hash(cfg)
        tags = self.tags(key, unit.role, seed)
        if cfg.model.init_adapter:
            tags["moalign.init_adapter"] = str(cfg.model.init_adapter)
        resume = self.unfinished_id(key)
        if resume is None:
            reused = self._reuse(key, unit, "moalign.train_hash", thash)
            if reused is not None:
                return reused
        elif node := ray_node():  # a retried child may run on another node
            self.tracker.set_tags(resume, node)
        result = train(cfg, resume_run_id=resume, parent_run_id=self.parent_id,
                       tags={**tags, "moalign.train_hash": thash}, tracker=self.tracker)
        if weights is not None:
            self.tracker.log_params(result.run_id, weight_params(self.names, weights))  # beside the config's
        self.tracker.log_metrics(result.run_id, [(result.steps, {"train_steps": result.steps})])
        row = _row(key, unit.role, seed, result.run_id, weights, self.names,
                   {**result.eval_scores, **(result.validation_scores or {})}, result.cost, result.adapter_dir)
        row["reused"] = False
        return row, result.eval_samples

    def _claim_holds(self, run, tag: str, value: str) -> bool:
        """A tag is anyone's to write: a training run is reused only if the config it logged hashes
        to the train_hash it claims (its weights are checked against their own hash when read)."""
        if tag != "moalign.train_hash":
            return False  # no other claim is taken on trust: a pool's reuse passes its own check
        from moalign.config import from_dict, parse_yaml
        from moalign.rl.config import TrainConfig

        text = self.tracker.read_text(run.info.run_id, "config.yaml")
        try:
            return text is not None and train_hash(from_dict(TrainConfig, parse_yaml(text))) == value
        except Exception:  # an unreadable or invalid config claims nothing
            return False

    def _reuse(self, key, unit, tag: str, value: str, check=None) -> tuple[dict, pd.DataFrame | None] | None:
        """A finished run with the same identity (`tag` = `value`: a training config's train_hash, a
        pool's pool_hash) elsewhere in the experiment (e.g. the soups' endpoints when a grid includes
        the extremes), read back as it is, if its claim holds (`check(run)`, default `_claim_holds`);
        the orchestrator records it on the parent. None (train it) when none does, or the parent's
        tag has no room left for one more."""
        found = self.tracker.find_runs(f"tags.`{tag}` = '{value}' and attributes.status = 'FINISHED'")
        for run in found:
            if run.data.tags.get("mlflow.parentRunId") == self.parent_id:
                continue
            try:
                holds = check(run) if check is not None else self._claim_holds(run, tag, value)
            except MoalignError:  # its weights or table are not what it logged: not reused
                holds = False
            if not holds:
                continue
            if len(json.dumps({**self.reused, key: run.info.run_id}, separators=(",", ":"))) > TAG_LIMIT:
                return None
            self.reused[key], self.runs[key] = run.info.run_id, run
            return self.read_back(key, unit.role, unit.seed, unit.weights)
        return None


def _strategy(ctx: ChildContext, children: Children):
    from moalign.pareto.strategies import get_strategy

    return get_strategy(ctx.config.strategy)(ctx.config, children.names, children.directions, None)


def run_train(ctx: ChildContext, unit, children: Children | None = None) -> tuple[dict, pd.DataFrame | None]:
    """Unit of work "train child (weights, seed)": (row, eval samples). `children` is the caller's
    (in-process); without it one is opened from `ctx`, as in another process."""
    children = children or Children.open(ctx)
    return children.train(unit, _strategy(ctx, children).train_config(unit))


def run_pool(ctx: ChildContext, unit, children: Children | None = None) -> tuple[dict, None]:
    """Unit of work "sample and score a pool" (`moalign.pool`): (row, None); the row's
    `adapter_dir` is the pool table's path."""
    from moalign.pool import PoolSpec

    children = children or Children.open(ctx)
    spec = PoolSpec(unit.split, unit.n, unit.temperature, unit.top_p, unit.seed, unit.adapter, unit.ask)
    if unit.split == "eval":  # best-of-n chooses among these: every objective a policy is evaluated on
        objectives, records = children.objectives, children.eval_records
    else:  # fine-tuning chooses among these: the reward's objectives, weighted and constrained
        from moalign.rl.reward import MultiObjectiveReward
        from moalign.rl.trainer import load_data

        objectives, records = MultiObjectiveReward(children.train_cfg.reward).all_objectives, load_data(children.train_cfg)[0]
    return children.pool(unit, spec, objectives, records)


def run_eval(ctx: ChildContext, units: list, children: Children | None = None) -> list[tuple[dict, pd.DataFrame | None]]:
    """Unit of work "evaluate policy children": the units of one group (one model load), each read
    back if finished, else built by its strategy and evaluated."""
    children = children or Children.open(ctx)
    out, pending = {}, []
    for unit in units:
        done = children.read_back(unit.key, unit.role, unit.seed, unit.weights)
        if done is not None:
            out[unit.key] = done
        else:
            pending.append(unit)
    if pending:
        progress = ctx.config.train.progress and len(pending) > 1
        from tqdm.auto import tqdm

        strategy = _strategy(ctx, children)
        chosen = strategy.chosen(pending)
        if chosen is not None:  # samples chosen among scored ones: nothing to load or generate
            for unit, samples, extra in chosen:
                out[unit.key] = children.record_chosen(unit, samples, extra)
        else:
            policies = strategy.policies(pending)
            for unit, model, tokenizer in tqdm(policies, total=len(pending), desc=pending[0].group, disable=None if progress else True):
                out[unit.key] = children.evaluate(unit, model, tokenizer)
            del policies
    return [out[u.key] for u in units]


def ray_node() -> dict:
    """{"moalign.ray_node": id} of the Ray node running this child as a task, so a slow or lost
    node's runs can be found in MLflow; {} in a local search (which never imports Ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # the driver (a local search after a Ray one): not a task
        return {}
    return {"moalign.ray_node": context.get_node_id()}

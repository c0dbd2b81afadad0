"""Run a Pareto search: ask the strategy (`moalign.pareto.strategies`) which children to run until
it asks for none, run them, and record the front with its uncertainty and its cost in MLflow (a
parent run, one child per policy and seed).

Resumable: the parent is found again by a hash of the config; finished children are read back
instead of recomputed, interrupted ones continue from their checkpoints (see children.py). Children
are units of work (`run_train`, `run_eval`) handed to an `executor`, by default run here one by one.
"""
from __future__ import annotations

import functools
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from moalign.errors import MoalignError
from moalign.pareto.children import COSTS, ChildContext, Children, as_before, run_eval, run_pool, run_train
from moalign.pareto.config import SearchConfig
from moalign.pareto.executors import check_ray_address, check_shared_store, make_executor
from moalign.pareto.strategies import get_strategy
from moalign.pareto.strategies.base import EvalUnit, PoolUnit, base_unit
from moalign.pareto.front import check_reference_point, expected_utility, reference_point
from moalign.pareto.uncertainty import CONFIDENCE, PolicyScores
from moalign.pareto.weights import weight_vectors
from moalign.registry import build_objectives
from moalign.rl.reward import MultiObjectiveReward
from moalign.rl.trainer import check_objective_fields, load_data
from moalign.tracking import make_tracker, resolve_tracking_uri


@dataclass
class SearchResult:
    parent_run_id: str | None
    # one row a policy (role, weights): w_<obj>, n_seeds, <objective> (mean over seeds),
    # <objective>_ci_low/_ci_high, feasible (feasible | infeasible | undecided under the constraints),
    # non_dominated (among the feasible), oracle (chosen with the references' help), train_steps,
    # generated_tokens, forward_tokens, trained_tokens and wall_time_s (all seeds)
    policies: pd.DataFrame
    runs: pd.DataFrame  # one row a child run: key, role, seed, run_id, weights, adapter_dir, <objective>...
    objectives: list[str]
    directions: list[str]
    hypervolume: float  # of the feasible policies' means
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
    data.pop("executor", None)  # where the children run, not what they are: a search resumes under either
    data.pop("ray", None)
    if not data.get("options"):  # as before the field existed, so earlier searches are found again
        data.pop("options", None)
    as_before(data["train"])
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


def cost_totals(runs: pd.DataFrame) -> dict:
    """The parent's cost: `cost/<name>` summed over every run of the search (reused ones too: the
    front cost them), and `cost/new_train_steps`, the steps this search trained itself."""
    totals = {f"cost/{name}": float(runs[name].sum()) for name in COSTS}
    totals["cost/new_train_steps"] = float(runs.loc[~runs["reused"].astype(bool), "train_steps"].sum())
    return totals


def _with_costs(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """front.csv's per-policy cost columns: the sums over the policy's runs (all its seeds)."""
    sums = runs.groupby(["role", "weights"], sort=False)[list(COSTS)].sum(min_count=1).reset_index()
    return table.drop(columns=[c for c in COSTS if c in table]).merge(sums, on=["role", "weights"], how="left")


def serial(calls: list) -> list:
    """The default executor: each call (a `functools.partial` of `run_train`/`run_eval`), in order."""
    return [call() for call in calls]


def _run_children(config: SearchConfig, children: Children, strategy, ctx: ChildContext, executor) -> None:
    """Base model once, then round after round what the strategy asks for, until it asks for nothing.
    Each round's units are independent: an executor may run them at once, in other processes."""
    done: dict[str, dict] = {}
    name = config.name or config.strategy

    def collect(results) -> None:
        for row, samples in results:
            children.record_reused(row)
            done[row["key"]] = children.add(row, samples)
            print(f"    {name} [{len(done)} done] {child_line(row, children.names)}", flush=True)

    local = executor is None  # in this process: share the open Children (and its tracker)
    # in this process, each child's line as soon as it finishes; on Ray, when its round does
    run = (lambda calls: [collect(_as_list(call())) for call in calls]) if local else executor
    extra = {"children": children} if local else {}
    if config.evaluate_base:
        out = run([functools.partial(run_eval, ctx, [base_unit(config.train.seed)], **extra)])
        if not local:
            collect(out[0])
    rounds = 0
    while True:
        units = strategy.next_units(done)
        if not units:
            return
        if any(u.key in done for u in units):
            raise MoalignError(f"strategy {config.strategy!r} asked again for {next(u.key for u in units if u.key in done)}")
        rounds += 1
        kinds = {}
        for unit in units:
            kind = "pools" if isinstance(unit, PoolUnit) else ("evaluations" if isinstance(unit, EvalUnit) else "trainings")
            kinds[kind] = kinds.get(kind, 0) + 1
        print(f"    {name} round {rounds}: {', '.join(f'{n} {k}' for k, n in kinds.items())}", flush=True)
        groups: dict[str, list[EvalUnit]] = {}
        calls = []
        for unit in units:
            if isinstance(unit, EvalUnit):
                groups.setdefault(unit.group, []).append(unit)
            elif isinstance(unit, PoolUnit):
                calls.append(functools.partial(run_pool, ctx, unit, **extra))
            else:
                calls.append(functools.partial(run_train, ctx, unit, **extra))
        calls += [functools.partial(run_eval, ctx, group, **extra) for group in groups.values()]
        results = run(calls)
        if not local:
            for result in results:
                collect(_as_list(result))


def _as_list(result) -> list:
    """A call's (row, samples), or a group's list of them, as a list."""
    return result if isinstance(result, list) else [result]


def child_line(row: dict, names: list[str]) -> str:
    """One finished child for the terminal: its key, its front scores, its time, reused or not."""
    scores = ", ".join(f"{n} {row[n]:.4g}" for n in names if isinstance(row.get(n), (int, float)) and row[n] == row[n])
    spent = row.get("wall_time_s")
    time_text = f"{spent:.0f} s" if isinstance(spent, (int, float)) and spent == spent else ""
    parts = [p for p in (scores, time_text, "reused" if row.get("reused") else "") if p]
    return f"{row['key']}" + (f": {'; '.join(parts)}" if parts else "")


def run_search(config: SearchConfig, tracker=None, executor=None) -> SearchResult:
    """Search the front for `config`; see the module docstring.

    `executor(calls) -> results`, if given, runs a round's calls (picklable `functools.partial`s of
    `moalign.pareto.children.run_train` / `run_eval`, each needing only its arguments) and returns
    their results in order; by default they run here, one after the other.
    """
    started = time.perf_counter()
    check_shared_store(config)  # before any run starts: what a Ray cluster's nodes could not reach
    check_ray_address(config)
    executor = executor or make_executor(config)
    train_cfg = config.train
    reward = MultiObjectiveReward(train_cfg.reward)  # validates objectives, weights and constraints
    names, directions = reward.names, reward.directions
    check_reference_point(config.reference_point, names)
    W = weight_vectors(config.weights, names)
    strategy = get_strategy(config.strategy)(config, names, directions, W)  # checks its options against `train`
    _, eval_records = load_data(train_cfg)
    objectives = {**reward.all_objectives, **(build_objectives(train_cfg.eval_objectives) if train_cfg.eval_objectives else {})}
    check_objective_fields(objectives, eval_records)
    seeds = config.training_seeds
    # objectives declare (low, high) bounds where they have them; intervals are clipped to them
    bounds = {n: tuple(getattr(o, "bounds", (None, None))) for n, o in objectives.items()}

    tracker = tracker or make_tracker(train_cfg.tracking.enabled, train_cfg.tracking.experiment, train_cfg.tracking.tracking_uri)
    sid = search_id(config)
    parent_id = _parent(tracker, config, sid, {
        "strategy": config.strategy, **({"options": config.options} if config.options else {}),
        "objectives": names, "directions": directions,
        "eval_directions": {n: o.direction for n, o in objectives.items()},
        "bounds": {n: list(b) for n, b in bounds.items()}, "weights": W.round(4).tolist(),
        "reference_point": config.reference_point, "seeds": seeds, "n_bootstrap": config.n_bootstrap,
        "confidence": CONFIDENCE, "model": train_cfg.model.name, "algorithm": train_cfg.algorithm.name,
        "steps_per_run": train_cfg.optim.steps, "constraints": list(train_cfg.reward.constraints)})
    children = Children(tracker, parent_id, sid, train_cfg, names, objectives, eval_records, directions)
    uri = resolve_tracking_uri(train_cfg.tracking.tracking_uri) if train_cfg.tracking.enabled else None
    ctx = ChildContext(config, parent_id, sid, uri)
    try:
        _run_children(config, children, strategy, ctx, executor)
    except KeyboardInterrupt:
        tracker.end_run(parent_id, "KILLED")
        raise
    except BaseException:
        tracker.end_run(parent_id, "FAILED")
        raise

    runs = pd.DataFrame(strategy.front_rows(children.rows))
    scores = PolicyScores(runs, children.samples, list(objectives))
    base = scores.table.loc[scores.table["role"] == "base", names].to_numpy(dtype=float)
    ref = reference_point(scores.means(names), directions, config.reference_point, names,
                          base[0] if len(base) else None)
    # seed 0, as the report redraws; only feasible policies make the front
    front = scores.estimate(names, directions, ref, bounds, config.n_bootstrap, constraints=reward.constraints)
    table = _with_costs(front.table, runs)
    oracle = bool(getattr(strategy, "oracle", False))
    table["oracle"] = oracle & (table["role"] != "base")  # chosen with the references' help: a ceiling, no policy
    feasible = (table["feasible"] == "feasible").to_numpy()
    eu = expected_utility(scores.means(names)[feasible], directions, W) if feasible.any() else float("nan")
    nd = dict(zip(zip(table["role"], table["weights"]), table["non_dominated"]))
    for run_id, role, weights, reused in zip(runs["run_id"], runs["role"], runs["weights"], runs["reused"]):
        if not reused:  # a reused run's tag speaks of the front of the search that trained it
            tracker.set_tags(run_id, {"moalign.non_dominated": str(bool(nd[(role, weights)])).lower()})
    metrics = {"hypervolume": front.hypervolume, "expected_utility": eu,
               "n_nondominated": int(table["non_dominated"].sum()), "n_policies": len(table), "n_runs": len(runs),
               "n_infeasible": front.left_out["infeasible"], "n_undecided": front.left_out["undecided"],
               "n_prompts": front.n_prompts, "n_seeds": front.n_seeds, "total_train_steps": int(runs["train_steps"].sum()),
               "total_policy_time_s": float(runs["wall_time_s"].sum()), "wall_time_s": time.perf_counter() - started,
               **cost_totals(pd.DataFrame(children.rows))}
    if front.n_prompts:
        metrics.update(hypervolume_ci_low=front.hypervolume_ci[0], hypervolume_ci_high=front.hypervolume_ci[1])
    tracker.log_metrics(parent_id, [(0, metrics)])
    tracker.set_tags(parent_id, {"moalign.reference_point": json.dumps(ref.tolist()), "moalign.oracle": str(oracle).lower()})
    if parent_id:
        with tempfile.TemporaryDirectory() as tmp:
            table.to_csv(Path(tmp) / "front.csv", index=False)
            if tracker.read_text(parent_id, "front.json") is None:  # MLflow appends to a logged table: once
                tracker.log_table(parent_id, table, "front.json")  # the MLflow UI shows a logged table as a table
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

"""Which front method wins: grid, soups, adaptive, mixing and conditioned on the quickstart task at
an equal budget of training steps, each over several seeds, hypervolume with 95% intervals.

    python benchmarks/bench_fronts.py --steps 4 --max-new-tokens 24 --seeds 0 1 2 --eval-prompts 30 \\
        --out bench-fronts

The task is `pipelines/quickstart.yaml`'s `train` section (SmolLM2-135M-Instruct, chrF against
verbosity, toxicity as a constraint; `--pipeline` takes another file). Its eval-only objectives
(ROUGE-L, likelihood) are dropped: the front is chrF x verbosity, and likelihood would add a
second model's forward passes to every evaluation.

Equal budget rule. B = 5 x S training steps per seed, S = `--steps`: what the 5-point grid costs.
- grid: the 5 das-dennis weight vectors (0, 1/4, ..., 1), S steps each: B.
- soups: 2 endpoints (one-hot weights), B // 2 steps each (at most B), interpolated at the 3 inner
  weight vectors; the soups cost no training.
- mixing: the soups' own endpoint runs (same training config, so MLflow reuses them: no new
  training), decoded as a weighted product at the 3 inner weight vectors. Its cost is B as well:
  the parent's `cost/train_steps` counts reused runs, since its front rests on them.
- adaptive: `budget_steps` = B x seeds, `warm_steps` = S: the extremes (S steps, the grid's own
  runs, reused) then 3 midpoints where the front has its largest gap, each S steps warm-started
  from its nearest trained adapter: B.
- conditioned: ONE weight-conditioned run per seed of `--conditioned-fraction` x B steps (default
  0.5: half the soups' steps, which is what the issue's goal is stated at), evaluated at the 5 grid
  weight vectors. With 0.5 it gets less than the others, so a win for it is a win at half price.
Every method is scored by the same held-out prompts and the same base model; policies are
evaluated greedily, so they differ only by their weights.

Hypervolumes are the report's own (`moalign.reports.build.common_hypervolumes`): one reference
point, the nadir of every policy of every search, pushed out by 10% of the range, and each
search's bootstrap interval over evaluation prompts and seeds against it. Cost is the parent
run's `cost/train_steps` and `cost/wall_time_s` (sums over the runs its front rests on, reused
ones included; model loading excluded) beside `cost/new_train_steps` and the elapsed time of the
search in this process. Every search goes to the MLflow store at `--tracking-uri` (default: a
SQLite file in `--out`), so a killed benchmark re-run with the same arguments resumes each search
where it stopped; results are rewritten after each search, so a partial run leaves a table.

Writes `--out`/fronts.csv, fronts.md and hv_vs_cost.png (hypervolume with interval against train
steps and wall time), and prints the table. Methods may run in separate processes, each with its
own `--out` store (a method that reuses another's runs in the same one: mixing with soups,
adaptive with grid); `--combine URI...` then tabulates them together without training.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHODS = ("soups", "conditioned", "grid", "adaptive", "mixing")  # run order: mixing reuses soups, adaptive grid
GRID = {"method": "das-dennis", "n_partitions": 4}  # 5 weight vectors for two objectives
N_GRID = 5


def budget(steps: int) -> int:
    """Training steps per seed every method may spend: the 5-point grid's."""
    return N_GRID * steps


def search_configs(train, steps: int, seeds: list[int], methods=METHODS, conditioned_fraction: float = 0.5,
                   n_bootstrap: int = 1000) -> list:
    """One SearchConfig per method under the equal budget rule (module docstring), in run order."""
    from moalign.errors import ConfigError
    from moalign.pareto.config import SearchConfig

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"--methods: unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    if not 0 < conditioned_fraction <= 1:
        raise ConfigError(f"--conditioned-fraction must be in (0, 1], got {conditioned_fraction}")
    B = budget(steps)
    per_run = {"grid": steps, "adaptive": steps, "soups": B // 2, "mixing": B // 2,
               "conditioned": max(1, int(B * conditioned_fraction))}
    if per_run["soups"] < 1:
        raise ConfigError(f"--steps {steps}: the soups' endpoints would get no steps")
    options = {"adaptive": {"budget_steps": B * len(seeds), "warm_steps": steps}}
    out = []
    for method in [m for m in METHODS if m in methods]:
        cfg = copy.deepcopy(train)
        cfg.optim.steps = per_run[method]
        cfg.checkpoint_every = max(cfg.optim.steps, 1)  # resume granularity is not what is measured
        out.append(SearchConfig(train=cfg, strategy=method, options=options.get(method, {}), weights=dict(GRID),
                                name=method, seeds=list(seeds), n_bootstrap=n_bootstrap))
    return out


def load_train(pipeline: Path, max_new_tokens: int | None, eval_prompts: int | None, tracking_uri: str,
               experiment: str, output_dir: Path):
    """The pipeline's `train` section with the benchmark's sizes, tracked in one experiment."""
    from moalign.pipeline import load_pipeline

    config, _ = load_pipeline(pipeline)
    train = config.train
    train.eval_objectives = {}
    if max_new_tokens:
        train.sampling.max_new_tokens = max_new_tokens
    if eval_prompts:
        train.data.max_eval_prompts = eval_prompts
    train.tracking.enabled = True
    train.tracking.tracking_uri = tracking_uri
    train.tracking.experiment = experiment
    train.output_dir = str(output_dir)
    train.progress = False
    return train


def front_only(search) -> None:
    """Drop the conditioned strategy's training runs (helpers, not policies: the search's own
    `front_rows` leaves them out) from a search read back by `reports.collect`, which keeps them."""
    from moalign.pareto.front import reference_point
    from moalign.pareto.strategies.conditioned import TRAIN_ROLE
    from moalign.pareto.uncertainty import PolicyScores

    helpers = search.runs["role"] == TRAIN_ROLE
    if not helpers.any():
        return
    search.runs = search.runs[~helpers].reset_index(drop=True)
    evaluated = [c for c in search.directions if c in search.runs.columns]
    search.scores = PolicyScores(search.runs, search.run_samples, evaluated)
    dirs = [search.directions[o] for o in search.objectives]
    ref = reference_point(search.scores.means(search.objectives), dirs, "nadir")  # the table's, not the HV's
    search.policies = search.scores.estimate(search.objectives, dirs, ref, search.bounds, search.n_bootstrap).table


def summarise(searches, elapsed: dict) -> tuple:
    """(table, common hypervolumes, costs) of the loaded searches (`reports.collect.Search`)."""
    import pandas as pd

    from moalign.reports.build import common_hypervolumes
    from moalign.reports.labels import interval

    common, ref = common_hypervolumes(searches)
    rows, costs = [], {}
    for s in searches:
        hv, (low, high) = common[s.name]
        steps = s.metrics.get("cost/train_steps", float("nan"))
        wall = s.metrics.get("cost/wall_time_s", float("nan"))
        costs[s.name] = {"cost/train_steps": steps, "cost/wall_time_s": wall}
        rows.append({"method": s.name, "train steps": int(steps),
                     "new train steps": int(s.metrics.get("cost/new_train_steps", float("nan"))),
                     "wall time (s)": round(wall, 1), "elapsed here (s)": round(elapsed.get(s.name, float("nan")), 1),
                     "HV [95% CI]": interval(hv, low, high), "hv": hv, "hv_ci_low": low, "hv_ci_high": high,
                     "n policies": len(s.policies), "non-dominated": int(s.policies["non_dominated"].sum()),
                     "seeds": len(s.seeds), "eval prompts": s.n_prompts})
    return pd.DataFrame(rows), common, costs, ref


def paired_difference(a, b, ref) -> tuple[float, tuple[float, float]]:
    """HV(a) - HV(b) against `ref`, with a 95% interval from the SAME redraws of prompts and seeds
    for both (every search answered the same prompts, and `PolicyScores.bootstrap` draws its counts
    from one seeded generator), which is tighter than comparing two separate intervals."""
    import numpy as np

    from moalign.pareto.front import hypervolume
    from moalign.pareto.uncertainty import TAIL, prompt_means

    names = a.objectives
    dirs = [a.directions[n] for n in names]
    first = [prompt_means(next(t for t in s.run_samples.values() if t is not None), names).index for s in (a, b)]
    if not first[0].equals(first[1]) or a.seeds != b.seeds or a.n_bootstrap != b.n_bootstrap:
        return float("nan"), (float("nan"), float("nan"))
    hv = [hypervolume(s.scores.means(names), dirs, ref) for s in (a, b)]
    cols = [[s.scores.objectives.index(n) for n in names] for s in (a, b)]
    draws = [[hypervolume(m[:, c], dirs, ref) for m in s.scores.bootstrap(s.n_bootstrap, 0)]
             for s, c in zip((a, b), cols)]
    diff = np.array(draws[0]) - np.array(draws[1])
    return hv[0] - hv[1], tuple(float(v) for v in np.nanpercentile(diff, [TAIL, 100 - TAIL]))


def goals(table, searches, ref) -> list[str]:
    """The issue's two goals, judged on the means and on the paired interval of the difference."""
    by = table.set_index("method")
    found = {s.name: s for s in searches}
    lines = []

    def compare(a, b, what):
        A, Bm = by.loc[a], by.loc[b]
        diff, (low, high) = paired_difference(found[a], found[b], ref)
        verdict = "met" if A["hv"] >= Bm["hv"] else "not met"
        shown = ("the difference is shown (its interval excludes 0)" if low > 0 or high < 0
                 else "its interval includes 0, so the data do not tell them apart")
        return (f"{what}: {verdict} on the means ({a} {A['HV [95% CI]']} at {A['train steps']} steps vs {b} "
                f"{Bm['HV [95% CI]']} at {Bm['train steps']} steps); paired difference {a} - {b} = "
                f"{diff:.4g} [{low:.4g}, {high:.4g}]: {shown}")

    if {"conditioned", "soups"} <= set(by.index):
        half = by.loc["conditioned", "train steps"] <= by.loc["soups", "train steps"] / 2
        lines.append(compare("conditioned", "soups", "conditioned reaches the soups' hypervolume"
                             + ("" if half else " (NOTE: not at half the soups' steps)")))
    if {"adaptive", "grid"} <= set(by.index):
        lines.append(compare("adaptive", "grid", "adaptive beats a grid of equal cost"))
    return lines


def write(table, common, costs, out: Path, command: str, goal_lines: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moalign.reports.plots import cost_figure

    shown = table[["method", "train steps", "new train steps", "wall time (s)", "elapsed here (s)", "HV [95% CI]",
                   "n policies", "non-dominated", "seeds", "eval prompts"]]
    table.to_csv(out / "fronts.csv", index=False)
    md = [f"    {command}", "", shown.to_markdown(index=False), "", *(f"- {g}" for g in goal_lines), ""]
    (out / "fronts.md").write_text("\n".join(md))
    fig = cost_figure(common, costs, {"cost/train_steps": "training steps (all runs, all seeds)",
                                      "cost/wall_time_s": "wall time of all runs (s)"})
    fig.savefig(out / "hv_vs_cost.png", dpi=110)
    plt.close(fig)
    print(shown.to_string(index=False), *goal_lines, sep="\n", flush=True)


def run(args, command: str) -> "pd.DataFrame":
    from moalign.pareto.search import run_search, serial
    from moalign.reports.collect import load_searches

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
    train = load_train(Path(args.pipeline), args.max_new_tokens, args.eval_prompts, uri, args.experiment, out / "runs")
    configs = search_configs(train, args.steps, args.seeds, args.methods, args.conditioned_fraction, args.n_bootstrap)
    parents, elapsed, table = [], {}, None
    for config in configs:
        print(f"[{time.strftime('%H:%M:%S')}] {config.name}: {config.train.optim.steps} steps a run, "
              f"seeds {config.seeds}", flush=True)
        started = time.perf_counter()
        # `serial` rather than the default in-process path: each child opens its own view of the
        # search, so the orchestrator records reused runs on the parent (moalign.reused), which
        # load_searches needs to see the runs mixing and adaptive reuse.
        result = run_search(config, executor=serial)
        elapsed[config.name] = time.perf_counter() - started
        parents.append(result.parent_run_id)
        searches = load_searches(args.experiment, parents, uri)
        for s in searches:
            front_only(s)
        if len(searches[-1].runs) != len(result.runs):  # e.g. reused runs the parent does not name
            print(f"warning: {config.name}: MLflow gives {len(searches[-1].runs)} runs, the search had "
                  f"{len(result.runs)}", flush=True)
        table, common, costs, ref = summarise(searches, elapsed)
        write(table, common, costs, out, command, goals(table, searches, ref))
    return table


def combine(uris: list[str], experiment: str, out: Path, command: str):
    """The table of searches already run, from one or more MLflow stores (e.g. methods run by two
    processes at once, each in its own store): the latest finished search of each method."""
    from moalign.errors import MoalignError
    from moalign.reports.collect import load_searches

    found = {}
    for uri in uris:
        try:
            loaded = load_searches(experiment, None, uri)  # oldest first: a later one replaces an earlier
        except MoalignError as exc:  # a store whose searches are still running: the others still count
            print(f"{uri}: {exc}", flush=True)
            continue
        for s in loaded:
            found[s.name] = s
    searches = [found[m] for m in METHODS if m in found]
    for s in searches:
        front_only(s)
    out.mkdir(parents=True, exist_ok=True)
    table, common, costs, ref = summarise(searches, {})
    write(table, common, costs, out, command, goals(table, searches, ref))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default=str(REPO / "pipelines" / "quickstart.yaml"),
                        help="the pipeline whose train section is the task")
    parser.add_argument("--steps", type=int, default=4, help="S: steps of one grid run; budget B = 5 x S per seed")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-prompts", type=int, default=30, help="held-out prompts every policy answers")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--conditioned-fraction", type=float, default=0.5,
                        help="the conditioned run's steps as a share of B (0.5: half the soups' steps)")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite in --out)")
    parser.add_argument("--experiment", default="bench-fronts")
    parser.add_argument("--out", default="bench-fronts")
    parser.add_argument("--combine", nargs="+", metavar="URI",
                        help="train nothing: tabulate the finished searches of --experiment in these stores")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    command = "python benchmarks/bench_fronts.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.combine:
        combine(args.combine, args.experiment, Path(args.out), command)
    else:
        run(args, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())

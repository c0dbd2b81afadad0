"""How sure a front is: per-policy means over seeds with 95% intervals, and an interval for the
hypervolume.

A front is measured on a finite set of evaluation prompts after training with a few seeds; another
draw of either moves every point. The bootstrap redraws both, prompts with replacement (paired:
every policy answered the same prompts, so one draw serves them all) and, where there are
several, seeds, then recomputes each policy's mean and the hypervolume against the fixed reference
point; the 2.5th and 97.5th percentiles are the interval. `scipy.stats.bootstrap` resamples one
axis; two are resampled here, as multinomial counts, so that all resamples are one tensor product.
With three seeds the seed part of an interval is rough: a bootstrap cannot see more seed-to-seed
spread than three seeds show.

Constraints are judged the same way (`feasibility`): a policy is `feasible` when the interval of
every constrained objective's mean lies on the allowed side of its threshold, `infeasible` when
one lies wholly on the wrong side, `undecided` otherwise. Only feasible policies can be
non-dominated and count in the hypervolume: a policy that breaks a constraint is no trade-off
anyone asked for, however good its other scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from moalign.errors import MoalignError
from moalign.pareto.front import hypervolume, non_dominated

CONFIDENCE = 0.95
TAIL = 100 * (1 - CONFIDENCE) / 2  # percent in each tail of a percentile interval
SUMMED = ("train_steps", "wall_time_s")  # a policy's cost is that of all its seeds


def prompt_means(samples: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """One row a prompt, in first-seen order: with `eval_num_generations` > 1 several completions
    answer one prompt, and the prompt, not the completion, is what the bootstrap redraws. NaN
    (a dropped score) is left out of its prompt's mean."""
    missing = [o for o in objectives if o not in samples.columns]
    if missing:
        raise MoalignError(f"eval samples have no column {missing[0]!r} (columns: {', '.join(samples.columns)})")
    return samples.groupby("prompt", sort=False)[list(objectives)].mean()


FEASIBLE, INFEASIBLE, UNDECIDED = "feasible", "infeasible", "undecided"


def feasibility(table: pd.DataFrame, constraints: Sequence) -> list[str]:
    """Each policy's verdict on `constraints` (`moalign.scalarization.Constraint`s) from the 95%
    intervals of its constrained objectives' means (`<objective>_ci_low/_ci_high`; the mean alone
    where there is no interval, when per-prompt scores are missing)."""
    verdicts = []
    for _, row in table.iterrows():
        verdict = FEASIBLE
        for c in constraints:
            mean = row.get(c.objective, np.nan)
            low, high = row.get(f"{c.objective}_ci_low", np.nan), row.get(f"{c.objective}_ci_high", np.nan)
            if not np.isfinite(low) or not np.isfinite(high):
                low = high = mean
            if not np.isfinite(mean):
                verdict = UNDECIDED if verdict == FEASIBLE else verdict
                continue
            worst, best = (high, low) if c.op == "<=" else (low, high)
            if c.gap(best) > 0:  # even the interval's best end breaks it
                verdict = INFEASIBLE
            elif c.gap(worst) > 0 and verdict == FEASIBLE:
                verdict = UNDECIDED
        verdicts.append(verdict)
    return verdicts


@dataclass
class FrontEstimate:
    # one row a policy: <objective>, <objective>_ci_low, <objective>_ci_high, ..., feasible, non_dominated
    table: pd.DataFrame
    hypervolume: float  # of the feasible policies' means
    hypervolume_ci: tuple[float, float]  # NaN where per-prompt scores are missing
    n_prompts: int  # 0 where per-prompt scores are missing
    n_seeds: int
    left_out: dict  # {"infeasible": k, "undecided": j}: policies kept off the front by the constraints


class PolicyScores:
    """The child runs of a search grouped into policies (role, weights), with their per-prompt
    scores aligned as X[policy, seed, prompt, objective].

    `runs` has one row a run: key (unique in the search), role, weights, seed, run_id and the
    run's mean per objective; `samples` maps keys to the runs' eval samples tables. Without every
    run's samples there are means (from `runs`) but no intervals.
    """

    def __init__(self, runs: pd.DataFrame, samples: Mapping[str, pd.DataFrame | None], objectives: Sequence[str]):
        self.objectives = list(objectives)
        groups = list(runs.groupby(["role", "weights"], sort=False))
        # the seeds are those of the most-trained policy (a trained one before the base model, which
        # is evaluated with train.seed); a policy with one run (the base model) stands for all of them
        widest = max((r for _, r in groups), key=lambda r: (len(r), bool((r["role"] != "base").any())))
        self.seeds = sorted(int(s) for s in widest["seed"])
        for (role, weights), runs_p in groups:
            if len(runs_p) > 1 and sorted(int(s) for s in runs_p["seed"]) != self.seeds:
                raise MoalignError(f"policy {role} {weights}: runs for seeds {sorted(runs_p['seed'].tolist())}, "
                                   f"expected one run or one for each of {self.seeds}")
        self.table = pd.DataFrame([self._describe(key, runs_p) for key, runs_p in groups])
        self.X = self._aligned(groups, samples)
        if self.X is not None:  # the same means as the runs' own, unless a prompt appears twice in the data
            with np.errstate(invalid="ignore"):
                self.table[self.objectives] = np.nansum(self.X, axis=(1, 2)) / (~np.isnan(self.X)).sum(axis=(1, 2))
        self.n_prompts = 0 if self.X is None else self.X.shape[2]

    def _describe(self, key, runs_p: pd.DataFrame) -> dict:
        row = {"role": key[0], "weights": key[1]}
        row.update({c: runs_p[c].iloc[0] for c in runs_p.columns if c.startswith("w_")})
        row.update({o: float(runs_p[o].mean()) for o in self.objectives})
        row.update({"n_seeds": len(runs_p), "seeds": ",".join(str(int(s)) for s in runs_p["seed"]),
                    "run_ids": ",".join(r for r in runs_p["run_id"] if isinstance(r, str))})  # none untracked
        row.update({c: runs_p[c].sum().item() for c in SUMMED if c in runs_p})
        return row

    def _aligned(self, groups, samples) -> np.ndarray | None:
        per_run = {}
        for _, runs_p in groups:
            for key in runs_p["key"]:
                table = samples.get(key)
                if table is None:
                    return None
                per_run[key] = prompt_means(table, self.objectives)
        first, prompts = next(iter(per_run.items()))
        prompts = prompts.index
        for key, scores in per_run.items():
            if not scores.index.equals(prompts):  # paired resampling needs one evaluation set
                raise MoalignError(f"run {key} was evaluated on other prompts than run {first}")
        X = np.empty((len(groups), len(self.seeds), len(prompts), len(self.objectives)))
        for p, (_, runs_p) in enumerate(groups):
            by_seed = dict(zip(runs_p["seed"].astype(int), runs_p["key"]))
            for k, seed in enumerate(self.seeds):
                # a single run (the base model) stands for every seed, so redrawing seeds leaves it be
                X[p, k] = per_run[by_seed.get(seed, runs_p["key"].iloc[0])].to_numpy(dtype=float)
        return X

    def means(self, objectives: Sequence[str] | None = None) -> np.ndarray:
        return self.table[list(objectives or self.objectives)].to_numpy(dtype=float)

    def bootstrap(self, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
        """[n_boot, policy, objective] means over redrawn prompts and seeds."""
        P, K, N, M = self.X.shape
        rng = np.random.default_rng(seed)
        prompts = rng.multinomial(N, np.full(N, 1 / N), size=n_boot)
        seeds = rng.multinomial(K, np.full(K, 1 / K), size=n_boot)
        counts = (seeds[:, :, None] * prompts[:, None, :]).reshape(n_boot, K * N)
        valid = ~np.isnan(self.X).reshape(P, K * N, M)
        total = np.tensordot(counts, np.nan_to_num(self.X).reshape(P, K * N, M), axes=(1, 1))
        with np.errstate(invalid="ignore", divide="ignore"):  # a redraw may hold only dropped scores: NaN
            return total / np.tensordot(counts, valid, axes=(1, 1))

    def hypervolume(self, front: Sequence[str], directions: Sequence[str], ref_point: np.ndarray,
                    n_boot: int = 1000, seed: int = 0, include: np.ndarray | None = None) -> tuple[float, tuple[float, float]]:
        """Hypervolume of the policies' means on `front` against `ref_point`, and its percentile
        interval (NaN without per-prompt scores); `include`: a mask of the policies that count
        (the feasible ones), default all."""
        keep = np.ones(len(self.table), dtype=bool) if include is None else np.asarray(include, dtype=bool)
        point = hypervolume(self.means(front)[keep], directions, ref_point)
        if self.X is None:
            return point, (float("nan"), float("nan"))
        cols = [self.objectives.index(o) for o in front]
        redrawn = [hypervolume(b[keep][:, cols], directions, ref_point) for b in self.bootstrap(n_boot, seed)]
        return point, tuple(float(v) for v in np.nanpercentile(redrawn, [TAIL, 100 - TAIL]))

    def estimate(self, front: Sequence[str], directions: Sequence[str], ref_point: np.ndarray,
                 bounds: Mapping[str, tuple] | None = None, n_boot: int = 1000, seed: int = 0,
                 constraints: Sequence = ()) -> FrontEstimate:
        """Means with their intervals (clipped to each objective's bounds), each policy's
        feasibility under `constraints`, the non-dominated set of the feasible policies' means, and
        the hypervolume of the `front` objectives over them, with its interval."""
        table = self.table.copy()
        low = high = np.full((len(table), len(self.objectives)), np.nan)
        if self.X is not None:
            low, high = np.nanpercentile(self.bootstrap(n_boot, seed), [TAIL, 100 - TAIL], axis=0)
        for m, o in enumerate(self.objectives):
            # means of in-bounds scores stay in bounds; the clip catches rounding and scores an
            # objective let through outside its declared range
            lower, upper = (bounds or {}).get(o, (None, None))
            table[f"{o}_ci_low"] = pd.Series(low[:, m]).clip(lower, upper).to_numpy()
            table[f"{o}_ci_high"] = pd.Series(high[:, m]).clip(lower, upper).to_numpy()
        table["feasible"] = feasibility(table, [c for c in constraints if c.objective in self.objectives])
        keep = (table["feasible"] == FEASIBLE).to_numpy()
        nd = np.zeros(len(table), dtype=bool)
        nd[keep] = non_dominated(self.means(front)[keep], directions)
        table["non_dominated"] = nd
        hv, hv_ci = self.hypervolume(front, directions, ref_point, n_boot, seed, keep)
        # each mean beside its interval, in the objectives' order
        cols = [c for c in table.columns if not c.endswith(("_ci_low", "_ci_high"))]
        at = cols.index(self.objectives[0])
        ordered = cols[:at] + [c for o in self.objectives for c in (o, f"{o}_ci_low", f"{o}_ci_high")] + \
            [c for c in cols[at:] if c not in self.objectives]
        left_out = {v: int((table["feasible"] == v).sum()) for v in (INFEASIBLE, UNDECIDED)}
        return FrontEstimate(table[ordered], hv, hv_ci, self.n_prompts, len(self.seeds), left_out)

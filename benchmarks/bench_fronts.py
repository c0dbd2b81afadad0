"""Which method buys the most front per unit of compute, and does any buy quality? Tabulates the
searches of a benchmark task run with `moalign run` (benchmarks/tasks/*.yaml):

    moalign run benchmarks/tasks/summaries.yaml          # several CPU-hours; resumes after a kill
    python benchmarks/bench_fronts.py --experiment bench-summaries --quality chrf --out docs/bench_fronts/summaries

Two tables, from MLflow alone (a rerun tabulates again without training):

1. Fronts and cost: each search's hypervolume over its feasible policies (one common reference
   point; 95% bootstrap interval over prompts and seeds), how many policies the constraints kept
   off, and what the front cost: tokens generated (pools, RL sampling, evaluation), tokens trained
   (forward and backward), all forward tokens, and wall time, summed over every run the front rests
   on (`cost/...` on its parent run). An oracle search (best-of-n choosing with the references'
   help) is a ceiling: it is listed apart and compared with nothing. Plotted against each cost of
   one seed (the hypervolume is a mean over seeds, the costs sums), as is "HV per M tokens a seed".
2. Quality against the base model, per policy: the paired difference of the quality objective
   (`--quality`) with its 95% interval over the same redrawn prompts and seeds, and the three
   checks a gain must survive: at matched length (the intercept of the per-prompt difference
   regressed on the length difference: the gain at equal length), under scorers the training never
   saw (`--unseen`, each interval above 0), and with copying no higher than the base model's
   (`--copying`: its mean difference at most 0). The `holds` column says which hold.

Which policy answers the question "does any method's front hold a feasible policy that beats the
base model?" is named before looking (`--primary`, default the weight vector that puts everything
on the quality objective): with 5 policies a front and several fronts, some interval among them
clears 0 by chance, so the others are reported, not counted.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

COSTS = {"cost/generated_tokens": "tokens generated", "cost/trained_tokens": "tokens trained (fwd+bwd)",
         "cost/wall_time_s": "wall time (s)"}


def _draws(X: np.ndarray, n_boot: int, seed: int = 0):
    """Multinomial counts over (seed, prompt) cells, one row a redraw: the same draws for every policy."""
    _, K, N, _ = X.shape
    rng = np.random.default_rng(seed)
    prompts = rng.multinomial(N, np.full(N, 1 / N), size=n_boot)
    seeds = rng.multinomial(K, np.full(K, 1 / K), size=n_boot)
    return seeds, prompts


def paired(search, names: list[str], base: int, n_boot: int = 1000) -> dict:
    """{policy row: {objective: (difference, low, high)}} of each policy's mean minus the base's, over the
    same redrawn prompts and seeds (`PolicyScores.X`: policy x seed x prompt x objective)."""
    X = search.scores.X
    cols = [search.scores.objectives.index(n) for n in names]
    seeds, prompts = _draws(X, n_boot)
    weights = (seeds[:, :, None] * prompts[:, None, :]).astype(float)  # [B, K, N]
    out = {}
    for p in range(X.shape[0]):
        diff = X[p][..., cols] - X[base][..., cols]  # [K, N, M] (the base stands for every seed)
        point = np.nanmean(diff, axis=(0, 1))
        with np.errstate(invalid="ignore"):
            boot = np.einsum("bkn,knm->bm", weights, np.nan_to_num(diff)) / np.einsum("bkn,knm->bm", weights, ~np.isnan(diff))
        low, high = np.nanpercentile(boot, [2.5, 97.5], axis=0)
        out[p] = {n: (float(point[j]), float(low[j]), float(high[j])) for j, n in enumerate(names)}
    return out


def length_adjusted(search, quality: str, length: str, base: int, n_boot: int = 1000) -> dict:
    """{policy row: (gain at equal length, low, high)}: per prompt, the policy's quality difference to the
    base regressed on its length difference; the intercept is the difference a policy of the base's
    length would show (chrF rises with length, so a longer policy's raw gain is partly length)."""
    X = search.scores.X
    q, l = (search.scores.objectives.index(c) for c in (quality, length))
    _, prompts = _draws(X, n_boot)
    out = {}
    for p in range(X.shape[0]):
        dq = np.nanmean(X[p][..., q], 0) - X[base][0, :, q]
        dl = np.nanmean(X[p][..., l], 0) - X[base][0, :, l]
        ok = np.isfinite(dq) & np.isfinite(dl)
        dq, dl, counts = dq[ok], dl[ok], prompts[:, ok].astype(float)

        def intercept(w):
            if np.ptp(dl) == 0:
                return float(np.average(dq, weights=w))
            A = np.column_stack([np.ones_like(dl), dl]) * np.sqrt(w)[:, None]
            return float(np.linalg.lstsq(A, dq * np.sqrt(w), rcond=None)[0][0])

        point = intercept(np.ones(len(dq))) if len(dq) else float("nan")
        boot = [intercept(c) for c in counts if (c > 0).sum() > 2]  # a line needs three distinct prompts
        out[p] = (point, *(np.percentile(boot, [2.5, 97.5]) if boot else (float("nan"), float("nan"))))
    return out


def _fmt(d: float, low: float, high: float, digits: int = 2) -> str:
    mark = "+" if low > 0 else ("-" if high < 0 else "")
    return f"{d:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]{mark}"


def quality_table(searches, quality: str, length: str, copying: str | None, unseen: list[str],
                  primary: str | None, n_boot: int) -> pd.DataFrame:
    """One row a policy of every search: its paired differences to the base model and the verdict."""
    rows = []
    for s in searches:
        pol = s.policies.reset_index(drop=True)
        base = pol.index[pol["role"] == "base"]
        if not len(base) or s.scores.X is None:
            continue
        base = int(base[0])
        names = [c for c in [quality, length, copying, *unseen] if c and c in s.scores.objectives]
        diffs = paired(s, names, base, n_boot)
        adjusted = length_adjusted(s, quality, length, base, n_boot) if length in s.scores.objectives else {}
        quality_name = s.objectives[0] if primary is None else primary
        for p, row in pol.iterrows():
            if row["role"] == "base":
                continue
            d = diffs[p]
            gain = d[quality][1] > 0
            checks = {"gain": gain,
                      "at matched length": bool(adjusted) and adjusted[p][1] > 0,
                      "unseen scorers": all(d[u][1] > 0 for u in unseen if u in d),
                      "no more copying": copying is None or copying not in d or d[copying][0] <= 0}
            held = [k for k, v in checks.items() if v]
            rows.append({
                "search": s.name + (" (oracle)" if s.oracle else ""), "policy": f"{row['role']} {row['weights']}",
                "feasible": row.get("feasible", "feasible"),
                "primary": bool(row["weights"]) and _is_primary(row, s.objectives, quality_name),
                f"{quality} vs base": _fmt(*d[quality]),
                f"{quality} at matched length": _fmt(*adjusted[p]) if adjusted else "n/a",
                **{f"{u} vs base": _fmt(*d[u], digits=3) for u in unseen if u in d},
                f"{length} vs base": _fmt(*d[length], digits=1) if length in d else "n/a",
                **({f"{copying} vs base": _fmt(*d[copying])} if copying in d else {}),
                "holds": ", ".join(held) if gain else "no gain",
                "beats base": gain and all(checks.values()) and row.get("feasible", "feasible") == "feasible",
            })
    return pd.DataFrame(rows)


def _is_primary(row, objectives: list[str], quality: str) -> bool:
    """The policy named before looking: all weight on the quality objective."""
    if quality not in objectives:
        return False
    return all(abs(row[f"w_{o}"] - (1.0 if o == quality else 0.0)) < 1e-9 for o in objectives)


def fronts_table(searches) -> tuple[pd.DataFrame, dict]:
    from moalign.reports.build import common_hypervolumes
    from moalign.reports.labels import interval

    common, _ = common_hypervolumes(searches)
    rows = []
    for s in searches:
        hv, (low, high) = common[s.name]
        m = s.metrics
        spend = {label: m.get(key, np.nan) for key, label in COSTS.items()}
        words = s.policies.loc[s.feasible & (s.policies["role"] != "base")]
        tokens = spend["tokens generated"] + spend["tokens trained (fwd+bwd)"]
        rows.append({"search": s.name, "strategy": s.strategy + (" (oracle ceiling)" if s.oracle else ""),
                     "HV [95% CI]": interval(hv, low, high), "hv": hv, "hv_low": low, "hv_high": high,
                     "policies": len(s.policies), "feasible": int(s.feasible.sum()),
                     "non-dominated": int(s.policies["non_dominated"].sum()), "seeds": len(s.seeds),
                     "eval prompts": s.n_prompts, **spend,
                     # the hypervolume is a mean over seeds and the cost a sum over them: per seed, so
                     # that searches run with different numbers of seeds compare
                     "HV per M tokens a seed": hv / (tokens / len(s.seeds) / 1e6) if tokens > 0 else np.nan,
                     "feasible non-base policies": len(words)})
    return pd.DataFrame(rows), common


def span_lines(searches, length: str) -> list[str]:
    """Does each front still span length? The extremes of its feasible trained policies' mean length,
    and whether their intervals are apart."""
    lines = []
    for s in searches:
        pol = s.policies[s.feasible & (s.policies["role"] != "base")]
        if length not in pol or len(pol) < 2:
            lines.append(f"{s.name}: fewer than 2 feasible policies, no span")
            continue
        lo, hi = pol.loc[pol[length].idxmin()], pol.loc[pol[length].idxmax()]
        apart = lo[f"{length}_ci_high"] < hi[f"{length}_ci_low"]
        lines.append(f"{s.name}: {length} {lo[length]:.1f} [{lo[f'{length}_ci_low']:.1f}, {lo[f'{length}_ci_high']:.1f}] to "
                     f"{hi[length]:.1f} [{hi[f'{length}_ci_low']:.1f}, {hi[f'{length}_ci_high']:.1f}]: "
                     + ("spans length (extremes' intervals apart)" if apart else "extremes' intervals overlap"))
    return lines


def figure(table: pd.DataFrame, common: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COSTS), figsize=(5 * len(COSTS), 4))
    for ax, label in zip(axes, COSTS.values()):
        for i, row in table.iterrows():
            x = row[label] / row["seeds"]  # the hypervolume is a mean over seeds: the cost of one seed
            yerr = [[row["hv"] - row["hv_low"]], [row["hv_high"] - row["hv"]]] if np.isfinite(row["hv_low"]) else None
            ax.errorbar([x], [row["hv"]], yerr=yerr, fmt="o" if "oracle" not in row["strategy"] else "*", capsize=3,
                        color=f"C{i}", label=row["search"] + (" (oracle)" if "oracle" in row["strategy"] else ""))
        xs = table[label].astype(float) / table["seeds"]
        if (xs > 0).all():
            ax.set_xscale("log")
            ax.set_xlabel(label + " a seed (log)")
        else:  # a method that spent none of this (best-of-n trains nothing): log scale but for a linear stretch at 0
            ax.set_xscale("symlog", linthresh=float(xs[xs > 0].min()) if (xs > 0).any() else 1.0)
            ax.set_xlabel(label + " a seed (symmetric log: 0 is none spent)")
        ax.set_ylabel("hypervolume (feasible policies)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Front per unit of compute: up and to the left is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load(experiment: str, uris: list[str]):
    """The latest finished search of each name in `experiment`, from one or more MLflow stores."""
    from moalign.reports.collect import load_searches

    found = {}
    for uri in uris:
        for s in load_searches(experiment, None, uri):  # oldest first: a later one replaces an earlier
            found[s.name] = s
    return list(found.values())


def main(argv=None) -> int:
    # MLflow draws a bar per artifact download; the CLI turns them off the same way
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="the task's MLflow experiment (its pipeline's `experiment`)")
    parser.add_argument("--tracking-uri", nargs="+", default=[None], help="MLflow store(s); default $MLFLOW_TRACKING_URI")
    parser.add_argument("--quality", required=True, help="the quality objective a gain is measured on")
    parser.add_argument("--length", default="verbosity", help="the length objective (matched-length check, span)")
    parser.add_argument("--copying", default="density", help="the copying objective (no more than the base's)")
    parser.add_argument("--unseen", nargs="*", default=["rouge_l", "reference_similarity"],
                        help="scorers the training never saw, each must agree")
    parser.add_argument("--primary", default=None, help="the objective whose one-hot policy is the pre-named comparison "
                                                          "(default: --quality if it is a front objective)")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    searches = load(args.experiment, args.tracking_uri)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fronts, common = fronts_table(searches)
    quality = quality_table(searches, args.quality, args.length, args.copying, args.unseen, args.primary or args.quality,
                            args.n_bootstrap)
    spans = span_lines(searches, args.length)
    fronts.to_csv(out / "fronts.csv", index=False)
    quality.to_csv(out / "quality.csv", index=False)
    figure(fronts, common, out / "hv_vs_cost.png")
    shown = fronts.drop(columns=["hv", "hv_low", "hv_high"])
    command = "python benchmarks/bench_fronts.py " + " ".join(sys.argv[1:] if argv is None else argv)
    primary = quality[quality["primary"]] if len(quality) else quality
    verdict = [f"- {r['search']} {r['policy']}: {r[f'{args.quality} vs base']} -> "
               f"{'BEATS the base model' if r['beats base'] else 'does not beat the base model'} ({r['holds']})"
               for _, r in primary.iterrows()]
    md = [f"    {command}", "", "## Fronts and what they cost", "", shown.to_markdown(index=False, floatfmt=".4g"), "",
          "## Does the front still span length?", "", *(f"- {line}" for line in spans), "",
          f"## Quality against the base model ({args.quality}; + / - : the 95% interval excludes 0)", "",
          "Pre-named comparison (all weight on the quality objective):", "", *verdict, "",
          quality.drop(columns=["primary", "beats base"]).to_markdown(index=False) if len(quality) else "no policies", ""]
    (out / "fronts.md").write_text("\n".join(md))
    print("\n".join(md), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

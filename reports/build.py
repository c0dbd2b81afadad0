"""`moalign report`: a self-contained HTML report and a Markdown report of searches in MLflow."""
from __future__ import annotations

import base64
import html
import io
import itertools
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from moalign.data import atomic_path
from moalign.pareto.front import expected_utility, reference_point
from moalign.pareto.weights import weight_vectors
from moalign.reports import interactive, plots
from moalign.reports.collect import Search, load_searches
from moalign.reports.flags import FlagConfig, legend, policy_checks, with_flags
from moalign.reports.labels import interval, policy_label

N_SAMPLE_PROMPTS = 3
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
.moalign-run{font-size:13px;color:#444}.moalign-run input{font-family:monospace}
table{border-collapse:collapse;font-size:13px;margin:1em 0;display:block;max-width:100%;overflow-x:auto}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.text{text-align:left;max-width:380px;vertical-align:top}img{max-width:100%}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}.note{color:#666;font-size:13px}"""


COMMON_WEIGHTS = {"method": "das-dennis", "n_partitions": 10}  # expected utility's weight set in every report
# The parent run's cost metrics (totals over its policies' runs, reused ones included: the front
# cost them) that the hypervolume is drawn against, and their axis labels.
COSTS = {"cost/train_steps": "training steps (all runs)", "cost/wall_time_s": "wall-clock time of all runs (s)"}


def common_hypervolumes(searches: list[Search]) -> tuple[dict, np.ndarray]:
    """Hypervolume of each search's feasible policies, with its bootstrap interval, against one
    reference point (the nadir of all their policies' means), so that searches compare on the same scale."""
    names = searches[0].objectives
    dirs = [searches[0].directions[n] for n in names]
    union = np.vstack([s.scores.means(names) for s in searches])
    ref = reference_point(union, dirs, "nadir")
    return {s.name: s.scores.hypervolume(names, dirs, ref, s.n_bootstrap, include=s.feasible) for s in searches}, ref


def _common_utilities(searches: list[Search]) -> dict:
    """Expected utility of each search on one weight set and one min-max scale (all policies of
    all searches): each search's own uses its own weights and its own range, which do not compare."""
    names = searches[0].objectives
    dirs = [searches[0].directions[n] for n in names]
    union = np.vstack([s.scores.means(names) for s in searches])
    W = weight_vectors(COMMON_WEIGHTS, names)
    return {s.name: expected_utility(s.scores.means(names)[s.feasible], dirs, W, scale=union) if s.feasible.any()
            else float("nan") for s in searches}


def _evidence(s: Search) -> str:
    """What an interval of this search rests on."""
    if not s.n_prompts:
        return "no per-prompt scores were logged, so no intervals"
    seeds = f"{len(s.seeds)} training seed{'s' if len(s.seeds) > 1 else ''} ({', '.join(map(str, s.seeds))})"
    return f"{s.n_prompts} evaluation prompts x {seeds}"


def _overlaps(common: dict, oracles: set = frozenset()) -> list[str]:
    """One plain sentence per pair of searches: do their hypervolume intervals overlap? An oracle
    search (best-of-n choosing with the references) is a ceiling, compared with no method."""
    lines = [f"{name}: an oracle ceiling (best-of-n chose among samples by reference-based scores), "
             f"compared with no other search" for name in common if name in oracles]
    for (a, (hv_a, ci_a)), (b, (hv_b, ci_b)) in itertools.combinations(common.items(), 2):
        if a in oracles or b in oracles:
            continue
        pair = f"{a} {interval(hv_a, *ci_a)} vs {b} {interval(hv_b, *ci_b)}"
        if not all(np.isfinite(ci_a + ci_b)):
            lines.append(f"{pair}: no interval for one of them, no comparison possible")
        elif ci_a[0] <= ci_b[1] and ci_b[0] <= ci_a[1]:
            lines.append(f"{pair}: intervals overlap, no difference shown")
        else:
            lines.append(f"{pair}: intervals do not overlap, {a if hv_a > hv_b else b} has the larger hypervolume")
    return lines


HV_COLUMN = "hypervolume [95% CI] (common ref)"
EU_COLUMN = f"expected utility (common weights: das-dennis, {COMMON_WEIGHTS['n_partitions']} partitions; common scale)"


def _summary(searches: list[Search], common: dict, utilities: dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "search": s.name, "strategy": s.strategy + (" (oracle ceiling)" if s.oracle else ""), "policies": len(s.policies),
        "runs": len(s.runs), "seeds": len(s.seeds), "eval prompts": s.n_prompts,
        "left off (infeasible/undecided)": _left_off(s), "non-dominated": int(s.policies["non_dominated"].sum()),
        HV_COLUMN: interval(common[s.name][0], *common[s.name][1]), EU_COLUMN: utilities[s.name],
        "train steps": int(s.runs["train_steps"].sum()), "compute (s)": float(s.runs["wall_time_s"].sum()),
    } for s in searches])


def _left_off(s: Search) -> str:
    """How many policies the constraints kept off the front: infeasible/undecided."""
    if "feasible" not in s.policies:
        return "-"
    counts = s.policies["feasible"].value_counts()
    return f"{counts.get('infeasible', 0)}/{counts.get('undecided', 0)}"


def _policy_table(search: Search) -> pd.DataFrame:
    """Mean [95% CI] per objective, front objectives first."""
    pol = search.policies
    evaluated = [c for c in search.directions if c in pol.columns]
    table = pol[["role", "weights"]].copy()
    for o in evaluated:
        table[f"{o} [95% CI]"] = [interval(*v) for v in zip(pol[o], pol[f"{o}_ci_low"], pol[f"{o}_ci_high"])]
    for c in ("n_seeds", "feasible", "non_dominated", "oracle", "train_steps", "wall_time_s", "flags"):
        if c in pol:
            table[c] = pol[c]
    if "run_ids" in pol:  # the first 8 characters name a run in the MLflow UI's search box; the full ids are in front.csv
        table["runs"] = [", ".join(r[:8] for r in str(ids).split(",") if r) if isinstance(ids, str) else "" for ids in pol["run_ids"]]
    return table


def _costs(searches: list[Search]) -> tuple[dict, list[str]]:
    """Each search's cost metrics (those of COSTS its parent logged), and one note per search
    that logged none (it predates cost tracking)."""
    costs, notes = {}, []
    for s in searches:
        found = {k: float(s.metrics[k]) for k in COSTS if k in s.metrics}
        if found:
            costs[s.name] = found
        else:
            notes.append(f"{s.name}: its parent run has no {', '.join(COSTS)} (a search from before costs were "
                         f"logged), so it is not drawn against cost.")
    return costs, notes


def _samples_side_by_side(search: Search) -> pd.DataFrame | None:
    """Completions for the same prompts from the base model and the front's extremes."""
    pol = search.policies
    front = pol[pol["non_dominated"] & (pol["role"] != "base")]
    picks = {}
    base = pol[pol["role"] == "base"]
    if len(base):
        picks["base"] = "base"
    for name in search.objectives:
        if len(front):
            best = front[name].idxmax() if search.directions[name] == "maximize" else front[name].idxmin()
            row = pol.loc[best]
            picks[f"best {name}"] = policy_label(row["role"], row["weights"])
    columns = {}
    for title, label in picks.items():
        table = search.samples.get(label)
        if table is not None:
            columns[f"{title}: {label}"] = table.groupby("prompt", sort=False)["completion"].first()
    if not columns:
        return None
    frame = pd.DataFrame(columns).head(N_SAMPLE_PROMPTS)
    frame.index = [p if len(p) < 160 else p[:157] + "..." for p in frame.index]
    return frame.reset_index(names="prompt")


def _figures(searches: list[Search], common: dict, costs: dict) -> list[tuple[str, str, plt.Figure]]:
    """(section title, caption, figure) in report order."""
    first = searches[0]
    figs = [("Pareto fronts", "Each panel is a pair of objectives; points are policies' means over seeds, thin "
             "lines through them their 95% intervals; thick lines join each search's non-dominated policies on "
             "that pair; labels are reward weights; red rings mark policies with reward-hacking flags (letters "
             "as in each search's checks table).",
             plots.pareto_pairs_figure({s.name: s.policies for s in searches}, first.objectives, first.directions))]
    eval_cols = [c for c in first.directions if c in first.policies.columns]
    if len(eval_cols) >= 3:
        combined = pd.concat([s.policies.assign(role=s.name + " " + s.policies["role"]) for s in searches])
        figs.append(("All objectives", "Parallel coordinates over every evaluated objective (1 = best seen).",
                     plots.parallel_coordinates_figure(combined, eval_cols, first.directions)))
    figs.append(("Hypervolume per search", "Against one common reference point, so bars compare; black: 95% "
                 "bootstrap interval over evaluation prompts and seeds.",
                 plots.bar_figure({n: hv for n, (hv, _) in common.items()}, "hypervolume",
                                  {n: ci for n, (_, ci) in common.items()})))
    if costs:
        figs.append(("Hypervolume against cost", "Each search's hypervolume (common reference point; black: 95% "
                     "bootstrap interval) against its parent run's cost/train_steps and cost/wall_time_s, totals "
                     "over every run its front rests on (reused runs included). Up and to the left: a larger front "
                     "for less compute.",
                     plots.cost_figure(common, costs, COSTS)))
    for s in searches:
        if s.curves:
            metrics = ["reward/total"] + [f"rewards/{o}/mean" for o in s.objectives] + ["kl"]
            figs.append((f"Learning curves: {s.name}", "Per-step training metrics of each trained run.",
                         plots.curves_figure(s.curves, metrics)))
    return figs


def _check_section(checks: pd.DataFrame, cfg: FlagConfig) -> tuple[pd.DataFrame, list[str]]:
    """The checks as a table (policy, measured values, flags) and the legend under it."""
    table = checks.copy()
    table.insert(0, "policy", [policy_label(r, w) for r, w in zip(table.pop("role"), table.pop("weights"))])
    table["flags"] = table["flags"].replace("", "-")
    table = table.apply(lambda col: [("n/a" if np.isnan(v) else f"{v:.4g}") if isinstance(v, float) else v for v in col])
    flagged = int((checks["flags"] != "").sum())
    lines = [f"{flagged} of {len(checks)} policies flagged. A flag asks for a look at the samples; it is no verdict. "
             "n/a: the check lacks its data (no base model, no likelihood objective, no logged KL: soups and the "
             "base model are not trained)."] + legend(cfg)
    return table, lines


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


FRONT_CAPTION_HTML = ("Each panel is a pair of objectives; points are policies' means over seeds, bars their 95% "
                      "intervals; lines join each search's non-dominated policies on that pair; red rings mark "
                      "reward-hacking flags (letters as in each search's checks table). Hover a point for "
                      "its weights, scores and a sample completion; click it for its MLflow run id.")


def _front_div(searches: list[Search]) -> str:
    """The interactive fronts: the same figure as each search's `front.html`, all searches overlaid."""
    first = searches[0]
    fig = interactive.front_figure({s.name: (s.policies, s.samples) for s in searches}, first.objectives,
                                   first.directions)
    return interactive.figure_div(fig)


def _checks(searches: list[Search], cfg: FlagConfig) -> dict[str, pd.DataFrame]:
    """The reward-hacking checks of each search's policies; each search's `policies` gains the
    `flags` column that the tables and front figures mark."""
    checks = {}
    for s in searches:
        checks[s.name] = policy_checks(s.policies, s.runs, s.run_samples, s.kl, cfg)
        s.policies = with_flags(s.policies, checks[s.name])
    return checks


def build_report(experiment: str, out: str | Path, run_ids: list[str] | None = None,
                 tracking_uri: str | None = None, flags: FlagConfig | None = None) -> list[Path]:
    """Write `report.html` (self-contained: interactive fronts, plotly.js and images inlined) and
    `report.md` (+ PNGs) into `out`; returns their paths. `flags` sets the reward-hacking
    thresholds (moalign.reports.flags; default FlagConfig())."""
    flags = flags or FlagConfig()
    searches = load_searches(experiment, run_ids, tracking_uri)
    checks = _checks(searches, flags)
    common, ref = common_hypervolumes(searches)
    costs, cost_notes = _costs(searches)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    summary = _summary(searches, common, _common_utilities(searches))
    figures = [(title, caption, _png(fig)) for title, caption, fig in _figures(searches, common, costs)]
    notes = [f"Intervals are 95% percentile bootstrap intervals (prompts and seeds redrawn; hypervolume against "
             f"the common reference point); expected utility uses das-dennis weights "
             f"({COMMON_WEIGHTS['n_partitions']} partitions) and a min-max scale over every policy shown."] + \
        [f"{s.name}: {_evidence(s)}, {s.n_bootstrap} resamples." for s in searches] + cost_notes
    comparisons = _overlaps(common, {s.name for s in searches if s.oracle})

    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>moalign report: {html.escape(experiment)}</title>"
         f"<style>{CSS}</style>{interactive.plotly_script()}</head><body><h1>moalign report: {html.escape(experiment)}</h1>",
         f"<p class='note'>Generated {stamp} from MLflow. Front objectives: "
         f"{', '.join(f'{o} ({searches[0].directions[o]})' for o in searches[0].objectives)}. "
         f"Common reference point (minimisation space): {np.round(ref, 4).tolist()}.</p>",
         "<h2>Searches</h2>", summary.to_html(index=False, float_format=lambda v: f"{v:.4g}"),
         "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)]
    md = [f"# moalign report: {experiment}", "", f"Generated {stamp} from MLflow.", "", "## Searches", "",
          summary.to_markdown(index=False, floatfmt=".4g"), ""] + [f"{n}  " for n in notes] + [""]
    if comparisons:
        h += ["<h2>Do the searches differ?</h2><ul>", *(f"<li>{html.escape(c)}</li>" for c in comparisons), "</ul>"]
        md += ["## Do the searches differ?", "", *(f"- {c}" for c in comparisons), ""]
    for i, (title, caption, png) in enumerate(figures):
        if i == 0:  # the fronts: interactive in HTML, the PNG in Markdown
            h += [f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(FRONT_CAPTION_HTML)}</p>",
                  _front_div(searches)]
        else:
            data = base64.b64encode(png).decode()
            h += [f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(caption)}</p>",
                  f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"]
        name = f"figure_{i}.png"
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(png)
        md += [f"## {title}", "", caption, "", f"![{title}]({name})", ""]
    for s in searches:
        table = _policy_table(s)
        note = (f"Mean over seeds [95% interval]: {_evidence(s)}; intervals clipped to each objective's bounds. "
                "flags: reward-hacking checks, measured and explained in the table after this one.")
        h += [f"<h2>Policies: {html.escape(s.name)} ({s.strategy})</h2><p class='note'>{html.escape(note)}</p>",
              table.to_html(index=False, float_format=lambda v: f"{v:.4g}")]
        md += [f"## Policies: {s.name} ({s.strategy})", "", note, "",
               table.to_markdown(index=False, floatfmt=".4g"), ""]
        check_table, lines = _check_section(checks[s.name], flags)
        h += [f"<h2>Reward-hacking checks: {html.escape(s.name)}</h2>",
              check_table.to_html(index=False),
              "<p class='note'>" + "<br>".join(html.escape(x) for x in lines) + "</p>"]
        md += [f"## Reward-hacking checks: {s.name}", "", check_table.to_markdown(index=False),
               "", *(f"{x}  " for x in lines), ""]
        if s.preferences:  # weights a user's judgements implied (moalign prefer)
            prefs = pd.DataFrame([{**{k: v for k, v in p.items() if k not in s.objectives},
                                   **{f"weight {o} [95% CI]": interval(*p[o]) for o in s.objectives}} for p in s.preferences])
            note = ("Weights inferred from pairwise judgements of this front's answers (Bradley-Terry on the "
                    "normalised score differences, weights on the simplex, 95% bootstrap intervals over judgements); "
                    "held-out accuracy: the share of held-back decisive judgements the fit predicts.")
            h += [f"<h2>Weights from preferences: {html.escape(s.name)}</h2><p class='note'>{html.escape(note)}</p>",
                  prefs.to_html(index=False)]
            md += [f"## Weights from preferences: {s.name}", "", note, "", prefs.to_markdown(index=False), ""]
        samples = _samples_side_by_side(s)
        if samples is not None:
            h += [f"<h2>Sample generations: {html.escape(s.name)}</h2>",
                  samples.to_html(index=False, classes="samples").replace("<td>", "<td class='text'>")]
            md += [f"## Sample generations: {s.name}", "",
                   samples.replace({r"\|": "/", "\n": " "}, regex=True).to_markdown(index=False), ""]
    h.append("</body></html>")
    paths = []
    for name, text in (("report.html", "\n".join(h)), ("report.md", "\n".join(md))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        paths.append(out / name)
    return paths

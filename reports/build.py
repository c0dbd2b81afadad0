"""`moalign report`: a self-contained HTML report and a Markdown report of searches in MLflow."""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from moalign.data import atomic_path
from moalign.pareto.front import hypervolume, reference_point
from reports import plots
from reports.collect import Search, load_searches, policy_label

N_SAMPLE_PROMPTS = 3
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.text{text-align:left;max-width:380px;vertical-align:top}img{max-width:100%}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}.note{color:#666;font-size:13px}"""


def _common_hypervolumes(searches: list[Search]) -> tuple[dict, np.ndarray]:
    """Hypervolume of each search against one reference point (the nadir of all their policies),
    so that searches compare on the same scale."""
    names = searches[0].objectives
    dirs = [searches[0].directions[n] for n in names]
    union = np.vstack([s.policies[names].to_numpy(dtype=float) for s in searches])
    ref = reference_point(union, dirs, "nadir")
    return {s.name: hypervolume(s.policies[names].to_numpy(dtype=float), dirs, ref) for s in searches}, ref


def _summary(searches: list[Search], common: dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "search": s.name, "strategy": s.strategy, "policies": len(s.policies),
        "non-dominated": int(s.policies["non_dominated"].sum()), "hypervolume (own ref)": s.metrics.get("hypervolume"),
        "hypervolume (common ref)": common[s.name], "expected utility": s.metrics.get("expected_utility"),
        "train steps": int(s.policies["train_steps"].sum()), "compute (s)": float(s.policies["wall_time_s"].sum()),
    } for s in searches])


def _policy_table(search: Search) -> pd.DataFrame:
    metric_cols = [c for c in search.policies.columns
                   if c not in ("role", "weights", "run_id", "status", "non_dominated", "train_steps", "wall_time_s")]
    front_first = search.objectives + [c for c in metric_cols if c not in search.objectives]
    cols = ["role", "weights"] + front_first + ["non_dominated", "train_steps", "wall_time_s", "run_id"]
    return search.policies[cols]


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


def _figures(searches: list[Search], common: dict) -> list[tuple[str, str, plt.Figure]]:
    """(section title, caption, figure) in report order."""
    first = searches[0]
    figs = [("Pareto fronts", "Each panel is a pair of objectives; lines join each search's non-dominated "
             "policies on that pair; labels are reward weights.",
             plots.pareto_pairs_figure({s.name: s.policies for s in searches}, first.objectives, first.directions))]
    eval_cols = [c for c in first.directions if c in first.policies.columns]
    if len(eval_cols) >= 3:
        combined = pd.concat([s.policies.assign(role=s.name + " " + s.policies["role"]) for s in searches])
        figs.append(("All objectives", "Parallel coordinates over every evaluated objective (1 = best seen).",
                     plots.parallel_coordinates_figure(combined, eval_cols, first.directions)))
    figs.append(("Hypervolume per search", "Against one common reference point, so bars compare.",
                 plots.bar_figure(common, "hypervolume")))
    for s in searches:
        if s.curves:
            metrics = ["reward/total"] + [f"rewards/{o}/mean" for o in s.objectives] + ["kl"]
            figs.append((f"Learning curves: {s.name}", "Per-step training metrics of each trained run.",
                         plots.curves_figure(s.curves, metrics)))
    return figs


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def build_report(experiment: str, out: str | Path, run_ids: list[str] | None = None,
                 tracking_uri: str | None = None) -> list[Path]:
    """Write `report.html` (images inlined) and `report.md` (+ PNGs) into `out`; returns their paths."""
    searches = load_searches(experiment, run_ids, tracking_uri)
    common, ref = _common_hypervolumes(searches)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    summary = _summary(searches, common)
    figures = [(title, caption, _png(fig)) for title, caption, fig in _figures(searches, common)]

    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>moalign report: {html.escape(experiment)}</title>"
         f"<style>{CSS}</style></head><body><h1>moalign report: {html.escape(experiment)}</h1>",
         f"<p class='note'>Generated {stamp} from MLflow. Front objectives: "
         f"{', '.join(f'{o} ({searches[0].directions[o]})' for o in searches[0].objectives)}. "
         f"Common reference point (minimisation space): {np.round(ref, 4).tolist()}.</p>",
         "<h2>Searches</h2>", summary.to_html(index=False, float_format=lambda v: f"{v:.4g}")]
    md = [f"# moalign report: {experiment}", "", f"Generated {stamp} from MLflow.", "", "## Searches", "",
          summary.to_markdown(index=False, floatfmt=".4g"), ""]
    for i, (title, caption, png) in enumerate(figures):
        data = base64.b64encode(png).decode()
        h += [f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(caption)}</p>",
              f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"]
        name = f"figure_{i}.png"
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(png)
        md += [f"## {title}", "", caption, "", f"![{title}]({name})", ""]
    for s in searches:
        table = _policy_table(s)
        h += [f"<h2>Policies: {html.escape(s.name)} ({s.strategy})</h2>",
              table.to_html(index=False, float_format=lambda v: f"{v:.4g}")]
        md += [f"## Policies: {s.name} ({s.strategy})", "", table.to_markdown(index=False, floatfmt=".4g"), ""]
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

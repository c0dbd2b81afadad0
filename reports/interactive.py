"""Interactive fronts (plotly) for the search's parent run (`front.html`) and the HTML report.

One scatter per pair of front objectives, every search overlaid: policies' means with their 95%
intervals as error bars, each search's non-dominated policies on that pair joined, the base model
marked, policies with a reward-hacking flag (`flags` column, moalign.reports.flags) ringed in red.
Hovering a point shows the policy's weights, every evaluated objective's mean and interval, its
flags and one sample completion; clicking it puts its MLflow run ids in a box under the figure.

Pages are self-contained (plotly.js inlined, no CDN), so they open offline and in the MLflow UI's
artifact viewer. That viewer shows HTML in an iframe sandboxed to scripts only (no clipboard, no
navigation), hence a box to select the run id from rather than a copy button or a link.
"""
from __future__ import annotations

import html
import itertools
import math
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from moalign.data import atomic_path
from moalign.pareto.front import non_dominated
from moalign.reports.labels import interval, policy_label, roles_in

SYMBOLS = {"trained": "circle", "soup": "triangle-up", "mix": "triangle-down", "conditioned": "diamond", "best_of_n": "star",
           "rejection": "hexagon", "rewards_in_context": "pentagon"}
FLAG_MARKER = {"symbol": "circle-open", "size": 24, "color": "red", "line": {"width": 2}}  # a red ring
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
PANELS_PER_ROW = 3
SAMPLE_CHARS = 240  # of a completion, in a hover label

# Runs after the figure is drawn ({plot_id} is the figure's div): a read-only box under it, filled
# with the clicked policy's run ids and selected, ready to copy.
CLICK_SCRIPT = """
var gd = document.getElementById('{plot_id}');
var box = document.createElement('p');
box.className = 'moalign-run';
box.innerHTML = 'MLflow run id of the clicked policy: '
    + '<input class="moalign-run-id" readonly size="70" placeholder="click a point">';
gd.parentNode.insertBefore(box, gd.nextSibling);
var input = box.querySelector('input');
gd.on('plotly_click', function (event) {
  var point = event.points[0];
  if (!point || !point.customdata) { return; }
  input.value = point.customdata;
  input.focus();
  input.select();
});
"""


def _arrow(direction: str) -> str:
    return "↑ better" if direction == "maximize" else "↓ better"


def policy_samples(runs: pd.DataFrame, samples: Mapping[str, pd.DataFrame | None]) -> dict[str, pd.DataFrame]:
    """Each policy's eval samples, from its first run that has them, keyed by `policy_label`."""
    found = {}
    for key, role, weights in zip(runs["key"], runs["role"], runs["weights"]):
        if samples.get(key) is not None:
            found.setdefault(policy_label(role, weights), samples[key])
    return found


def _wrap(text: str, width: int = 60) -> str:
    """Plotly does not wrap hover labels: break long text into lines, escaped."""
    text = " ".join(str(text).split())
    if len(text) > SAMPLE_CHARS:
        text = text[: SAMPLE_CHARS - 3] + "..."
    return "<br>".join(html.escape(line) for line in textwrap.wrap(text, width)) or "(empty)"


def hover_text(row: pd.Series, objectives: Sequence[str], samples: pd.DataFrame | None, search: str = "") -> str:
    """What hovering a policy shows: weights, each objective's mean [interval], a sample completion."""
    lines = [f"<b>{html.escape((search + ': ') if search else '')}{html.escape(policy_label(row['role'], row['weights']))}</b>"]
    weights = [(c[2:], row[c]) for c in row.index if c.startswith("w_") and pd.notna(row[c])]
    lines.append("weights: " + ", ".join(f"{html.escape(n)} {w:g}" for n, w in weights) if weights else "base model")
    for o in objectives:
        low, high = row.get(f"{o}_ci_low", np.nan), row.get(f"{o}_ci_high", np.nan)
        lines.append(f"{html.escape(o)}: {interval(float(row[o]), float(low), float(high))}")
    if "seeds" in row:
        lines.append(f"seeds: {html.escape(str(row['seeds']))}")
    if row.get("feasible", "feasible") != "feasible":
        lines.append(f"<b>{html.escape(str(row['feasible']))} under the constraints: off the front</b>")
    if row.get("oracle") is True:
        lines.append("<b>oracle ceiling</b>: chose among samples with the references' help")
    if isinstance(row.get("flags"), str) and row["flags"]:
        lines.append(f"<b style='color:red'>reward-hacking flags: {html.escape(row['flags'])}</b> (legend in the report)")
    if samples is not None and len(samples):
        first = samples.iloc[0]
        lines += [f"<i>prompt:</i> {_wrap(first['prompt'])}", f"<i>completion:</i> {_wrap(first['completion'])}"]
    lines.append("click: run id")
    return "<br>".join(lines)


def _run_ids(table: pd.DataFrame) -> list[str]:
    ids = table["run_ids"] if "run_ids" in table else pd.Series([""] * len(table), index=table.index)
    return [", ".join(str(r).split(",")) if isinstance(r, str) and r else "(not tracked)" for r in ids]


def _error(table: pd.DataFrame, column: str) -> dict | None:
    """Asymmetric error bars from the percentile interval (it need not be centred on the mean)."""
    if f"{column}_ci_low" not in table:
        return None
    mean = table[column].to_numpy(dtype=float)
    up = table[f"{column}_ci_high"].to_numpy(dtype=float) - mean
    down = mean - table[f"{column}_ci_low"].to_numpy(dtype=float)
    if not np.isfinite(up).any():
        return None
    clean = lambda a: [float(v) if np.isfinite(v) else 0.0 for v in np.maximum(a, 0)]  # noqa: E731
    return {"type": "data", "symmetric": False, "array": clean(up), "arrayminus": clean(down), "thickness": 1, "width": 3}


def front_figure(searches: Mapping[str, tuple[pd.DataFrame, Mapping[str, pd.DataFrame]]], objectives: Sequence[str],
                 directions: Mapping[str, str]):
    """The fronts of `searches` ({name: (policies table, samples by policy label)}) on every pair of
    the front `objectives`; `directions` covers every evaluated objective (front ones first)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = list(itertools.combinations(objectives, 2)) or [(objectives[0], objectives[0])]
    cols = min(len(pairs), PANELS_PER_ROW)
    rows = math.ceil(len(pairs) / cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.08, vertical_spacing=0.15 if rows > 1 else 0.1)
    flag_legend = infeasible_legend = False  # one legend entry for the flags (infeasible policies) of every search
    for i, (name, (table, samples)) in enumerate(searches.items()):
        color = COLORS[i % len(COLORS)]
        table = table.reset_index(drop=True)
        evaluated = [o for o in directions if o in table.columns]
        hover = [hover_text(row, evaluated, samples.get(policy_label(row["role"], row["weights"])),
                            name if len(searches) > 1 else "") for _, row in table.iterrows()]
        ids = _run_ids(table)
        for p, (x, y) in enumerate(pairs):
            r, c = p // cols + 1, p % cols + 1
            for role in [r for r in roles_in(table) if r != "base"] + ["base"]:  # base drawn last, on top
                sel = (table["role"] == role).to_numpy()
                if not sel.any():
                    continue
                part = table[sel]
                fig.add_trace(go.Scatter(
                    x=part[x], y=part[y], mode="markers", name=f"{name} {role}" if role != "base" else "base model",
                    legendgroup=f"{name} {role}", showlegend=p == 0 and not (role == "base" and i > 0),
                    marker={"symbol": "square" if role == "base" else SYMBOLS.get(role, "cross"), "size": 14 if role == "base" else 10,
                            "color": "#7f7f7f" if role == "base" else color, "line": {"width": 1, "color": "black"}},
                    error_x=_error(part, x), error_y=_error(part, y),
                    hovertext=[hover[k] for k in np.flatnonzero(sel)], hoverinfo="text",
                    customdata=[ids[k] for k in np.flatnonzero(sel)]), row=r, col=c)
            flagged = table["flags"].fillna("").astype(str).str.len().to_numpy() > 0 if "flags" in table \
                else np.zeros(len(table), dtype=bool)
            if flagged.any():  # a red ring around the policy's own marker, its flag letters beside
                fig.add_trace(go.Scatter(
                    x=table[x][flagged], y=table[y][flagged], mode="markers+text", marker=FLAG_MARKER,
                    text=table["flags"][flagged].tolist(), textposition="bottom right", textfont={"color": "red"},
                    name="reward-hacking flag", legendgroup="flags", showlegend=p == 0 and not flag_legend,
                    hovertext=[hover[k] for k in np.flatnonzero(flagged)], hoverinfo="text",
                    customdata=[ids[k] for k in np.flatnonzero(flagged)]), row=r, col=c)
                flag_legend = flag_legend or p == 0
            pts = table[[x, y]].to_numpy(dtype=float)
            feasible = (table["feasible"] == "feasible").to_numpy() if "feasible" in table else np.ones(len(pts), dtype=bool)
            if (~feasible).any():  # crossed out: off the front, whatever its scores
                fig.add_trace(go.Scatter(
                    x=table[x][~feasible], y=table[y][~feasible], mode="markers", name="breaks a constraint (or undecided)",
                    marker={"symbol": "x-thin-open", "size": 16, "color": "black", "line": {"width": 2}},
                    legendgroup="infeasible", showlegend=p == 0 and not infeasible_legend,
                    hovertext=[hover[k] for k in np.flatnonzero(~feasible)], hoverinfo="text",
                    customdata=[ids[k] for k in np.flatnonzero(~feasible)]), row=r, col=c)
                infeasible_legend = infeasible_legend or p == 0
            nd = np.zeros(len(pts), dtype=bool)
            nd[feasible] = non_dominated(pts[feasible], [directions[x], directions[y]])
            front = pts[nd][np.argsort(pts[nd, 0])]
            fig.add_trace(go.Scatter(x=front[:, 0], y=front[:, 1], mode="lines", line={"color": color, "width": 2},
                                     name=f"{name} non-dominated", legendgroup=f"{name} front", showlegend=p == 0,
                                     hoverinfo="skip"), row=r, col=c)
            fig.update_xaxes(title_text=f"{x} ({_arrow(directions[x])})", row=r, col=c)
            fig.update_yaxes(title_text=f"{y} ({_arrow(directions[y])})", row=r, col=c)
    fig.update_layout(height=430 * rows, template="plotly_white", hovermode="closest", hoverlabel={"align": "left"},
                      margin={"t": 30, "b": 50, "l": 60, "r": 20}, legend={"font": {"size": 11}})
    return fig


def figure_div(fig) -> str:
    """The figure as a <div> with its click box, for a page that loads plotly.js once (`plotly_script`)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, post_script=CLICK_SCRIPT,
                       config={"displaylogo": False, "responsive": True})


def plotly_script() -> str:
    """plotly.js itself, inlined: no CDN, so the page works offline and in MLflow's sandboxed viewer."""
    from plotly.offline import get_plotlyjs

    return f"<script type='text/javascript'>{get_plotlyjs()}</script>"


def save_front_html(table: pd.DataFrame, objectives: Sequence[str], directions: Mapping[str, str],
                    samples: Mapping[str, pd.DataFrame], path: Path, title: str = "") -> None:
    """One search's interactive front as a self-contained page (the parent run's `front.html`)."""
    fig = front_figure({title or "search": (table, samples)}, objectives, directions)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>front: {html.escape(title)}</title>"
            f"{plotly_script()}</head><body style='font-family:system-ui,sans-serif'>"
            f"<h2>Front: {html.escape(title)}</h2><p style='color:#666;font-size:13px'>Points are policies' means "
            f"over training seeds, bars their 95% bootstrap intervals, lines join the non-dominated policies on "
            f"each pair of objectives. Hover a point for its weights, scores and a sample completion; click it "
            f"for its MLflow run id.</p>{figure_div(fig)}</body></html>")
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(page, encoding="utf-8")

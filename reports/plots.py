"""Matplotlib figures of fronts, searches and learning curves (headless, Agg backend)."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from moalign.pareto.front import non_dominated  # noqa: E402
from moalign.reports.labels import roles_in, weights_label  # noqa: E402

MARKERS = {"base": "s", "trained": "o", "soup": "^", "mix": "v", "conditioned": "D", "best_of_n": "*", "rejection": "h",
           "rewards_in_context": "p"}
FLAG_STYLE = {"marker": "o", "facecolors": "none", "edgecolors": "red", "s": 190, "linewidth": 1.5}  # a red ring


def _flagged(table: pd.DataFrame) -> np.ndarray:
    """Mask of policies with a reward-hacking flag (`flags` column, see moalign.reports.flags)."""
    if "flags" not in table:
        return np.zeros(len(table), dtype=bool)
    return table["flags"].fillna("").astype(str).str.len().to_numpy() > 0


def _arrow(direction: str) -> str:
    return "↑ better" if direction == "maximize" else "↓ better"


def _interval_lines(ax, table: pd.DataFrame, x: str, y: str, pts: np.ndarray, color) -> None:
    """Each policy's 95% interval on x (horizontal) and y (vertical) through its mean, where the
    table has them (`<objective>_ci_low`, `<objective>_ci_high`); drawn as lines, not symmetric
    error bars, because a percentile interval need not be centred on the mean."""
    for axis, column in ((0, x), (1, y)):
        if f"{column}_ci_low" not in table:
            continue
        low, high = (table[f"{column}_ci_{end}"].to_numpy(dtype=float) for end in ("low", "high"))
        ok = np.isfinite(low) & np.isfinite(high)
        draw = ax.hlines if axis == 0 else ax.vlines
        draw(pts[ok, 1 - axis], low[ok], high[ok], color=color, alpha=0.5, linewidth=0.8)


def _feasible(table: pd.DataFrame) -> np.ndarray:
    """The policies that count on the front: feasible under the search's constraints."""
    if "feasible" not in table:
        return np.ones(len(table), dtype=bool)
    return (table["feasible"] == "feasible").to_numpy()


def plot_front(ax, table: pd.DataFrame, x: str, y: str, directions: dict, label: str = "", color=None):
    """Scatter the policies of one search on (x, y); join its non-dominated points on this pair."""
    pts = table[[x, y]].to_numpy(dtype=float)
    feasible = _feasible(table)
    nd = np.zeros(len(pts), dtype=bool)
    nd[feasible] = non_dominated(pts[feasible], [directions[x], directions[y]])
    color = color or "C0"
    for role in roles_in(table):
        marker = MARKERS.get(role, "P")
        sel = (table["role"] == role).to_numpy()
        if sel.any():
            ax.scatter(pts[sel, 0], pts[sel, 1], marker=marker, color="grey" if role == "base" else color,
                       s=60 if role == "base" else 40, alpha=0.9, edgecolor="black", linewidth=0.5,
                       label=f"{label} {role}".strip())
    _interval_lines(ax, table, x, y, pts, color)
    if (~feasible).any():  # crossed out: off the front, whatever its scores
        ax.scatter(pts[~feasible, 0], pts[~feasible, 1], marker="x", color="black", s=50, linewidth=1.2,
                   label="breaks a constraint (or undecided)")
    flagged = _flagged(table)
    if flagged.any():  # ringed in red, the flag letters beside (legend under the report's tables)
        ax.scatter(pts[flagged, 0], pts[flagged, 1], label="reward-hacking flag", **FLAG_STYLE)
        for p, letters in zip(pts[flagged], table["flags"][flagged]):
            ax.annotate(letters, p, fontsize=8, xytext=(4, -10), textcoords="offset points", color="red")
    front = pts[nd][np.argsort(pts[nd, 0])]
    ax.plot(front[:, 0], front[:, 1], "-", color=color, alpha=0.7)
    for (_, row), p in zip(table.iterrows(), pts):
        if row["weights"]:
            ax.annotate(weights_label(row["weights"]), p, fontsize=7, xytext=(3, 3), textcoords="offset points", color=color)
    ax.set_xlabel(f"{x} ({_arrow(directions[x])})")
    ax.set_ylabel(f"{y} ({_arrow(directions[y])})")
    ax.grid(alpha=0.3)


def pareto_pairs_figure(searches: dict[str, pd.DataFrame], objectives: Sequence[str], directions: dict):
    """One panel per pair of objectives, every search overlaid on the same axes."""
    pairs = list(itertools.combinations(objectives, 2)) or [(objectives[0], objectives[0])]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs):
        for i, (name, table) in enumerate(searches.items()):
            plot_front(ax, table, x, y, directions, label=name, color=f"C{i}")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one "reward-hacking flag" entry, however many searches
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    fig.tight_layout()
    return fig


def parallel_coordinates_figure(table: pd.DataFrame, objectives: Sequence[str], directions: dict):
    """Policies across three or more objectives, each axis scaled to [0, 1] with 1 = better."""
    data = table[list(objectives)].astype(float).copy()
    for c in objectives:
        lo, hi = data[c].min(), data[c].max()
        data[c] = (data[c] - lo) / (hi - lo) if hi > lo else 0.5
        if directions[c] == "minimize":
            data[c] = 1 - data[c]
    data["policy"] = [f"{r} {weights_label(w) if w else ''}".strip() for r, w in zip(table["role"], table["weights"])]
    fig, ax = plt.subplots(figsize=(1.8 * len(objectives) + 3, 4))
    pd.plotting.parallel_coordinates(data, "policy", ax=ax, colormap="tab20", alpha=0.85, linewidth=1.5)
    ax.set_ylabel("normalised score (1 = best seen)")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def bar_figure(values: dict[str, float], ylabel: str, intervals: dict[str, tuple[float, float]] | None = None):
    """One bar per entry; `intervals` (low, high) are drawn over the bars where finite."""
    fig, ax = plt.subplots(figsize=(max(3, 1.2 * len(values) + 1), 3.2))
    ax.bar(list(values), list(values.values()), color=[f"C{i}" for i in range(len(values))])
    for i, name in enumerate(values):
        low, high = (intervals or {}).get(name, (np.nan, np.nan))
        if np.isfinite(low) and np.isfinite(high):
            ax.errorbar(i, (low + high) / 2, yerr=(high - low) / 2, fmt="none", ecolor="black", capsize=5)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def cost_figure(hypervolumes: dict[str, tuple[float, tuple[float, float]]], costs: dict[str, dict[str, float]],
                cost_labels: dict[str, str]):
    """Hypervolume of each search (with its interval, drawn where finite) against each of its
    costs, one panel per cost (`cost_labels`: key in `costs[search]` -> axis label). A search
    missing a cost is left out of that panel."""
    fig, axes = plt.subplots(1, len(cost_labels), figsize=(4.8 * len(cost_labels), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], cost_labels.items()):
        for i, (name, (hv, (low, high))) in enumerate(hypervolumes.items()):
            x = costs.get(name, {}).get(key)
            if x is None or not np.isfinite(x):
                continue
            if np.isfinite(low) and np.isfinite(high):  # a line, not symmetric bars: the interval need not centre on hv
                ax.vlines(x, low, high, color="black", linewidth=1.2)
            ax.scatter([x], [hv], color=f"C{i}", edgecolor="black", s=45, zorder=3, label=name)
            ax.annotate(name, (x, hv), fontsize=8, xytext=(5, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("hypervolume (common ref)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_figure(curves: dict[str, pd.DataFrame], metrics: Sequence[str]):
    """Learning curves (one panel per metric, one line per trained run)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, frame in curves.items():
            if metric in frame:
                ax.plot(frame.index, frame[metric], label=label)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:  # runs copied by an older moalign carry no history
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_front_png(table: pd.DataFrame, objectives: Sequence[str], directions: Sequence[str], path: Path, title: str = ""):
    """The front of one search (first pair of objectives), for the parent run's artifacts."""
    fig = pareto_pairs_figure({title: table}, list(objectives), dict(zip(objectives, directions)))
    fig.savefig(path, dpi=110)
    plt.close(fig)

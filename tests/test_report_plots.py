"""Report figures from a hand-made table of policies (no training)."""
import numpy as np
import pandas as pd
import pytest

from moalign.reports import plots

TABLE = pd.DataFrame({
    "role": ["base", "trained", "trained", "soup"],
    "weights": ["", "1.0000,0.0000,0.0000", "0.0000,0.5000,0.5000", "0.5000,0.2500,0.2500"],
    "rouge_l": [0.30, 0.45, 0.20, 0.38], "verbosity": [20.0, 25.0, 8.0, 15.0], "toxicity": [0.1, 0.2, 0.05, 0.1],
})
DIRS = {"rouge_l": "maximize", "verbosity": "minimize", "toxicity": "minimize"}


def test_one_panel_per_pair_with_direction_labels():
    fig = plots.pareto_pairs_figure({"grid": TABLE, "soups": TABLE.assign(rouge_l=TABLE["rouge_l"] - 0.05)},
                                    list(DIRS), DIRS)
    axes = fig.get_axes()
    assert len(axes) == 3  # (rouge_l, verbosity), (rouge_l, toxicity), (verbosity, toxicity)
    assert axes[0].get_xlabel() == "rouge_l (↑ better)" and axes[0].get_ylabel() == "verbosity (↓ better)"
    assert any(t.get_text() == "w=0.5/0.25/0.25" for t in axes[0].texts)


def test_parallel_coordinates_scale_each_axis_so_one_is_best():
    fig = plots.parallel_coordinates_figure(TABLE, list(DIRS), DIRS)
    lines = fig.get_axes()[0].get_lines()
    ys = {line.get_label(): list(line.get_ydata()) for line in lines if line.get_label().startswith(("base", "trained", "soup"))}
    assert ys["trained w=1/0/0"][0] == 1.0  # the best rouge_l
    assert ys["trained w=0/0.5/0.5"][1] == 1.0  # the fewest words: minimised, so flipped to 1


def test_front_points_carry_their_intervals():
    table = TABLE.assign(rouge_l_ci_low=TABLE["rouge_l"] - 0.02, rouge_l_ci_high=TABLE["rouge_l"] + 0.03,
                         verbosity_ci_low=TABLE["verbosity"] - 1.0, verbosity_ci_high=TABLE["verbosity"] + 2.0)
    fig = plots.pareto_pairs_figure({"grid": table}, ["rouge_l", "verbosity"], DIRS)
    segments = [seg for c in fig.get_axes()[0].collections if hasattr(c, "get_segments") for seg in c.get_segments()]
    # one horizontal (rouge_l) and one vertical (verbosity) line through each of the four policies
    horizontal = sorted((s[0][0], s[1][0], s[0][1]) for s in segments if s[0][1] == s[1][1])
    vertical = sorted((s[0][1], s[1][1], s[0][0]) for s in segments if s[0][0] == s[1][0])
    assert len(horizontal) == len(vertical) == 4
    assert horizontal[0] == pytest.approx((0.18, 0.23, 8.0)) and vertical[0] == pytest.approx((7.0, 10.0, 0.20))


def test_hypervolume_bars_show_their_intervals():
    fig = plots.bar_figure({"soups": 755.0, "grid": 704.0}, "hypervolume", {"soups": (700.0, 810.0), "grid": (np.nan, np.nan)})
    ax = fig.get_axes()[0]
    bars = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert len(bars) == 1  # no interval for grid, so no bar for it
    (segment,) = bars[0].lines[2][0].get_segments()
    assert segment[:, 1].tolist() == [700.0, 810.0] and segment[0, 0] == 0


def test_every_role_of_every_strategy_is_drawn_in_both_figures():
    """Mixes, conditioned policies and roles no figure knows yet are drawn, never dropped."""
    from moalign.reports.interactive import front_figure

    table = pd.DataFrame({"role": ["base", "trained", "mix", "conditioned", "future-role"],
                          "weights": ["", "1.0000,0.0000", "0.5000,0.5000", "0.2500,0.7500", "0.7500,0.2500"],
                          "rouge_l": [0.30, 0.45, 0.38, 0.33, 0.40], "verbosity": [20.0, 25.0, 15.0, 10.0, 18.0]})
    dirs = {"rouge_l": "maximize", "verbosity": "minimize"}
    ax = plots.pareto_pairs_figure({"s": table}, list(dirs), dirs).get_axes()[0]
    drawn = {c.get_label(): len(c.get_offsets()) for c in ax.collections if c.get_label().startswith("s ")}
    assert drawn == {"s base": 1, "s trained": 1, "s mix": 1, "s conditioned": 1, "s future-role": 1}
    fig = front_figure({"s": (table, {})}, list(dirs), dirs)
    traces = {t.name: len(t.x) for t in fig.data if t.mode == "markers"}
    assert traces == {"s trained": 1, "s mix": 1, "s conditioned": 1, "s future-role": 1, "base model": 1}

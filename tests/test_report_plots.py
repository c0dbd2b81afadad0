"""Report figures from a hand-made table of policies (no training)."""
import pandas as pd

from reports import plots

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

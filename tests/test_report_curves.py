"""Learning curves of runs without a logged history (runs copied by an older moalign)."""
import warnings

import pandas as pd

from moalign.reports import plots


def test_curves_without_history_draw_empty_panels_and_no_legend_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "No artists with labels found to put in legend"
        fig = plots.curves_figure({"trained w=1/0": pd.DataFrame()}, ["reward/total", "kl"])
    assert [ax.get_title() for ax in fig.get_axes()] == ["reward/total", "kl"]
    assert fig.get_axes()[0].get_legend() is None

"""Hypervolume against cost on hand-made searches: the parent's cost/train_steps and
cost/wall_time_s where logged, a note for a search from before costs were; and the whole report
(flags and cost figure) built from them without MLflow."""
import numpy as np

from moalign.reports import build, plots
from test_report_flags import hand_made_search


def test_hypervolume_is_drawn_against_each_cost_with_its_interval():
    common = {"soups": (755.0, (700.0, 810.0)), "grid": (704.0, (650.0, 760.0)), "old": (600.0, (np.nan, np.nan))}
    costs = {"soups": {"cost/train_steps": 60.0, "cost/wall_time_s": 900.0},
             "grid": {"cost/train_steps": 90.0, "cost/wall_time_s": 1300.0}}
    fig = plots.cost_figure(common, costs, build.COSTS)
    steps, wall = fig.get_axes()
    assert steps.get_xlabel() == "training steps (all runs)" and wall.get_xlabel().startswith("wall-clock time")
    points = {c.get_label(): tuple(c.get_offsets()[0]) for c in steps.collections if c.get_label() in common}
    assert points == {"soups": (60.0, 755.0), "grid": (90.0, 704.0)}  # "old" logged no cost: not drawn
    intervals = sorted(tuple(s[:, 1]) + (s[0, 0],) for c in steps.collections if hasattr(c, "get_segments")
                       for s in c.get_segments())
    assert intervals == [(650.0, 760.0, 90.0), (700.0, 810.0, 60.0)]
    assert {c.get_label(): tuple(c.get_offsets()[0]) for c in wall.collections if c.get_label() in common}["grid"] \
        == (1300.0, 704.0)


def test_a_search_without_cost_metrics_gets_a_note():
    new, old = hand_made_search(), hand_made_search()
    new.name, old.name = "soups", "old"
    new.metrics = {"cost/train_steps": 40.0, "cost/wall_time_s": 321.0, "hypervolume": 1.0}
    costs, notes = build._costs([new, old])
    assert costs == {"soups": {"cost/train_steps": 40.0, "cost/wall_time_s": 321.0}}
    assert notes == ["old: its parent run has no cost/train_steps, cost/wall_time_s (a search from before costs "
                     "were logged), so it is not drawn against cost."]


def test_report_with_flags_and_cost(tmp_path, monkeypatch):
    new, old = hand_made_search(), hand_made_search()
    new.name, old.name = "soups", "old"
    new.metrics = {"cost/train_steps": 40.0, "cost/wall_time_s": 321.0}
    monkeypatch.setattr(build, "load_searches", lambda *a, **k: [new, old])
    html_path, md_path = build.build_report("exp", tmp_path, flags=build.FlagConfig(kl_budget=0.3))
    md = md_path.read_text()
    assert "## Reward-hacking checks: soups" in md and "K: KL to the reference above the budget of 0.3 nat/token" in md
    rows = [line for line in md.splitlines() if line.startswith("| trained w=1/0 ")]
    assert len(rows) == 2 and all(r.replace(" ", "").endswith("|LKD|") for r in rows)
    assert "## Hypervolume against cost" in md
    assert "old: its parent run has no cost/train_steps" in md
    page = html_path.read_text()
    assert "reward-hacking flag" in page and "Reward-hacking checks: old" in page

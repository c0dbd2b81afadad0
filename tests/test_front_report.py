"""Report sums over several searches, on hand-made searches (no training): intervals as text,
overlap sentences, expected utility on one weight set and one scale; a tracking server lost
while the report reads it."""
import numpy as np
import pandas as pd
import pytest

from moalign.pareto.uncertainty import PolicyScores
from moalign.reports import build
from moalign.reports.collect import Search

DIRS = {"a": "maximize", "b": "maximize"}


def search(name: str, means: list, own_eu: float) -> Search:
    runs = pd.DataFrame([{"key": f"k{i}", "role": "trained", "weights": f"w{i}", "seed": 0, "run_id": f"{name}{i}",
                          "a": a, "b": b, "train_steps": 1, "wall_time_s": 1.0} for i, (a, b) in enumerate(means)])
    scores = PolicyScores(runs, {}, ["a", "b"])
    policies = scores.estimate(["a", "b"], list(DIRS.values()), np.zeros(2)).table
    return Search(name, name, "grid", ["a", "b"], DIRS, {"expected_utility": own_eu}, policies, runs, scores)


def test_interval_text():
    assert build.interval(54.31, 52.08, 56.04) == "54.3 [52.1, 56.0]"  # to what the interval supports
    assert build.interval(0.04235, 0.02763, 0.06108) == "0.042 [0.028, 0.061]"
    assert build.interval(205.8, 182.0, 227.7) == "206 [182, 228]"
    assert build.interval(0.5, np.nan, np.nan) == "0.5"


def test_overlap_sentences_name_both_searches_and_say_what_follows():
    lines = build._overlaps({"soups": (755.0, (700.0, 810.0)), "grid": (704.0, (650.0, 760.0)),
                             "tiny": (100.0, (90.0, 120.0))})
    assert lines[0] == "soups 755 [700, 810] vs grid 704 [650, 760]: intervals overlap, no difference shown"
    assert lines[1] == "soups 755 [700, 810] vs tiny 100 [90, 120]: intervals do not overlap, soups has the larger hypervolume"
    assert len(lines) == 3


def test_expected_utility_compares_on_one_weight_set_and_one_scale():
    # each search logged utility 1.0 on its own range and weights; on the common scale the second,
    # whose policies sit inside the first's, is worse
    wide = search("wide", [[1.0, 0.0], [0.0, 1.0]], own_eu=1.0)
    narrow = search("narrow", [[0.6, 0.4], [0.4, 0.6]], own_eu=1.0)
    eu = build._common_utilities([wide, narrow])
    W = build.weight_vectors(build.COMMON_WEIGHTS, ["a", "b"])
    assert eu["wide"] == pytest.approx(np.mean(W.max(1)))
    assert eu["narrow"] == pytest.approx(np.mean(np.maximum(W @ [0.6, 0.4], W @ [0.4, 0.6])))
    assert eu["narrow"] < eu["wide"]
    summary = build._summary([wide, narrow], {"wide": (1.0, (0.9, 1.0)), "narrow": (0.5, (0.4, 0.6))}, eu)
    assert "common weights" in build.EU_COLUMN and summary[build.EU_COLUMN].tolist() == [eu["wide"], eu["narrow"]]
    assert summary[build.HV_COLUMN].tolist() == ["1.00 [0.90, 1.00]", "0.50 [0.40, 0.60]"]


def test_a_tracking_server_lost_mid_report_is_one_line(tmp_path, monkeypatch, capsys):
    """The report reads MLflow through the tracker: a server gone between two reads is one line, exit 2."""
    from moalign.cli import main
    from moalign.tracking import MlflowTracker
    from moalign.reports import collect

    from mlflow_server import MlflowServer

    server = MlflowServer(tmp_path)
    try:
        tracker = MlflowTracker("lost", server.url)
        parent = tracker.start_run("grid", {"moalign.kind": "search", "moalign.strategy": "grid"})
        tracker.log_params(parent, {"objectives": ["a", "b"], "directions": ["maximize", "maximize"]})
        child = tracker.start_run("base", {"moalign.key": "base", "moalign.role": "base"}, parent)
        tracker.log_metrics(child, [(0, {"eval/a": 0.1, "eval/b": 0.2})])
        for run in (child, parent):
            tracker.end_run(run)
        real = collect.load_search

        def server_goes_away(*args):
            server.stop()
            return real(*args)

        monkeypatch.setattr(collect, "load_search", server_goes_away)
        capsys.readouterr()
        code = main(["report", "--experiment", "lost", "--out", str(tmp_path / "report"), "--tracking-uri", server.url])
    finally:
        server.stop()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"moalign: error: MLflow tracking server {server.url} is not answering (search runs")
    assert not (tmp_path / "report" / "report.html").exists()

"""What the report's flags and cost figure read back from a search: each trained run's `kl`
history, every run's eval samples, the children's cost/... metrics and the parent's. The tracker
is a stand-in answering the reads `load_search` makes (an MLflow store takes ~10 s to create)."""
from types import SimpleNamespace

import pandas as pd
import pytest

from moalign.reports.build import _costs
from moalign.reports.collect import load_search


def run(run_id, name, params=None, tags=None, metrics=None):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, run_name=name, status="FINISHED"),
                           data=SimpleNamespace(params=params or {}, tags=tags or {}, metrics=metrics or {}))


class StandIn:
    """The tracker's read side over a fixed set of runs."""

    def __init__(self, children, history, tables):
        self.children, self.history, self.tables = children, history, tables

    def find_runs(self, filter_string):
        return self.children

    def metric_history(self, run_id, key):
        return self.history.get((run_id, key), {})

    def read_table(self, run_id, artifact_file):
        return self.tables.get(run_id)


def test_collect_reads_kl_history_samples_and_costs():
    parent = run("P", "grid", {"objectives": '["a", "b"]', "directions": '["maximize", "maximize"]', "strategy": "grid"},
                 metrics={"cost/train_steps": 2.0, "cost/wall_time_s": 15.0})
    costs = {"cost/wall_time_s": 7.5, "train_wall_time_s": 99.0, "eval/a": 0.5, "eval/b": 0.2}
    base = run("B", "base", tags={"moalign.key": "base", "moalign.role": "base"},
               metrics={**costs, "cost/train_steps": 0})
    trained = run("T", "t", {"reward.weights": "[1.0, 0.0]"},
                  {"moalign.key": "train:1.0000,0.0000:s0", "moalign.role": "trained", "moalign.seed": "0"},
                  {**costs, "cost/train_steps": 2, "train_steps": 9})
    table = lambda texts: pd.DataFrame({"prompt": ["p", "q"], "completion": texts, "a": 0.5, "b": 0.2})  # noqa: E731
    tracker = StandIn([base, trained], {("T", "kl"): {1: 0.1, 2: 0.3}, ("T", "reward/total"): {1: 0.0, 2: 0.1}},
                      {"B": table(["one two three", "four five six"]), "T": table(["same answer", "same answer"])})

    search = load_search(tracker, parent)
    assert search.kl["train:1.0000,0.0000:s0"].to_dict() == {1: pytest.approx(0.1), 2: pytest.approx(0.3)}
    assert list(search.kl) == ["train:1.0000,0.0000:s0"]  # the base model never trained
    assert search.run_samples["train:1.0000,0.0000:s0"]["completion"].tolist() == ["same answer", "same answer"]
    runs = search.runs.set_index("key")
    # the children's cost/... win over the older train_steps and train_wall_time_s
    assert runs.loc["train:1.0000,0.0000:s0", ["train_steps", "wall_time_s"]].tolist() == [2, 7.5]
    assert _costs([search]) == ({"grid": {"cost/train_steps": 2.0, "cost/wall_time_s": 15.0}}, [])

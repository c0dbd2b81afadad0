"""`moalign run` on the tiny model: two searches, a report rendered in headless Chromium, bad files."""
import json
import re

import pytest
import yaml
from mlflow.tracking import MlflowClient

from moalign.cli import main
from moalign.tracking import resolve_tracking_uri

from rl_helpers import write_prompts


def pipeline_dict(tiny_llama, data):
    return {
        "experiment": "pipe",
        "train": {
            "model": {"name": tiny_llama, "lora_r": 8},
            "data": {"train": data, "eval_fraction": 0.3},
            "sampling": {"num_generations": 4, "prompts_per_step": 4, "max_new_tokens": 8},
            "reward": {"objectives": {"good": {"type": "word_share", "word": "good"},
                                      "bad": {"type": "word_share", "word": "bad"}}},
            "eval_objectives": {"verbosity": {}},
            "optim": {"steps": 6, "lr": 2e-2},
            "checkpoint_every": 3, "progress": False,
        },
        "searches": [{"strategy": "soups", "name": "soups", "weights": {"method": "das-dennis", "n_partitions": 2}},
                     {"strategy": "grid", "name": "grid", "weights": [[1, 0], [0.5, 0.5], [0, 1]]}],
        "report": {"out": "report"},
    }


@pytest.fixture(scope="module")
def pipeline_run(tiny_llama, tmp_path_factory):
    import os

    tmp = tmp_path_factory.mktemp("pipeline")
    old = os.getcwd()
    os.chdir(tmp)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        data = write_prompts(tmp / "prompts.jsonl")
        (tmp / "pipe.yaml").write_text(yaml.safe_dump(pipeline_dict(tiny_llama, data), sort_keys=False))
        assert main(["run", "pipe.yaml"]) == 0
        yield tmp
    finally:
        os.chdir(old)


def test_pipeline_leaves_searches_and_a_report(pipeline_run, monkeypatch):
    monkeypatch.chdir(pipeline_run)
    client = MlflowClient(resolve_tracking_uri())
    exp = client.get_experiment_by_name("pipe")
    parents = client.search_runs([exp.experiment_id], "tags.`moalign.kind` = 'search'")
    assert sorted(p.data.tags["moalign.strategy"] for p in parents) == ["grid", "soups"]
    grid = next(p for p in parents if p.data.tags["moalign.strategy"] == "grid")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{grid.info.run_id}'")
    # the grid's extremes are the soups' endpoints (same training config): reused, not retrained and not
    # copied (in the MLflow UI each policy is one run); the grid's parent names them
    assert sorted(c.data.tags["moalign.key"] for c in children) == ["base", "train:0.5000,0.5000:s0"]
    soups_parent = next(p for p in parents if p.data.tags["moalign.strategy"] == "soups")
    endpoints = {c.data.tags["moalign.key"]: c.info.run_id for c in client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{soups_parent.info.run_id}'") if c.data.tags["moalign.role"] == "trained"}
    assert json.loads(grid.data.tags["moalign.reused"]) == endpoints and len(endpoints) == 2
    assert grid.data.metrics["n_policies"] == 4 and grid.data.metrics["n_runs"] == 4
    html = (pipeline_run / "report" / "report.html").read_text()
    for section in ("Pareto fronts", "All objectives", "Hypervolume per search", "Learning curves: soups",
                    "Policies: grid", "Sample generations: soups"):
        assert section in html
    md = (pipeline_run / "report" / "report.md").read_text()
    assert "![Pareto fronts](figure_0.png)" in md and (pipeline_run / "report" / "figure_0.png").stat().st_size > 1000
    # soups count each policy once: the one-hot soups are the endpoints
    soups = next(p for p in parents if p.data.tags["moalign.strategy"] == "soups")
    assert soups.data.metrics["n_policies"] == 4 and soups.data.metrics["n_runs"] == 4
    # every interval says what it rests on, and the two searches' hypervolumes are compared in words
    assert "soups: 3 evaluation prompts x 1 training seed (0), 1000 resamples." in md
    assert "Mean over seeds [95% interval]: 3 evaluation prompts x 1 training seed (0)" in md
    assert re.search(r"- soups \S+ \[\S+, \S+\] vs grid \S+ \[\S+, \S+\]: intervals (overlap, no difference shown|do not "
                     r"overlap, \w+ has the larger hypervolume)", md)
    assert "expected utility (common weights" in md and "hypervolume [95% CI] (common ref)" in md
    assert "| good [95% CI] " in md and re.search(r"^\| trained +\| 1\.0000,0\.0000 \| [\d.]+ \[[\d.]+, [\d.]+\] +\|", md, re.M)


def test_report_names_an_unknown_run_id(pipeline_run, monkeypatch, capsys):
    monkeypatch.chdir(pipeline_run)
    assert main(["report", "--experiment", "pipe", "--runs", "abc", "--out", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--runs: no run 'abc' in the MLflow store" in err
    assert not (pipeline_run / "nowhere").exists()


def test_report_cli_renders_in_headless_chromium(pipeline_run, tmp_path, monkeypatch):
    from test_ui_front import check_interactive_front, chromium

    monkeypatch.chdir(pipeline_run)
    assert main(["report", "--experiment", "pipe", "--out", str(tmp_path / "again")]) == 0
    page = tmp_path / "again" / "report.html"
    client = MlflowClient(resolve_tracking_uri())
    exp = client.get_experiment_by_name("pipe")
    soups = client.search_runs([exp.experiment_id], "tags.`moalign.strategy` = 'soups'")[0]
    endpoint = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{soups.info.run_id}' and "
                                  f"tags.`moalign.key` = 'train:1.0000,0.0000:s0'")[0].info.run_id
    with chromium(tmp_path) as driver:
        driver.get(page.as_uri())
        assert driver.title == "moalign report: pipe"
        # the fronts are interactive: hover names the weights, a click the run (the grid's w=1/0 is
        # the soups' endpoint, reused: one run id whichever search's point is on top)
        assert driver.execute_script("return typeof window.Plotly;") == "object"
        assert driver.execute_script("return Array.from(document.scripts).filter(s => s.src).length;") == 0
        assert len(driver.find_elements("css selector", ".plotly")) == 1
        assert check_interactive_front(driver, "weights: good 1, bad 0") == endpoint
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);")
        assert [alt for alt, *_ in images] == ["All objectives", "Hypervolume per search", "Hypervolume against cost",
                                               "Learning curves: soups",
                                               "Learning curves: grid"]
        for alt, complete, width, height in images:
            assert complete and width > 200 and height > 100, alt
        rows = driver.execute_script("return document.querySelectorAll('table tr').length;")
        assert rows > 10
        driver.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["train"].update(stepz=3), "unknown key 'train.stepz'"),
    (lambda d: d["searches"][0].update(wieghts=[[1, 0]]), "unknown key 'searches[0].wieghts'"),
    (lambda d: d["searches"][1].update(weights=[[1, 0, 0]]), "searches[1].weights: got 3 weights for 2 objectives"),
    (lambda d: d["train"]["data"].update(train="nowhere.jsonl"), "nowhere.jsonl: no such data file"),
    (lambda d: d.update(reprot={}), "unknown key 'reprot'"),
    (lambda d: d["searches"][1].update(reference_point="foo"),
     "searches[1].reference_point must be nadir|base|{objective: value}, got 'foo'"),
])
def test_bad_pipeline_fails_before_training(edit, message, tiny_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = write_prompts(tmp_path / "prompts.jsonl")
    config = pipeline_dict(tiny_llama, data)
    edit(config)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", "bad.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "bad.yaml" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()  # nothing was trained or tracked

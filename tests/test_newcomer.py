"""What a newcomer meets: a search says where it is (a line per round and per finished child), a
front can be listed (finished or in progress) without Python, an adapter folder handed over alone
generates as its run did, and the MLflow UI gets the front as a table."""
import json

import pytest
from mlflow.tracking import MlflowClient

from moalign.cli import main
from moalign.pareto.config import SearchConfig
from moalign.pareto.search import run_search
from moalign.rl.config import RewardConfig, SamplingConfig, TrackingConfig

from rl_helpers import tiny_config, write_prompts

OBJECTIVES = {"good": {"type": "word_share"}, "bad": {"type": "word_share", "word": "bad"}}


@pytest.fixture(scope="module")
def soups(tiny_llama, tmp_path_factory, one_torch_thread):
    tmp = tmp_path_factory.mktemp("newcomer")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = tiny_config(tiny_llama, write_prompts(tmp / "p.jsonl"), tmp, reward=RewardConfig(objectives=OBJECTIVES),
                      sampling=SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=7),
                      tracking=TrackingConfig(tracking_uri=uri, experiment="newcomer"))
    cfg.optim.steps = 2
    config = SearchConfig(train=cfg, strategy="soups", weights=[[1, 0], [0.5, 0.5], [0, 1]], name="soups", n_bootstrap=100)
    return uri, tmp, config


def test_a_search_prints_a_line_per_round_and_per_finished_child(soups, capsys):
    uri, _, config = soups
    capsys.readouterr()
    run_search(config)
    out = capsys.readouterr().out.splitlines()
    assert "    soups round 1: 2 trainings" in out and "    soups round 2: 1 evaluations" in out
    finished = [line for line in out if " done] " in line]
    assert len(finished) == 4 and finished[0].startswith("    soups [1 done] base: good ")
    assert any("train:1.0000,0.0000:s0: good" in line and line.endswith(" s") for line in finished)


def test_moalign_front_lists_a_finished_front_and_one_in_progress(soups, capsys):
    uri, _, config = soups
    run_search(config)  # finished already: read back
    capsys.readouterr()
    assert main(["front", "newcomer/soups", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert out.startswith("newcomer/soups: search finished") and "newcomer/soups@0.5000,0.5000" in out
    assert "feasible" in out and "[" in out  # intervals shown
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("newcomer").experiment_id],
                                "tags.`moalign.kind` = 'search'")[0]
    # the same search, as it looks while running: no front.csv yet, its finished children listed
    client.set_terminated(parent.info.run_id, "RUNNING")
    client.delete_tag(parent.info.run_id, "moalign.reference_point")
    artifacts = client.get_run(parent.info.run_id).info.artifact_uri.removeprefix("file://")
    import os

    os.rename(f"{artifacts}/front.csv", f"{artifacts}/front.csv.bak")
    try:
        assert main(["front", "newcomer/soups", "--tracking-uri", uri]) == 0
        out = capsys.readouterr().out
        assert out.startswith("newcomer/soups: search running: 4 policies finished so far")
    finally:
        os.rename(f"{artifacts}/front.csv.bak", f"{artifacts}/front.csv")
        client.set_terminated(parent.info.run_id, "FINISHED")


def test_the_mlflow_ui_gets_the_front_as_a_table(soups, tmp_path):
    uri, _, config = soups
    result = run_search(config)
    client = MlflowClient(uri)
    path = client.download_artifacts(result.parent_run_id, "front.json", str(tmp_path))
    table = json.loads(open(path).read())
    assert "non_dominated" in table["columns"] and "feasible" in table["columns"] and len(table["data"]) == 4


def test_an_adapter_folder_alone_generates_as_its_run_did(soups, tmp_path):
    uri, _, config = soups
    result = run_search(config)
    folder = result.runs.loc[result.runs["key"] == "train:1.0000,0.0000:s0", "adapter_dir"].iloc[0]
    data = write_prompts(tmp_path / "q.jsonl")
    assert main(["generate", "--run", folder, "--data", data, "--out", str(tmp_path / "a.jsonl"), "--quiet"]) == 0
    assert main(["generate", "--run", "newcomer/soups@1,0", "--data", data, "--out", str(tmp_path / "b.jsonl"),
                 "--tracking-uri", uri, "--quiet"]) == 0
    a, b = ([json.loads(line)["completion"] for line in (tmp_path / f).read_text().splitlines()] for f in ("a.jsonl", "b.jsonl"))
    assert a == b  # the run's 7 new tokens and chat template, not generate's defaults
    assert max(len(c.split()) for c in a) <= 7


def test_a_front_in_progress_compares_the_seeds_every_policy_has_finished():
    import pandas as pd

    from moalign.reports.collect import _common_seeds

    runs = pd.DataFrame({"role": ["base", "trained", "trained", "trained", "trained", "trained"],
                         "weights": ["", "1,0", "1,0", "1,0", "0,1", "0,1"], "seed": [0, 0, 1, 2, 0, 1]})
    kept = _common_seeds(runs)
    assert sorted(zip(kept["weights"], kept["seed"])) == [("", 0), ("0,1", 0), ("0,1", 1), ("1,0", 0), ("1,0", 1)]

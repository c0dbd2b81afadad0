"""Searches over several training seeds on the tiny model: one child per (policy, seed), the front
of the means with intervals in MLflow and front.csv, per-seed reuse across searches (recorded on the
parent, not copied), resume of a search that reused runs."""
import io
import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pymoo.indicators.hv import HV

import moalign
from moalign.pareto.config import SearchConfig
from moalign.pareto.uncertainty import PolicyScores
from moalign.rl.config import DataConfig, OptimConfig, RewardConfig, SamplingConfig, TrackingConfig
from moalign.tracking import read_artifact_text, read_table, resolve_tracking_uri

from rl_helpers import tiny_config, write_prompts

OBJECTIVES = {"good": {"type": "word_share", "word": "good"}, "bad": {"type": "word_share", "word": "bad"}}
EVAL = ["the cat sat", "news report", "green tree"]


def config(tiny_llama, tmp, strategy, weights):
    train = tiny_config(tiny_llama, write_prompts(tmp / "prompts.jsonl"), tmp, optim=OptimConfig(steps=2, lr=2e-2),
                        sampling=SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=6,
                                                eval_num_generations=2, eval_temperature=1.0),
                        reward=RewardConfig(objectives=OBJECTIVES), tracking=TrackingConfig(enabled=True, experiment="seeds"))
    # a held-out file: every seed is evaluated on the same prompts
    (tmp / "eval.jsonl").write_text("\n".join(json.dumps({"prompt": p, "references": ["the cat"]}) for p in EVAL))
    train.data = DataConfig(train=train.data.train, eval=str(tmp / "eval.jsonl"))
    return SearchConfig(train=train, strategy=strategy, weights=weights, seeds=[0, 1], name=strategy, n_bootstrap=200)


def children(client, parent_id):
    exp = client.get_experiment_by_name("seeds").experiment_id
    return {c.data.tags["moalign.key"]: c for c in client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")}


def test_seeds_give_one_run_per_policy_and_seed_and_a_front_of_means(tiny_llama, in_tmp):
    result = moalign.search(config(tiny_llama, in_tmp, "grid", [[1, 0], [0, 1]]))
    client = MlflowClient(resolve_tracking_uri())
    runs = children(client, result.parent_run_id)
    assert sorted(runs) == ["base", "train:0.0000,1.0000:s0", "train:0.0000,1.0000:s1",
                            "train:1.0000,0.0000:s0", "train:1.0000,0.0000:s1"]
    for key, run in runs.items():
        if key != "base":  # each child trained with its own seed, and says so
            assert run.data.params["seed"] == key[-1] and run.data.tags["moalign.seed"] == key[-1]

    parent = client.get_run(result.parent_run_id)
    metrics, params = parent.data.metrics, parent.data.params
    assert metrics["n_policies"] == 3 and metrics["n_runs"] == 5 and metrics["n_seeds"] == 2 and metrics["n_prompts"] == 3
    assert params["seeds"] == "[0, 1]" and json.loads(params["bounds.good"]) == [None, None]
    assert metrics["hypervolume_ci_low"] <= metrics["hypervolume_ci_high"]

    front = pd.read_csv(io.StringIO(read_artifact_text(client, result.parent_run_id, "front.csv")), keep_default_na=False)
    assert {"good", "good_ci_low", "good_ci_high", "bad", "bad_ci_low", "bad_ci_high", "n_seeds"} <= set(front.columns)
    trained = front[front["role"] == "trained"].set_index("weights")
    assert trained["n_seeds"].tolist() == [2, 2] and len(front) == 3
    for w in ("1.0000,0.0000", "0.0000,1.0000"):  # a policy's score is the mean of its seeds'
        seeds = [runs[f"train:{w}:s{s}"].data.metrics["eval/good"] for s in (0, 1)]
        assert trained.loc[w, "good"] == pytest.approx(np.mean(seeds))
        assert trained.loc[w, "good_ci_low"] <= trained.loc[w, "good"] + 1e-12 <= trained.loc[w, "good_ci_high"] + 2e-12
    # the hypervolume is that of the three means, against the logged reference point
    ref = np.array(json.loads(parent.data.tags["moalign.reference_point"]))
    assert metrics["hypervolume"] == pytest.approx(HV(ref_point=ref).do(-front[["good", "bad"]].to_numpy(float)))
    # and its interval is the bootstrap of the children's logged per-prompt scores
    rows = [{"key": k, "role": r.data.tags["moalign.role"], "weights": w, "seed": int(r.data.tags["moalign.seed"]),
             "run_id": r.info.run_id, "good": 0.0, "bad": 0.0}
            for k, r in runs.items() for w in [k.split(":")[1] if ":" in k else ""]]
    scores = PolicyScores(pd.DataFrame(rows), {k: read_table(client, r.info.run_id, "eval_samples.json")
                                               for k, r in runs.items()}, ["good", "bad"])
    hv, ci = scores.hypervolume(["good", "bad"], ["maximize", "maximize"], ref, n_boot=200, seed=0)
    assert (metrics["hypervolume_ci_low"], metrics["hypervolume_ci_high"]) == pytest.approx(ci)
    assert result.hypervolume_ci == pytest.approx(ci) and result.seeds == [0, 1]

    # a soups search on the same training setup reuses each seed's endpoints and mixes within a seed
    soups = moalign.search(config(tiny_llama, in_tmp, "soups", {"method": "das-dennis", "n_partitions": 2}))
    # the endpoints appear once in MLflow: as the grid's children, listed (not copied) on the soups' parent
    soup_runs = children(client, soups.parent_run_id)
    assert sorted(soup_runs) == ["base", "soup:0.5000,0.5000:s0", "soup:0.5000,0.5000:s1"]
    endpoints = {k: r.info.run_id for k, r in runs.items() if k != "base"}
    soup_parent = client.get_run(soups.parent_run_id)
    assert json.loads(soup_parent.data.tags["moalign.reused"]) == endpoints
    for seed in (0, 1):  # each seed's soup mixes that seed's endpoints, named in objective order
        assert json.loads(soup_runs[f"soup:0.5000,0.5000:s{seed}"].data.tags["moalign.endpoints"]) == [
            endpoints[f"train:1.0000,0.0000:s{seed}"], endpoints[f"train:0.0000,1.0000:s{seed}"]]
    soup_front = pd.read_csv(io.StringIO(read_artifact_text(client, soups.parent_run_id, "front.csv")), keep_default_na=False)
    assert soup_front.set_index("weights").loc["1.0000,0.0000", "run_ids"] == ",".join(
        endpoints[f"train:1.0000,0.0000:s{s}"] for s in (0, 1))
    assert sorted(soups.policies["role"]) == ["base", "soup", "trained", "trained"]
    assert soup_parent.data.metrics["n_runs"] == 7 and soups.runs["reused"].sum() == 4
    # the reused runs' per-prompt scores are the grid's own: the same policies, resampled by the same
    # draws of prompts and seeds, have the same intervals
    columns = ["good", "good_ci_low", "good_ci_high", "bad", "bad_ci_low", "bad_ci_high"]
    for w in ("1.0000,0.0000", "0.0000,1.0000"):
        assert soups.policies.set_index("weights").loc[w, columns].tolist() == pytest.approx(
            result.policies.set_index("weights").loc[w, columns].tolist())

    # run again, the soups search resumes on the same parent: it follows its reused runs, trains and
    # evaluates nothing, starts no run
    again = moalign.search(config(tiny_llama, in_tmp, "soups", {"method": "das-dennis", "n_partitions": 2}))
    assert again.parent_run_id == soups.parent_run_id and sorted(children(client, again.parent_run_id)) == sorted(soup_runs)
    assert all(client.get_run(r.info.run_id).info.end_time == r.info.end_time for r in soup_runs.values())
    assert again.policies["run_ids"].tolist() == soups.policies["run_ids"].tolist()
    assert again.hypervolume == pytest.approx(soups.hypervolume)
    assert len(client.search_runs([client.get_experiment_by_name("seeds").experiment_id])) == 2 + 5 + 3

    # the report: each policy once with its interval, the seeds behind it, one curve per seed
    from moalign.reports.build import build_report
    from moalign.reports.collect import load_searches

    grid, soup = load_searches("seeds")
    assert grid.seeds == [0, 1] and grid.n_prompts == 3 and len(grid.policies) == 3 and len(grid.runs) == 5
    assert sorted(grid.curves) == ["trained w=0/1 s0", "trained w=0/1 s1", "trained w=1/0 s0", "trained w=1/0 s1"]
    # the soups' endpoints are the grid's runs: their learning curves and samples too
    assert sorted(soup.curves) == sorted(grid.curves) and all(len(c) == 2 for c in soup.curves.values())
    assert set(soup.runs.loc[soup.runs["role"] == "trained", "run_id"]) == set(endpoints.values())
    assert soup.samples["trained w=1/0"].equals(grid.samples["trained w=1/0"])
    assert soup.policies.set_index("weights")["good_ci_low"].to_dict() == pytest.approx(
        soups.policies.set_index("weights")["good_ci_low"].to_dict())
    md = build_report("seeds", in_tmp / "report")[1].read_text()
    assert "grid: 3 evaluation prompts x 2 training seeds (0, 1), 200 resamples." in md
    assert "- grid " in md and " vs soups " in md

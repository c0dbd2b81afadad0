"""Grid and soups searches on the tiny model: MLflow layout, front, hypervolume, exact soups, resume."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

import moalign
from moalign.rl.policy import peft_wrapping
from moalign.pareto.config import SearchConfig
from moalign.rl.config import OptimConfig, RewardConfig, TrackingConfig
from moalign.tracking import resolve_tracking_uri

from rl_helpers import tiny_config, write_prompts

OBJECTIVES = {"good": {"type": "word_share", "word": "good"}, "bad": {"type": "word_share", "word": "bad"}}


def search_config(tiny_llama, tmp, strategy, steps=12, weights=None):
    data = write_prompts(tmp / "prompts.jsonl")
    train = tiny_config(tiny_llama, data, tmp, optim=OptimConfig(steps=steps, lr=2e-2), checkpoint_every=4,
                        reward=RewardConfig(objectives=OBJECTIVES),
                        tracking=TrackingConfig(enabled=True, experiment="search", samples_every=0))
    return SearchConfig(train=train, strategy=strategy, weights=weights or {"method": "das-dennis", "n_partitions": 2},
                        name=strategy)


def children_of(client, parent_id):
    exp = client.get_experiment_by_name("search").experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")


@pytest.mark.parametrize("strategy", ["grid", "soups"])
def test_search_records_children_front_and_hypervolume(strategy, tiny_llama, in_tmp):
    result = moalign.search(search_config(tiny_llama, in_tmp, strategy))
    client = MlflowClient(resolve_tracking_uri())
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["moalign.kind"] == "search"
    children = children_of(client, result.parent_run_id)
    roles = sorted(c.data.tags["moalign.role"] for c in children)
    # soups: the endpoints are the policies at the one-hot weights; only the middle one is a mix
    expected = ["base"] + ["trained"] * 3 if strategy == "grid" else ["base"] + ["soup"] + ["trained"] * 2
    assert roles == sorted(expected)
    assert all(c.info.status == "FINISHED" and "eval/good" in c.data.metrics for c in children)
    # the non-dominated set and hypervolume, recomputed here with pymoo from the children's metrics
    F = np.array([[-c.data.metrics["eval/good"], -c.data.metrics["eval/bad"]] for c in children])
    nd = set(NonDominatedSorting().do(F, only_non_dominated_front=True).tolist())
    tagged = {i for i, c in enumerate(children) if c.data.tags["moalign.non_dominated"] == "true"}
    assert tagged == nd and parent.data.metrics["n_nondominated"] == len(nd)
    ref = F.max(0) + 0.1 * np.where(F.max(0) > F.min(0), F.max(0) - F.min(0), 1.0)
    assert parent.data.metrics["hypervolume"] > 0
    assert parent.data.metrics["hypervolume"] == pytest.approx(HV(ref_point=ref).do(F))
    assert {a.path for a in client.list_artifacts(result.parent_run_id)} >= {"front.csv", "front.png", "front.html"}
    # the MLflow chart view scatters eval/<objective> and colours by one numeric param per weight
    by_key = {c.data.tags["moalign.key"]: c for c in children}
    for key, child in by_key.items():
        weights = [float(w) for w in key.split(":")[1].split(",")] if key != "base" else None
        if weights:
            assert (child.data.params["weight/good"], child.data.params["weight/bad"]) == tuple(map(str, weights))
            assert [float(w) for w in json.loads(child.data.params["reward.weights"])] == weights
        else:
            assert not any(k.startswith("weight/") for k in child.data.params)
    if strategy == "soups":  # a soup names the runs it mixes, in objective order
        soup = by_key["soup:0.5000,0.5000:s0"]
        assert json.loads(soup.data.tags["moalign.endpoints"]) == [
            by_key["train:1.0000,0.0000:s0"].info.run_id, by_key["train:0.0000,1.0000:s0"].info.run_id]
    # the two extremes pull apart: all-"good" says "good" more than all-"bad" does
    table = result.policies.set_index("weights")
    assert table.loc["1.0000,0.0000", "good"] > table.loc["0.0000,1.0000", "good"]
    assert table.loc["", "role"] == "base"


def test_soups_interpolation_is_exact_at_the_endpoints(tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from moalign.pareto.soups import AdapterSoup
    from moalign.rl.config import ModelConfig

    data = write_prompts(tmp_path / "p.jsonl")
    dirs = []
    for word in ("good", "bad"):
        cfg = tiny_config(tiny_llama, data, tmp_path / word, optim=OptimConfig(steps=4, lr=2e-2),
                          reward=RewardConfig(objectives={word: {"type": "word_share", "word": word}}))
        dirs.append(moalign.train(cfg).adapter_dir)
    soup = AdapterSoup(ModelConfig(name=tiny_llama, lora_r=8), dirs)
    ids = torch.tensor([[6, 7, 8, 9, 10, 11]])

    def logits(model):
        with torch.no_grad():
            return model(ids).logits

    def endpoint(path):
        with peft_wrapping():
            return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(path)).eval()

    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with soup.mixed([1.0, 0.0]) as m:
        torch.testing.assert_close(logits(m), logits(endpoint(dirs[0])), atol=1e-5, rtol=1e-5)
    with soup.mixed([0.0, 1.0]) as m:
        torch.testing.assert_close(logits(m), logits(endpoint(dirs[1])), atol=1e-5, rtol=1e-5)
    with soup.mixed([0.0, 0.0]) as m:
        torch.testing.assert_close(logits(m), logits(base), atol=1e-6, rtol=1e-6)
    # halfway: the weight deltas (not A and B separately) are averaged
    merged = [endpoint(d).merge_and_unload().state_dict() for d in dirs]
    halfway = {k: v + 0.5 * (merged[0][k] - v) + 0.5 * (merged[1][k] - v) for k, v in base.state_dict().items()}
    expected_model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    expected_model.load_state_dict(halfway)
    with soup.mixed([0.5, 0.5]) as m:
        torch.testing.assert_close(logits(m), logits(expected_model), atol=1e-5, rtol=1e-5)


def test_resumed_search_trains_nothing_twice(tiny_llama, in_tmp, monkeypatch):
    from moalign.rl import trainer

    config = search_config(tiny_llama, in_tmp, "grid", steps=8)
    real = trainer.policy_update
    calls = {"n": 0}

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8 + 6:  # during the second run's step 6: Ctrl-C checkpoints step 5
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "policy_update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        moalign.search(config)
    client = MlflowClient(resolve_tracking_uri())
    parent = client.search_runs([client.get_experiment_by_name("search").experiment_id], "tags.`moalign.kind` = 'search'")[0]
    assert parent.info.status == "KILLED"
    first = {c.data.tags["moalign.key"]: c for c in children_of(client, parent.info.run_id)}
    assert first["train:0.5000,0.5000:s0"].info.status == "KILLED"

    calls["n"] = 0
    result = moalign.search(config)
    assert result.parent_run_id == parent.info.run_id
    # steps 6-8 of the interrupted run, then the third run's 8: nothing else was trained again
    assert calls["n"] == 3 + 8
    after = {c.data.tags["moalign.key"]: c for c in children_of(client, parent.info.run_id)}
    assert set(after) == set(first) | {"train:0.0000,1.0000:s0"}
    for key in ("base", "train:1.0000,0.0000:s0"):  # finished before: untouched
        assert after[key].info.end_time == first[key].info.end_time
    resumed = client.get_metric_history(after["train:0.5000,0.5000:s0"].info.run_id, "loss")
    assert sorted(m.step for m in resumed) == list(range(1, 9))
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


def test_soups_search_without_tracking_keeps_endpoints_apart(tiny_llama, in_tmp):
    config = search_config(tiny_llama, in_tmp, "soups", steps=8)
    config.train.tracking.enabled = False
    result = moalign.search(config)
    trained = result.runs[result.runs["role"] == "trained"]
    assert result.parent_run_id is None and len(set(trained["adapter_dir"])) == 2
    # each distinct policy once: the soups at (1, 0) and (0, 1) are the endpoints, not two more policies
    assert sorted(result.policies["role"]) == ["base", "soup", "trained", "trained"]
    assert result.policies.set_index("weights").loc["0.5000,0.5000", "role"] == "soup"
    assert not (in_tmp / "mlflow.db").exists()


def test_search_finishes_a_child_stopped_before_its_first_checkpoint(tiny_llama, in_tmp, monkeypatch):
    from moalign.rl import trainer

    config = search_config(tiny_llama, in_tmp, "grid", steps=4, weights=[[1, 0]])  # one checkpoint: step 4
    config.evaluate_base = False
    real = trainer.policy_update

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "policy_update", killed)
    with pytest.raises(KeyboardInterrupt):
        moalign.search(config)
    client = MlflowClient(resolve_tracking_uri())
    parent = client.search_runs([client.get_experiment_by_name("search").experiment_id], "tags.`moalign.kind` = 'search'")[0]
    (child,) = children_of(client, parent.info.run_id)
    # a hard kill (SIGKILL, power cut) during step 1 leaves the run RUNNING and no checkpoint behind
    client.update_run(child.info.run_id, status="RUNNING")
    assert not (Path(config.train.output_dir) / child.info.run_id / "checkpoint").exists()

    monkeypatch.setattr(trainer, "policy_update", real)
    result = moalign.search(config)
    assert result.parent_run_id == parent.info.run_id
    (after,) = children_of(client, parent.info.run_id)
    assert after.info.run_id == child.info.run_id and after.info.status == "FINISHED"  # the same run, started afresh
    assert after.data.metrics["train_steps"] == 4
    assert sorted(m.step for m in client.get_metric_history(after.info.run_id, "loss")) == [1, 2, 3, 4]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"

"""A tracking store cannot run code or swap a policy: what moalign reads back from MLflow it checks.
Anyone who can write to a shared store can rewrite tags and log new runs, so `trust_remote_code`
comes only from the caller, weights are the run's own (hashed at training), and a search reuses a
run only when its logged config hashes to the train_hash it claims."""
import json
import shutil

import pytest
import torch
from mlflow.tracking import MlflowClient

import moalign
from moalign.cli import main
from moalign.integrity import ADAPTER_HASH, folder_sha256
from moalign.pareto.config import SearchConfig
from moalign.pareto.search import run_search
from moalign.rl.config import TrackingConfig

from rl_helpers import tiny_config, write_prompts


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory, one_torch_thread):
    """Two finished runs of different seeds in one store (their adapters differ)."""
    tmp = tmp_path_factory.mktemp("trust")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    results = []
    for seed in (0, 1):
        cfg = tiny_config(tiny_llama, write_prompts(tmp / "p.jsonl"), tmp, tracking=TrackingConfig(tracking_uri=uri,
                                                                                                   experiment="trust"))
        cfg.optim.steps, cfg.seed = 2, seed
        results.append(moalign.train(cfg))
    return uri, results, tmp


def weights_of(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_every_finished_run_logs_its_adapters_hash(trained):
    uri, (a, b), _ = trained
    run = MlflowClient(uri).get_run(a.run_id)
    assert run.data.params[ADAPTER_HASH] == folder_sha256(a.adapter_dir)
    assert folder_sha256(a.adapter_dir) != folder_sha256(b.adapter_dir)


def test_a_rewritten_checkpoint_tag_cannot_swap_the_weights(trained):
    uri, (a, b), _ = trained
    client = MlflowClient(uri)
    honest = weights_of(moalign.load_policy(a.run_id, uri)[0])
    swapped = str(b.adapter_dir.parent / "checkpoint")  # the tag now points at run b's folder
    client.set_tag(a.run_id, "moalign.checkpoint_dir", swapped)
    try:
        loaded = weights_of(moalign.load_policy(a.run_id, uri)[0])  # run a's own logged artifact instead
        other = weights_of(moalign.load_policy(b.run_id, uri)[0])
    finally:
        client.set_tag(a.run_id, "moalign.checkpoint_dir", str(a.adapter_dir.parent / "checkpoint"))
    assert all(torch.equal(honest[k], loaded[k]) for k in honest)
    assert not all(torch.equal(honest[k], other[k]) for k in honest)


def test_a_logged_adapter_that_is_not_the_trained_one_is_refused(trained, tmp_path):
    uri, (a, _), _ = trained
    client = MlflowClient(uri)
    store = client.get_run(a.run_id).info.artifact_uri.removeprefix("file://")
    stored = f"{store}/adapter/adapter_model.safetensors"
    original = tmp_path / "original.safetensors"
    shutil.copy(stored, original)
    client.set_tag(a.run_id, "moalign.checkpoint_dir", "/nowhere/checkpoint")  # no local copy: the artifact is read
    try:
        with open(stored, "r+b") as f:  # one byte of the weights changed in the store
            f.seek(-8, 2)
            f.write(b"\x00\x01\x02\x03\x04\x05\x06\x07")
        with pytest.raises(moalign.MoalignError, match="does not hash to the moalign.adapter_sha256") as info:
            moalign.load_policy(a.run_id, uri)
        assert "\n" not in str(info.value)
    finally:
        shutil.copy(original, stored)
        client.set_tag(a.run_id, "moalign.checkpoint_dir", str(a.adapter_dir.parent / "checkpoint"))


def test_trust_remote_code_comes_from_the_caller_never_from_the_store(trained, tmp_path, capsys):
    from moalign.rl.config import ModelConfig

    uri = trained[0]
    model = MlflowClient(uri).get_run(trained[1][0].run_id).data.params["model.name"]
    cfg = tiny_config(model, write_prompts(tmp_path / "p.jsonl"), tmp_path,
                      tracking=TrackingConfig(tracking_uri=uri, experiment="trust"))
    cfg.model = ModelConfig(name=model, lora_r=8, trust_remote_code=True)  # a config that asks for it
    cfg.optim.steps = 1
    asking = moalign.train(cfg)
    with pytest.raises(moalign.MoalignError, match="sets model.trust_remote_code") as info:
        moalign.load_policy(asking.run_id, uri)
    assert "\n" not in str(info.value)
    assert moalign.load_policy(asking.run_id, uri, trust_remote_code=True)[0] is not None  # the caller's choice
    data = write_prompts(tmp_path / "q.jsonl")
    capsys.readouterr()
    assert main(["generate", "--run", asking.run_id, "--data", data, "--out", str(tmp_path / "g.jsonl"),
                 "--tracking-uri", uri, "--quiet"]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err and not (tmp_path / "g.jsonl").exists()
    assert main(["generate", "--run", asking.run_id, "--data", data, "--out", str(tmp_path / "g.jsonl"),
                 "--tracking-uri", uri, "--quiet", "--trust-remote-code"]) == 0


def test_a_run_is_reused_only_if_its_config_hashes_to_the_train_hash_it_claims(tiny_llama, tmp_path, one_torch_thread):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(tiny_llama, write_prompts(tmp_path / "p.jsonl"), tmp_path,
                      tracking=TrackingConfig(tracking_uri=uri, experiment="reuse"))
    cfg.optim.steps = 2
    first = run_search(SearchConfig(train=cfg, strategy="grid", weights=[[1.0]], name="first", n_bootstrap=100,
                                    evaluate_base=False))
    client = MlflowClient(uri)
    trained_id = first.runs["run_id"].iloc[0]
    # a forged claim: another config's run tagged with the hash the next search will look for
    forged_cfg = tiny_config(tiny_llama, write_prompts(tmp_path / "p.jsonl"), tmp_path,
                             tracking=TrackingConfig(tracking_uri=uri, experiment="reuse"))
    forged_cfg.optim.steps, forged_cfg.seed = 2, 7
    forged = moalign.train(forged_cfg)
    second_cfg = tiny_config(tiny_llama, write_prompts(tmp_path / "p.jsonl"), tmp_path,
                             tracking=TrackingConfig(tracking_uri=uri, experiment="reuse"))
    second_cfg.optim.steps, second_cfg.seed = 2, 3
    from moalign.pareto.children import train_hash
    from moalign.pareto.strategies.base import TrainUnit
    from moalign.pareto.strategies.grid import Grid

    second_search = SearchConfig(train=second_cfg, strategy="grid", weights=[[1.0]], name="second", n_bootstrap=100,
                                 evaluate_base=False)
    wanted = train_hash(Grid(second_search, ["good"], ["maximize"], [[1.0]]).train_config(TrainUnit((1.0,), 3)))
    client.set_tag(forged.run_id, "moalign.train_hash", wanted)
    client.set_tag(trained_id, "moalign.train_hash", wanted)  # the first search's run: also not seed 3
    second = run_search(second_search)
    assert not second.runs["reused"].any()  # trained afresh: neither claim holds
    assert second.runs["run_id"].iloc[0] not in (forged.run_id, trained_id)
    assert MlflowClient(uri).get_run(second.runs["run_id"].iloc[0]).data.tags["moalign.train_hash"] == wanted


def test_a_forged_pool_claim_is_not_reused(tiny_llama, tmp_path, one_torch_thread):
    """A run tagged with the pool_hash a search will look for, consistent with itself (its table
    hashes to its logged param) but not the pool it claims: the search samples its own."""
    import pandas as pd

    from moalign.integrity import POOL_HASH, file_sha256
    from moalign.pool import PoolSpec, pool_hash
    from moalign.rl.reward import MultiObjectiveReward
    from moalign.rl.trainer import load_data
    from moalign.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = tiny_config(tiny_llama, write_prompts(tmp_path / "p.jsonl"), tmp_path,
                      tracking=TrackingConfig(tracking_uri=uri, experiment="pools"))
    search = SearchConfig(train=cfg, strategy="best_of_n", weights=[[1.0]], name="bon", n_bootstrap=100,
                          options={"n": 2}, evaluate_base=False)
    reward = MultiObjectiveReward(cfg.reward)
    eval_records = load_data(cfg)[1]
    objectives = {**reward.all_objectives}
    wanted = pool_hash(cfg, PoolSpec("eval", 2, 1.0, 1.0, cfg.seed), objectives, eval_records)
    fake = tmp_path / "fake.parquet"
    pd.DataFrame({"prompt_index": [0, 0], "sample": [0, 1], "prompt": ["not the prompt"] * 2,
                  "completion": ["bad bad", "bad"], "good": [1.0, 1.0]}).to_parquet(fake)
    tracker = MlflowTracker("pools", uri)
    forged = tracker.start_run("pool:eval:s0", {"moalign.pool_hash": wanted, "moalign.role": "pool",
                                                "moalign.pool_path": str(fake)})
    tracker.log_params(forged, {POOL_HASH: file_sha256(fake), "pool.split": "eval", "pool.n": 2, "pool.temperature": 1.0,
                                "pool.top_p": 1.0, "pool.seed": cfg.seed, "pool.adapter": None})
    tracker.end_run(forged)
    result = run_search(search)
    parent = MlflowClient(uri).get_run(result.parent_run_id)
    assert "pool:eval:s0" not in json.loads(parent.data.tags.get("moalign.reused", "{}"))
    pools = MlflowClient(uri).search_runs([parent.info.experiment_id], "tags.`moalign.key` = 'pool:eval:s0'")
    assert {p.info.run_id for p in pools} - {forged}  # sampled its own

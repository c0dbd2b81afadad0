"""Sample-score-select strategies on the tiny model, end to end: rejection-sampling fine-tuning (two
iterations), Rewards-in-Context reusing the same pool, best-of-n; what load_policy, generate and
the report make of them."""
import copy
import json

import pytest
from mlflow.tracking import MlflowClient

import moalign
from moalign.cli import main
from moalign.models import format_prompt, load_tokenizer
from moalign.pareto.config import SearchConfig
from moalign.pareto.search import run_search
from moalign.pool import read_pool
from moalign.rl.config import RewardConfig, SamplingConfig, SupervisedConfig, TrackingConfig
from moalign.rl.rewards_in_context import ScoreScale, target_prompt
from moalign.selection import top_k
from moalign.tracking import MlflowTracker

from rl_helpers import tiny_config, write_prompts

W = [[1, 0], [0, 1]]
OPTIONS = {"n": 3, "temperature": 1.0}


@pytest.fixture(scope="module")
def searches(tiny_llama, tmp_path_factory, one_torch_thread):
    tmp = tmp_path_factory.mktemp("sample_select")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = tiny_config(tiny_llama, write_prompts(tmp / "prompts.jsonl"), tmp,
                      reward=RewardConfig(objectives={"good": {"type": "word_share"},
                                                      "bad": {"type": "word_share", "word": "bad"}},
                                          constraints=["verbosity <= 7"]),
                      sampling=SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=6),
                      supervised=SupervisedConfig(epochs=1, batch_size=4, lr=0.02),
                      tracking=TrackingConfig(tracking_uri=uri, experiment="select"))
    out = {"uri": uri, "tmp": tmp, "cfg": cfg}
    out["rejection"] = run_search(SearchConfig(train=cfg, strategy="rejection", weights=W, name="rejection",
                                               n_bootstrap=100, options={**OPTIONS, "iterations": 2}))
    out["ric"] = run_search(SearchConfig(train=cfg, strategy="rewards_in_context", weights=[[1, 0], [0.5, 0.5], [0, 1]],
                                         name="ric", n_bootstrap=100, options=OPTIONS))
    out["bon"] = run_search(SearchConfig(train=cfg, strategy="best_of_n", weights=W, name="bon", n_bootstrap=100,
                                         options=OPTIONS))
    out["ric-online"] = run_search(SearchConfig(train=cfg, strategy="rewards_in_context", weights=W, name="ric-online",
                                                n_bootstrap=100, options={**OPTIONS, "online": 1, "online_quantile": 0.5}))
    return out


def runs_by_key(uri, experiment="select"):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, {r.data.tags.get("moalign.key"): r for r in runs if "moalign.key" in r.data.tags}


def test_rejection_iterates_sample_select_fine_tune_and_only_its_last_iteration_is_on_the_front(searches):
    result = searches["rejection"]
    keys = set(result.runs["key"])
    assert keys == {"base", "rejection:1.0000,0.0000:s0", "rejection:0.0000,1.0000:s0"}
    assert result.policies["role"].tolist() == ["base", "rejection", "rejection"]
    client, runs = runs_by_key(searches["uri"])
    for w in ("1.0000,0.0000", "0.0000,1.0000"):
        first, pool, last = runs[f"rejection-iteration:{w}:i1:s0"], runs[f"pool:train:{w}:i1:s0"], runs[f"rejection:{w}:s0"]
        # iteration 2 samples its pool from iteration 1's policy and fine-tunes that policy on it
        assert pool.data.params["pool.adapter"].endswith(f"{first.info.run_id}/adapter")
        assert last.data.tags["moalign.init_adapter"].endswith(f"{first.info.run_id}/adapter")
        assert last.data.params["supervised.pool"] == pool.data.tags["moalign.pool_path"]
        assert last.data.params["supervised.enabled"] == "true" and last.data.params["supervised.select"] == "top_k"
        assert last.data.metrics["cost/trained_tokens"] > 0 and last.data.metrics["cost/train_steps"] >= 1
    # the parent's cost counts what its front rests on: every pool's samples and every fine-tune
    parent = client.get_run(result.parent_run_id).data.metrics
    pools = [r for k, r in runs.items() if k.startswith("pool:train") and "online" not in k]  # not RiC's online pool
    assert parent["cost/generated_tokens"] >= sum(p.data.metrics["cost/generated_tokens"] for p in pools) > 0


def test_a_second_search_reuses_the_pool_without_sampling_again(searches):
    client, runs = runs_by_key(searches["uri"])
    pool_id = runs["pool:train:s0"].info.run_id
    ric_parent = client.get_run(searches["ric"].parent_run_id)
    assert json.loads(ric_parent.data.tags["moalign.reused"])["pool:train:s0"] == pool_id
    pools = client.search_runs([ric_parent.info.experiment_id], "tags.`moalign.key` = 'pool:train:s0'")
    assert len(pools) == 1  # sampled once, by the first search


def test_the_reused_pool_is_not_sampled_again(searches, monkeypatch):
    """The same search config under another name: its pool and training come back from MLflow."""
    import moalign.pool

    def refuse(*args, **kwargs):
        raise AssertionError("the pool was sampled again")

    monkeypatch.setattr(moalign.pool, "build_pool", refuse)
    again = run_search(SearchConfig(train=searches["cfg"], strategy="rewards_in_context", weights=[[0.5, 0.5]],
                                    name="ric-again", n_bootstrap=100, options=OPTIONS))
    assert again.policies["role"].tolist() == ["base", "rewards_in_context"]


def test_a_rewards_in_context_policy_is_told_its_targets_as_training_stated_them(searches):
    uri, cfg = searches["uri"], searches["cfg"]
    client, runs = runs_by_key(uri)
    training = runs["rewards_in_context-train:s0"]
    adapter = training.data.tags["moalign.checkpoint_dir"].replace("/checkpoint", "/adapter")
    scale = ScoreScale.load(adapter)
    assert scale.names == ["good", "bad"]
    base = load_tokenizer(cfg.model.name)
    prompt = "the cat sat"
    for w in ([1, 0], [0.5, 0.5], [0, 1]):
        _, tokenizer = moalign.load_policy(f"select/ric@{w[0]},{w[1]}", uri)
        stated = target_prompt(prompt, scale.names, scale.targets(w))
        assert stated.startswith("[targets: good=") and stated.endswith(f"]\n{prompt}")
        assert format_prompt(tokenizer, prompt) == format_prompt(base, stated)  # what training formatted
    # training stated each sample's own scores the same way, through the same function
    from moalign.rl.reward import MultiObjectiveReward
    from moalign.rl.supervised import supervised_examples

    trained_cfg = copy.deepcopy(cfg)
    trained_cfg.supervised = SupervisedConfig(enabled=True, pool=training.data.params["supervised.pool"],
                                              select="rewards_in_context")
    prompts, _, _, fitted, _ = supervised_examples(trained_cfg, MultiObjectiveReward(trained_cfg.reward))
    assert fitted == scale and all(p.startswith("[targets: good=") and "\n" in p for p in prompts)
    # evaluation samples keep the plain prompts: fronts line policies up by them
    samples = MlflowTracker(None, uri).read_table(runs["rewards_in_context:0.5000,0.5000:s0"].info.run_id,
                                                  "eval_samples.json")
    assert len(samples) and not samples["prompt"].str.startswith("[targets").any()


def test_generate_takes_targets_for_a_rewards_in_context_policy_and_refuses_unknown_objectives(searches, tmp_path, capsys):
    uri = searches["uri"]
    data = write_prompts(tmp_path / "p.jsonl")
    assert main(["generate", "--run", "select/ric@0.5,0.5", "--data", data, "--out", str(tmp_path / "a.jsonl"),
                 "--targets", "good=1.5,bad=-0.5", "--tracking-uri", uri, "--quiet"]) == 0
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 10
    for targets, message in (("good=1,ugly=2", "unknown objective 'ugly'"), ("good=1", "no score for 'bad'"),
                             ("good=x,bad=1", "is not a number")):
        capsys.readouterr()
        code = main(["generate", "--run", "select/ric@0.5,0.5", "--data", data, "--out", str(tmp_path / "b.jsonl"),
                     "--targets", targets, "--tracking-uri", uri, "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert main(["generate", "--run", "select/rejection@1,0", "--data", data, "--out", str(tmp_path / "c.jsonl"),
                 "--targets", "good=1,bad=1", "--tracking-uri", uri, "--quiet"]) == 2
    assert not (tmp_path / "b.jsonl").exists() and not (tmp_path / "c.jsonl").exists()


def test_best_of_n_answers_each_held_out_prompt_with_its_chosen_pool_sample(searches):
    uri, cfg = searches["uri"], searches["cfg"]
    client, runs = runs_by_key(uri)
    pool = read_pool(runs["pool:eval:s0"].data.tags["moalign.pool_path"])
    assert len(pool) == 3 * len(pool["prompt_index"].unique())
    tracker = MlflowTracker(None, uri)
    for w in W:
        key = f"best_of_n:{w[0]:.4f},{w[1]:.4f}:s0"
        samples = tracker.read_table(runs[key].info.run_id, "eval_samples.json")
        expected = top_k(pool, cfg.reward, w, 1, fallback=True)
        assert samples["completion"].tolist() == expected["completion"].tolist()
        assert runs[key].data.metrics["best_of_n/oracle"] == 0.0  # word_share and verbosity read no reference
    # reference-free: a real policy, n samples a prompt, the best feasible kept
    model, _ = moalign.load_policy("select/bon@1,0", uri)
    answers = model.answer([{"prompt": "the cat sat"}, {"prompt": "a dog was"}], max_new_tokens=6)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert searches["bon"].policies.set_index("role").loc["best_of_n", "oracle"].tolist() == [False, False]


def test_best_of_n_with_a_reference_based_objective_is_an_oracle_and_no_policy(searches, tmp_path):
    oracle_cfg = copy.deepcopy(searches["cfg"])
    oracle_cfg.reward = RewardConfig(objectives={"rouge_l": {}, "bad": {"type": "word_share", "word": "bad"}})
    oracle_cfg.tracking.experiment = "oracle"
    oracle_cfg.optim.steps = 2
    result = run_search(SearchConfig(train=oracle_cfg, strategy="best_of_n", weights=W, name="oracle",
                                     n_bootstrap=100, options=OPTIONS))
    run_search(SearchConfig(train=oracle_cfg, strategy="soups", weights=W, name="soups", n_bootstrap=100))
    table = result.policies.set_index("role")
    assert table.loc["best_of_n", "oracle"].tolist() == [True, True] and not table.loc["base", "oracle"]
    client = MlflowClient(searches["uri"])
    assert client.get_run(result.parent_run_id).data.tags["moalign.oracle"] == "true"
    with pytest.raises(moalign.MoalignError, match="oracle ceiling") as info:
        moalign.load_policy("oracle/oracle@1,0", searches["uri"])
    assert "\n" not in str(info.value)
    # the report keeps it out of every comparison
    from moalign.reports.build import build_report

    build_report("oracle", tmp_path / "report", tracking_uri=searches["uri"])
    text = (tmp_path / "report" / "report.md").read_text()
    assert "oracle: an oracle ceiling" in text and "best_of_n (oracle ceiling)" in text
    assert not any(" vs " in line and "oracle" in line for line in text.splitlines())


def test_rewards_in_context_online_round_samples_at_the_fronts_targets_and_continues_on_the_same_scale(searches):
    """RiC's online stage: a pool sampled from the first run's policy asked for each weight vector's
    targets in turn, then that policy fine-tuned on both pools, stated on the first run's scale."""
    import numpy as np

    client, runs = runs_by_key(searches["uri"])
    parent = client.get_run(searches["ric-online"].parent_run_id)
    reused = json.loads(parent.data.tags["moalign.reused"])
    first = runs["rewards_in_context-train:s0"]
    assert reused["rewards_in_context-train:s0"] == first.info.run_id  # the offline run is the plain search's
    first_adapter = first.data.tags["moalign.checkpoint_dir"].replace("/checkpoint", "/adapter")
    pool = runs["pool:train:online1:s0"]
    assert pool.data.params["pool.ask"] == "1.0000,0.0000;0.0000,1.0000"
    assert pool.data.params["pool.adapter"] == first_adapter
    table = read_pool(pool.data.tags["moalign.pool_path"])
    assert (table["asked"] == np.where(table["prompt_index"] % 2 == 0, "1.0000,0.0000", "0.0000,1.0000")).all()
    assert not table["prompt"].str.startswith("[targets").any()  # plain prompts: training states what each got
    online = runs["rewards_in_context-train:online1:s0"]
    assert online.data.tags["moalign.init_adapter"] == first_adapter
    assert json.loads(online.data.params["supervised.online_pools"]) == [pool.data.tags["moalign.pool_path"]]
    assert 0 < online.data.metrics["examples/online"] <= len(table)
    online_adapter = online.data.tags["moalign.checkpoint_dir"].replace("/checkpoint", "/adapter")
    assert ScoreScale.load(online_adapter) == ScoreScale.load(first_adapter)
    # the front is the online round's policy
    result = searches["ric-online"]
    assert result.policies["role"].tolist() == ["base", "rewards_in_context", "rewards_in_context"]
    for run_id in result.runs.loc[result.runs["role"] == "rewards_in_context", "run_id"]:
        assert json.loads(client.get_run(run_id).data.tags["moalign.endpoints"]) == [online.info.run_id]


def test_an_online_pool_states_each_prompt_its_vectors_targets(searches, monkeypatch):
    import moalign.pool as pool_module
    from moalign.rl.trainer import load_data

    _, runs = runs_by_key(searches["uri"])
    adapter = runs["rewards_in_context-train:s0"].data.tags["moalign.checkpoint_dir"].replace("/checkpoint", "/adapter")
    scale, cfg = ScoreScale.load(adapter), searches["cfg"]
    seen = {}
    real = pool_module._sample

    def spy(model, tokenizer, train_cfg, spec, records, rows, seed, objectives):
        seen[tuple(rows)] = format_prompt(tokenizer, "the cat sat")
        return real(model, tokenizer, train_cfg, spec, records, rows, seed, objectives)

    monkeypatch.setattr(pool_module, "_sample", spy)
    records = load_data(cfg)[0][:3]
    spec = pool_module.PoolSpec("train", 1, 1.0, 1.0, 0, adapter, "1.0000,0.0000;0.2500,0.7500")
    frame = pool_module.build_pool(cfg, spec, records, {"good": moalign.get_objective("word_share")},
                                   searches["tmp"] / "asked-pool", progress=False)
    base = load_tokenizer(cfg.model.name)
    assert seen == {(0, 2): format_prompt(base, target_prompt("the cat sat", scale.names, scale.targets([1, 0]))),
                    (1,): format_prompt(base, target_prompt("the cat sat", scale.names, scale.targets([0.25, 0.75])))}
    assert frame["asked"].tolist() == ["1.0000,0.0000", "0.2500,0.7500", "1.0000,0.0000"]
    bad = pool_module.PoolSpec("train", 1, 1.0, 1.0, 0, adapter, "1.0,0.0,0.0")
    with pytest.raises(moalign.MoalignError, match=r"pool.ask: \(1.0, 0.0, 0.0\) has 3 weights; the adapter states 2"):
        pool_module.build_pool(cfg, bad, records, {}, searches["tmp"] / "bad-pool", progress=False)


def test_online_selection_keeps_of_each_source_the_samples_near_its_front():
    import numpy as np
    import pandas as pd

    from moalign.rl.reward import MultiObjectiveReward
    from moalign.rl.supervised import _near_front

    reward = MultiObjectiveReward(RewardConfig(objectives={"good": {"type": "word_share"},
                                                           "bad": {"type": "word_share", "word": "bad"}}))
    frame = pd.DataFrame({"good": [0.0, 0.1, 0.2, 0.9, 0.1], "bad": [0.0, 0.1, 0.8, 0.2, 0.05]})
    scale = ScoreScale.fit(frame.to_numpy(), ["good", "bad"], ["maximize", "maximize"])
    kept = _near_front(frame, reward, scale, 0.7)
    assert kept.index.tolist() == [2, 3]  # the only ones above the 70th percentile of one objective
    assert _near_front(frame, reward, scale, 0.0).index.tolist() == list(range(5))
    assert np.isfinite(kept.to_numpy()).all()

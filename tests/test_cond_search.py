"""A conditioned search from a pipeline YAML: one conditioned training run, one evaluation child per
weight vector (no more training), and each child usable by load_policy / moalign generate, told
its weights through the tokenizer's chat template."""
import json

import pytest
from mlflow.tracking import MlflowClient

import moalign
from moalign.generation import generate_rows
from moalign.models import format_prompt
from moalign.pipeline import load_pipeline
from moalign.policies import find_policy
from moalign.tracking import MlflowTracker

from rl_helpers import write_prompts

PIPELINE = """
experiment: cond
train:
  model: {{name: {model}, lora_r: 8}}
  data: {{train: {data}, max_eval_prompts: 1}}
  sampling: {{num_generations: 2, prompts_per_step: 2, max_new_tokens: 4}}
  reward:
    objectives: {{good: {{type: word_share, word: good}}, bad: {{type: word_share, word: bad}}}}
  algorithm: {{name: rloo, kl_coef: 0.0}}
  optim: {{steps: 2, lr: 0.02}}
  conditioning: {{draw: dirichlet, alpha: 0.5}}
  tracking: {{tracking_uri: {uri}, samples_every: 2}}
  output_dir: {runs}
  checkpoint_every: 2
  progress: false
searches:
  - {{strategy: conditioned, name: cond, weights: [[1, 0], [0.5, 0.5], [0, 1]], evaluate_base: false,
     n_bootstrap: 100}}
report: {{enabled: false}}
"""


def test_a_conditioned_search_trains_once_and_evaluates_every_weight_vector(tiny_llama, in_tmp):
    uri = f"sqlite:///{in_tmp / 'mlflow.db'}"
    path = in_tmp / "pipeline.yaml"
    path.write_text(PIPELINE.format(model=tiny_llama, data=write_prompts(in_tmp / "prompts.jsonl"), uri=uri,
                                    runs=in_tmp / "runs"))
    _, (search,) = load_pipeline(path)
    result = moalign.search(search)

    runs = dict(zip(result.runs["key"], result.runs["run_id"]))
    keys = ["conditioned:1.0000,0.0000:s0", "conditioned:0.5000,0.5000:s0", "conditioned:0.0000,1.0000:s0"]
    assert sorted(runs) == sorted(keys)  # the training run is no point of the front
    assert result.policies["role"].tolist() == ["conditioned"] * 3
    client = MlflowClient(uri)
    trained = client.search_runs([client.get_experiment_by_name("cond").experiment_id],
                                 "tags.`moalign.role` = 'conditioned-train'")
    assert len(trained) == 1 and trained[0].data.params["conditioning.enabled"].lower() == "true"
    assert "conditioning/weight/good" in trained[0].data.metrics
    samples = MlflowTracker(None, uri).read_table(trained[0].info.run_id, "samples.json")
    assert ((samples["w_good"] + samples["w_bad"]).round(6) == 1).all()  # each sample's weights, beside its prompt
    for key in keys:
        child = client.get_run(runs[key])
        assert json.loads(child.data.tags["moalign.endpoints"]) == [trained[0].info.run_id]
        assert child.data.metrics["cost/train_steps"] == 0  # evaluated, not trained
    # the report reads the same front back: the training run is no policy there either
    from moalign.reports.collect import load_search

    parent = client.get_run(result.parent_run_id)
    read_back = load_search(MlflowTracker("cond", uri), parent)
    assert read_back.policies["role"].tolist() == ["conditioned"] * 3

    record = find_policy("cond/cond@0.5,0.5", uri)
    assert record.role == "conditioned" and record.weights == [0.5, 0.5]
    assert record.sources == [trained[0].info.run_id]
    model, tokenizer = moalign.load_policy("cond/cond@0.5,0.5", uri)
    assert format_prompt(tokenizer, "the cat") == "[weights: good=0.50 bad=0.50]\nthe cat"
    # what `moalign generate` writes: the prompt itself, the weights went through the template
    rows = generate_rows(model, tokenizer, [{"prompt": "the cat sat"}], search.train.sampling, progress=False)
    assert [r["prompt"] for r in rows] == ["the cat sat"] and isinstance(rows[0]["completion"], str)


def test_the_strategy_trains_once_per_seed_then_evaluates_every_weight_vector():
    from moalign.pareto.config import SearchConfig
    from moalign.pareto.strategies import get_strategy
    from moalign.pareto.strategies.base import EvalUnit, TrainUnit
    from moalign.rl.config import RewardConfig, TrainConfig

    train = TrainConfig(reward=RewardConfig(objectives={"good": {"type": "word_share"}, "bad": {"type": "word_share", "word": "bad"}}))
    config = SearchConfig(train=train, strategy="conditioned", weights=[[1, 0], [0, 1]], seeds=[0, 1])
    strategy = get_strategy("conditioned")(config, ["good", "bad"], ["maximize"] * 2, [[1.0, 0.0], [0.0, 1.0]])
    first = strategy.next_units({})
    assert [(type(u), u.key) for u in first] == [(TrainUnit, "conditioned-train:s0"), (TrainUnit, "conditioned-train:s1")]
    assert strategy.train_config(first[0]).conditioning.enabled and not config.train.conditioning.enabled
    done = {u.key: {"key": u.key, "role": u.role, "run_id": f"run{u.seed}", "adapter_dir": f"dir{u.seed}"} for u in first}
    second = strategy.next_units(done)
    assert [u.key for u in second] == ["conditioned:1.0000,0.0000:s0", "conditioned:0.0000,1.0000:s0",
                                       "conditioned:1.0000,0.0000:s1", "conditioned:0.0000,1.0000:s1"]
    assert all(isinstance(u, EvalUnit) and u.sources == (f"run{u.seed}",) for u in second)
    done.update({u.key: {"key": u.key, "role": u.role} for u in second})
    assert strategy.next_units(done) == []
    assert [r["key"] for r in strategy.front_rows(list(done.values()))] == [u.key for u in second]


def test_a_bad_conditioning_section_fails_the_pipeline_before_anything_runs(tiny_llama, tmp_path):
    from moalign import ConfigError

    path = tmp_path / "pipeline.yaml"
    path.write_text(f"train:\n  model: {{name: {tiny_llama}}}\n  data: {{train: {write_prompts(tmp_path / 'p.jsonl')}}}\n"
                    "  reward: {objectives: [chrf, verbosity]}\n  conditioning: {alpha: [1, 1, 1]}\n"
                    "searches: [{strategy: conditioned}]\nreport: {enabled: false}\n")
    with pytest.raises(ConfigError, match=r"conditioning.alpha: got 3 values for 2 objectives") as info:
        load_pipeline(path)
    assert "\n" not in str(info.value)

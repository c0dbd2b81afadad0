"""A `strategy: mixing` search end to end on the tiny model: endpoints trained as soups train
them, the weight vector between them evaluated as a decoding-time mix, and load_policy rebuilding
that mix so that it answers the held-out prompts exactly as its evaluation recorded."""
import json
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

import moalign
from moalign.config import from_dict, parse_yaml
from moalign.export import export_policy
from moalign.generation import generate_file, generate_rows
from moalign.pareto.config import SearchConfig
from moalign.tracking import MlflowTracker, resolve_tracking_uri

from rl_helpers import PROMPTS, write_prompts

SEARCH = """
strategy: mixing
name: mix
weights: {{method: das-dennis, n_partitions: 2}}
evaluate_base: false
n_bootstrap: 100
train:
  model: {{name: {model}, lora_r: 4}}
  data: {{train: {data}}}
  sampling: {{num_generations: 2, prompts_per_step: 2, max_new_tokens: 4, eval_num_generations: 2}}
  reward:
    objectives: {{good: {{type: word_share, word: good}}, bad: {{type: word_share, word: bad}}}}
  algorithm: {{name: rloo, kl_coef: 0.0}}
  optim: {{steps: 2, lr: 0.05}}
  tracking: {{enabled: true, experiment: mixing, samples_every: 0}}
  output_dir: {out}
  checkpoint_every: 100
  progress: false
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mixing_search_evaluates_mixes_that_load_policy_rebuilds(tiny_llama, in_tmp):
    text = SEARCH.format(model=tiny_llama, data=write_prompts(in_tmp / "prompts.jsonl"), out=in_tmp / "runs")
    config = from_dict(SearchConfig, parse_yaml(text))
    result = moalign.search(config)
    client = MlflowClient(resolve_tracking_uri())
    children = {c.data.tags["moalign.key"]: c for c in client.search_runs(
        [client.get_experiment_by_name("mixing").experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")}
    # the endpoints are trained (the policies at one-hot weights); only the middle one is a mix
    assert sorted(children) == ["mix:0.5000,0.5000:s0", "train:0.0000,1.0000:s0", "train:1.0000,0.0000:s0"]
    mix = children["mix:0.5000,0.5000:s0"]
    assert mix.data.tags["moalign.role"] == "mix" and mix.info.status == "FINISHED"
    assert json.loads(mix.data.tags["moalign.endpoints"]) == [
        children["train:1.0000,0.0000:s0"].info.run_id, children["train:0.0000,1.0000:s0"].info.run_id]
    assert sorted(result.policies["role"]) == ["mix", "trained", "trained"]

    # rebuilt by reference, the mix answers the held-out prompts as its evaluation did (same seed),
    # through load_policy and through `moalign generate`
    recorded = MlflowTracker(None).read_table(mix.info.run_id, "eval_samples.json")
    prompts = list(dict.fromkeys(recorded["prompt"]))
    assert prompts and set(prompts) <= set(PROMPTS) and any(recorded["completion"])
    held_out = in_tmp / "held_out.jsonl"
    held_out.write_text("\n".join(json.dumps({"prompt": p}) for p in prompts))
    generate_file("mixing/mix@0.5,0.5", held_out, in_tmp / "out.jsonl", progress=False)
    rows = [json.loads(line) for line in (in_tmp / "out.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in rows] == list(recorded["completion"])
    model, tokenizer = moalign.load_policy(mix.info.run_id)
    again = generate_rows(model, tokenizer, [{"prompt": p} for p in prompts], config.train.sampling,
                          config.train.model.use_chat_template, seed=0, progress=False)
    assert [r["completion"] for r in again] == list(recorded["completion"])
    # every decoded token ran both endpoints: twice the prompt and completion tokens went through the network
    prompt_tokens = sum(len(tokenizer(p)["input_ids"]) for p in recorded["prompt"])
    cost = mix.data.metrics
    assert cost["cost/forward_tokens"] == 2 * (prompt_tokens + cost["cost/generated_tokens"]) > 0
    with pytest.raises(moalign.MoalignError, match="no single set of weights"):  # nothing to export
        export_policy(mix.info.run_id, in_tmp / "export")
    assert not (in_tmp / "export").exists()
    from moalign.mlflow_model import register_policy

    with pytest.raises(moalign.MoalignError, match="no single set of weights"):  # nor to register
        register_policy(mix.info.run_id, "mixed")

    # a soups search over the same training config reuses the mixing search's endpoints, untrained
    soups = moalign.search(replace(config, strategy="soups", name="soups"))
    trained = soups.runs[soups.runs["role"] == "trained"].set_index("key")
    assert sorted(trained.index) == ["train:0.0000,1.0000:s0", "train:1.0000,0.0000:s0"] and trained["reused"].all()
    assert trained["run_id"].to_dict() == {k: children[k].info.run_id for k in trained.index}

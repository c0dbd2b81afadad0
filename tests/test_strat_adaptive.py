"""The adaptive strategy: where it puts the next weight vector (synthetic fronts), and a tiny search
that stays within its budget of training steps, warm-starts from the nearest policy, records its
cost and, run again, finds everything done."""
import io

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import moalign
from moalign.errors import ConfigError
from moalign.pareto.config import SearchConfig
from moalign.pareto.strategies.adaptive import pick_next_weight
from moalign.rl.config import OptimConfig, RewardConfig, SamplingConfig, TrackingConfig
from moalign.tracking import read_artifact_text, resolve_tracking_uri

from rl_helpers import tiny_config, write_prompts

UP = ["maximize", "maximize"]
W3 = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]


def test_the_next_weight_splits_the_largest_gap_of_the_front():
    # (0.5, 0.5) landed near the first extreme: the gap is on the second objective's side
    assert pick_next_weight(W3, [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], UP).tolist() == [0.25, 0.75]
    # near the second extreme: the other side
    assert pick_next_weight(W3, [[1.0, 0.0], [0.1, 0.9], [0.0, 1.0]], UP).tolist() == [0.75, 0.25]
    # the same front when the objectives are minimised is the mirror image
    assert pick_next_weight(W3, [[0.0, 1.0], [0.1, 0.9], [1.0, 0.0]], ["minimize"] * 2).tolist() == [0.25, 0.75]


def test_gaps_are_measured_on_the_front_in_scaled_units():
    # a dominated policy is no end of a gap: (0.5, 0.5) scores below (1, 0) on both, so the front's
    # neighbours are (1, 0)-(0.25, 0.75), scaled 0.85 apart, and (0.25, 0.75)-(0, 1), 0.40 apart
    W = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.25, 0.75]]
    scores = [[1.0, 1.0], [0.5, 0.5], [0.0, 2.0], [0.4, 1.9]]
    assert pick_next_weight(W, scores, UP).tolist() == [0.625, 0.375]  # between (1,0) and (0.25,0.75)
    # scale: objective 2 in units 1000x larger changes nothing
    big = np.array([[1.0, 0.0], [0.9, 100.0], [0.0, 1000.0]])
    assert pick_next_weight(W3, big, UP).tolist() == [0.25, 0.75]


def test_a_dominated_midpoint_does_not_end_the_search():
    # (0.5, 0.5) came out dominated by (1, 0): the front's only edge is (1,0)-(0,1), whose midpoint
    # is trained; the segments either side of it are next, the wider one (scaled) first
    scores = [[1.0, 0.2], [0.2, 0.1], [0.1, 1.0]]  # scaled: 0.90 from (1, 0), 1.01 from (0, 1)
    assert pick_next_weight(W3, scores, UP).tolist() == [0.25, 0.75]
    # deeper: 0.75 and 0.25 came out dominated too: the widest of the four quarter segments
    W5 = W3 + [[0.75, 0.25], [0.25, 0.75]]
    s5 = scores + [[0.5, 0.15], [0.05, 0.5]]  # scaled gaps 0.53, 0.32, 0.47 and 0.56 (0.125 between 0.25 and 0)
    assert pick_next_weight(W5, s5, UP).tolist() == [0.125, 0.875]
    # a front refined down to min_weight_gap still ends the search
    assert pick_next_weight(W5, s5, UP, min_weight_gap=0.3) is None


def test_three_objectives_split_the_longest_delaunay_edge_and_stop_when_weights_are_close():
    W = np.eye(3)
    # the first two extremes are farthest apart (scaled): their midpoint
    assert pick_next_weight(W, [[1, 0, 0], [0, 1, 0], [0.5, 0.5, 1]], ["maximize"] * 3).tolist() == [0.5, 0.5, 0]
    assert pick_next_weight(W, [[1, 0.5, 0.5], [0, 1, 0], [0, 0, 1]], ["maximize"] * 3).tolist() == [0, 0.5, 0.5]
    # neighbours closer than min_weight_gap are not split
    assert pick_next_weight([[1, 0], [0.96, 0.04]], [[1, 0], [0.5, 0.5]], UP, min_weight_gap=0.0625) is None


def adaptive_config(tiny_llama, tmp, budget):
    train = tiny_config(tiny_llama, write_prompts(tmp / "prompts.jsonl"), tmp, optim=OptimConfig(steps=2, lr=2e-2),
                        sampling=SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=4),
                        reward=RewardConfig(objectives={w: {"type": "word_share", "word": w} for w in ("good", "bad")}),
                        tracking=TrackingConfig(enabled=True, experiment="adaptive", samples_every=0, log_adapter=False))
    train.data.max_eval_prompts = 2
    return SearchConfig(train=train, strategy="adaptive", options={"budget_steps": budget, "warm_steps": 1},
                        name="adaptive", evaluate_base=False, n_bootstrap=100)


def test_adaptive_search_stays_within_budget_warm_starts_and_resumes(tiny_llama, in_tmp, monkeypatch):
    from moalign.rl import trainer

    result = moalign.search(adaptive_config(tiny_llama, in_tmp, budget=5))  # extremes 2 x 2 steps, then 1
    client = MlflowClient(resolve_tracking_uri())
    exp = client.get_experiment_by_name("adaptive").experiment_id
    children = {c.data.tags["moalign.key"]: c for c in client.search_runs(
        [exp], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")}
    keys = list(result.runs["key"])
    assert keys[:3] == ["train:1.0000,0.0000:s0", "train:0.0000,1.0000:s0", "train:0.5000,0.5000:s0"]
    assert len(keys) == 3 and set(keys) == set(children)  # a fourth would need 6 steps
    steps = {k: c.data.metrics["cost/train_steps"] for k, c in children.items()}
    assert sum(steps.values()) == 5 and steps[keys[2]] == 1
    # the midpoint continued from an extreme's adapter (nearest: a tie, the first trained)
    first = result.runs.set_index("key").loc[keys[0], "adapter_dir"]
    assert children[keys[2]].data.tags["moalign.init_adapter"] == first
    assert children[keys[2]].data.params["model.init_adapter"] == first  # in its config, so in its train_hash
    assert client.get_run(result.parent_run_id).data.params["options.budget_steps"] == "5"
    # every child held out the validation split from training and was scored on it (what the search decides on)
    for child in children.values():
        assert child.data.params["data.validation_fraction"] == "0.2"
        assert {"val/good", "val/bad", "eval/good", "eval/bad"} <= set(child.data.metrics)
    assert {"val/good", "val/bad"} <= set(result.runs.columns)
    parent = client.get_run(result.parent_run_id).data.metrics
    assert parent["cost/train_steps"] == parent["cost/new_train_steps"] == 5
    assert parent["cost/generated_tokens"] == sum(c.data.metrics["cost/generated_tokens"] for c in children.values())
    front = pd.read_csv(io.StringIO(read_artifact_text(client, result.parent_run_id, "front.csv")))
    assert {"train_steps", "generated_tokens", "forward_tokens", "wall_time_s"} <= set(front.columns)
    assert front["train_steps"].sum() == 5

    # run again: the same parent, the same next weights follow from the finished children, nothing trains
    calls = []
    monkeypatch.setattr(trainer, "train", lambda *a, **k: calls.append(a))
    again = moalign.search(adaptive_config(tiny_llama, in_tmp, budget=5))
    assert again.parent_run_id == result.parent_run_id and list(again.runs["key"]) == keys and calls == []


def test_adaptive_options_in_a_pipeline_are_checked_against_its_train_section(tmp_path):
    from moalign.pipeline import load_pipeline

    path = tmp_path / "p.yaml"
    data = write_prompts(tmp_path / "prompts.jsonl")
    path.write_text(f"train: {{data: {{train: {data}}}, optim: {{steps: 10}}, reward: {{objectives: {{verbosity: {{}}, "
                    f"rouge1: {{}}}}}}}}\nsearches: [{{strategy: adaptive, options: {{budget_steps: 15}}}}]\n"
                    f"report: {{enabled: false}}\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert str(info.value).startswith(f"{path}: searches[0].options.budget_steps: 15 cannot train the 2 extremes")
    assert "\n" not in str(info.value)
    path.write_text(path.read_text().replace("budget_steps: 15", "budget_steps: 50, warm_steps: 5"))
    _, (search,) = load_pipeline(path)
    assert (search.strategy, search.options, search.train.optim.steps) == ("adaptive", {"budget_steps": 50, "warm_steps": 5}, 10)

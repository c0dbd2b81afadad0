"""A search's settings fail when the config is built or when the search starts, never after training."""

import pytest

import moalign
from moalign import ConfigError
from moalign.pareto.config import SearchConfig
from moalign.rl.config import DataConfig, OptimConfig, RewardConfig, TrackingConfig

from rl_helpers import tiny_config, write_prompts

OBJECTIVES = {"good": {"type": "word_share", "word": "good"}, "bad": {"type": "word_share", "word": "bad"}}


@pytest.mark.parametrize("fields,message", [
    ({"reference_point": "foo"}, r"reference_point must be nadir\|base\|\{objective: value\}, got 'foo'"),
    ({"reference_point": {"good": "high"}}, r"reference_point.good: expected a number, got 'high'"),
    ({"reference_point": "base", "evaluate_base": False}, "reference_point 'base' needs evaluate_base: true"),
    ({"seeds": []}, r"seeds: expected a non-empty list of integers, got \[\]"),
    ({"seeds": [0, 1, 0]}, r"seeds: \[0, 1, 0\] repeats a seed"),
    ({"n_bootstrap": 10}, "n_bootstrap: expected an integer >= 100, got 10"),
])
def test_bad_search_fields_fail_when_the_config_is_built(fields, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig(**fields)


def train_config(tiny_llama, tmp, **data):
    prompts = write_prompts(tmp / "prompts.jsonl")
    config = tiny_config(tiny_llama, prompts, tmp, optim=OptimConfig(steps=2), reward=RewardConfig(objectives=OBJECTIVES),
                         tracking=TrackingConfig(enabled=True, experiment="cfg"))
    config.data = DataConfig(train=prompts, **data)
    return config


def test_unknown_objective_in_the_reference_point_fails_before_anything_runs(tiny_llama, in_tmp):
    config = SearchConfig(train=train_config(tiny_llama, in_tmp), reference_point={"good": 0.0, "bda": 0.0})
    with pytest.raises(ConfigError, match=r"search.reference_point: 'bda' is not an objective of the front \(good, bad\)"):
        moalign.search(config)
    assert not (in_tmp / "mlflow.db").exists()  # no run was started, nothing trained or loaded


def test_every_training_seed_is_evaluated_on_the_same_held_out_prompts(tiny_llama, in_tmp):
    # the held-out split follows data.split_seed, not the training seed: seeds stay comparable
    from moalign.rl.trainer import load_data

    cfg = train_config(tiny_llama, in_tmp)
    held_out = []
    for seed in (0, 1, 2):
        cfg.seed = seed
        held_out.append([r["prompt"] for r in load_data(cfg)[1]])
    assert held_out[0] == held_out[1] == held_out[2]
    cfg.data.split_seed = 1
    assert [r["prompt"] for r in load_data(cfg)[1]] != held_out[0]


def test_a_validation_split_is_taken_from_the_training_prompts_and_never_trained_on(tiny_llama, in_tmp):
    from moalign.data import load_prompt_records
    from moalign.rl.runs import load_data, load_validation

    cfg = train_config(tiny_llama, in_tmp)
    train, held_out = (set(r["prompt"] for r in part) for part in load_data(cfg))
    assert load_validation(cfg) == []
    cfg.data.validation_fraction = 0.25
    trained, held_again = (set(r["prompt"] for r in part) for part in load_data(cfg))
    validation = {r["prompt"] for r in load_validation(cfg)}
    assert held_again == held_out  # the front's held-out prompts do not move
    assert validation and trained | validation == train and not trained & validation and not validation & held_out
    assert len(validation) == round(0.25 * len(train))
    everything = {r["prompt"] for r in load_prompt_records(cfg.data.train)}
    assert trained | validation | held_out == everything
    cfg.data.validation_fraction = 0.99  # would leave nothing to train on: one line naming the key
    with pytest.raises(moalign.MoalignError, match=r"cannot hold out \d+ of \d+ distinct prompts \(data.validation_fraction\)"):
        load_data(cfg)
    with pytest.raises(ConfigError, match=r"data.validation_fraction must be in \[0, 1\)"):
        DataConfig(train="x.jsonl", validation_fraction=1.0)

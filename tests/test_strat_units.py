"""Strategies as pure planners: the registry, options validated by the strategy, and what grid and
soups ask for given the finished children (no model needed)."""
import numpy as np
import pytest

from moalign.errors import ConfigError, MoalignError
from moalign.pareto.config import SearchConfig
from moalign.pareto.strategies import STRATEGIES, get_strategy
from moalign.pareto.strategies.base import EvalUnit, TrainUnit
from moalign.rl.config import RewardConfig, TrainConfig

NAMES = ["good", "bad"]


def search(strategy, **kw):
    train = TrainConfig(reward=RewardConfig(objectives={n: {"type": "word_share", "word": n} for n in NAMES}))
    return SearchConfig(train=train, strategy=strategy, **kw)


def row(unit, run_id):
    return {"key": unit.key, "role": unit.role, "seed": unit.seed, "run_id": run_id, "weights": ",".join(
        f"{w:.4f}" for w in unit.weights), "adapter_dir": f"/runs/{run_id}/adapter", "train_steps": 20}


def test_registry_names_and_unknown_strategy_is_one_line():
    assert list(STRATEGIES)[:3] == ["grid", "soups", "adaptive"]
    assert get_strategy("grid").name == "grid"
    with pytest.raises(ConfigError) as info:
        search("nosuch")
    assert str(info.value).startswith("strategy must be one of grid, soups, adaptive") and "\n" not in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({"budget": 3}, "unknown key 'options.budget'; known keys: budget_steps, min_weight_gap, validation_fraction, warm_steps"),
    ({}, "options.budget_steps: the adaptive strategy needs an integer budget"),
    ({"budget_steps": "lots"}, "options.budget_steps: expected an integer, got 'lots'"),
    ({"budget_steps": 30}, "options.budget_steps: 30 cannot train the 2 extremes (2 x 1 seed(s) x 20 steps = 40)"),
    ({"budget_steps": 80, "min_weight_gap": 1.5}, "options.min_weight_gap: expected a number in (0, 1)"),
])
def test_bad_adaptive_options_are_one_line_naming_the_key(options, message):
    with pytest.raises(ConfigError) as info:  # the budget against the steps: where a search starts
        get_strategy("adaptive")(search("adaptive", options=options), NAMES, ["maximize"] * 2, None)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_grid_has_no_options():
    with pytest.raises(ConfigError, match=r"unknown key 'options.budget_steps'; known keys: $"):
        search("grid", options={"budget_steps": 3})


def test_grid_asks_for_every_weight_and_seed_not_yet_done():
    config = search("grid", seeds=[0, 1], weights=[[1, 0], [0, 1]])
    grid = get_strategy("grid")(config, NAMES, ["maximize"] * 2, np.array([[1.0, 0.0], [0.0, 1.0]]))
    units = grid.next_units({})
    assert [u.key for u in units] == ["train:1.0000,0.0000:s0", "train:0.0000,1.0000:s0",
                                      "train:1.0000,0.0000:s1", "train:0.0000,1.0000:s1"]
    done = {units[0].key: row(units[0], "r0")}
    assert [u.key for u in grid.next_units(done)] == [u.key for u in units[1:]]


def test_soups_asks_for_endpoints_then_mixes_of_each_seeds_own_endpoints():
    config = search("soups")
    W = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    soups = get_strategy("soups")(config, NAMES, ["maximize"] * 2, W)
    first = soups.next_units({})
    assert all(isinstance(u, TrainUnit) for u in first)
    assert [u.key for u in first] == ["train:1.0000,0.0000:s0", "train:0.0000,1.0000:s0"]
    done = {u.key: row(u, f"r{i}") for i, u in enumerate(first)}
    (mix,) = soups.next_units(done)  # the one-hot soups are the endpoints themselves
    assert isinstance(mix, EvalUnit) and mix.key == "soup:0.5000,0.5000:s0"
    assert mix.sources == ("r0", "r1") and mix.source_dirs == ("/runs/r0/adapter", "/runs/r1/adapter")
    done[mix.key] = {**row(mix, "r2"), "role": "soup"}
    assert soups.next_units(done) == []


def test_adaptive_plans_from_finished_children_alone_each_seed_from_its_own_nearest_adapter():
    config = search("adaptive", seeds=[0, 1], options={"budget_steps": 100, "warm_steps": 10})
    adaptive = get_strategy("adaptive")(config, NAMES, ["maximize"] * 2, None)
    first = adaptive.next_units({})
    assert [u.key for u in first] == ["train:1.0000,0.0000:s0", "train:0.0000,1.0000:s0",
                                      "train:1.0000,0.0000:s1", "train:0.0000,1.0000:s1"]
    scores = {(1.0, 0.0): {"val/good": 1.0, "val/bad": 0.0}, (0.0, 1.0): {"val/good": 0.0, "val/bad": 1.0}}
    done = {u.key: {**row(u, f"r{i}"), **scores[u.weights], "w_good": u.weights[0], "w_bad": u.weights[1]}
            for i, u in enumerate(first)}
    plan = adaptive.next_units(done)
    assert plan == adaptive.next_units(dict(reversed(done.items())))  # the same, however the rows arrive
    assert [(u.key, u.steps, u.init_adapter) for u in plan] == [
        ("train:0.5000,0.5000:s0", 10, "/runs/r0/adapter"), ("train:0.5000,0.5000:s1", 10, "/runs/r2/adapter")]
    assert all(adaptive.train_config(u).data.validation_fraction == 0.2 for u in first + plan)  # held out of training
    # 4 x 20 steps spent: two more children of 10 steps would pass a budget of 99
    tight = get_strategy("adaptive")(search("adaptive", seeds=[0, 1], options={"budget_steps": 99, "warm_steps": 10}),
                                     NAMES, ["maximize"] * 2, None)
    assert tight.next_units(done) == []


def test_adaptive_decides_on_the_validation_split_not_on_the_held_out_prompts():
    """The midpoint lands near the policy on the validation scores; the held-out scores, which put it at
    the other end, are what the front reports and must not steer the search."""
    adaptive = get_strategy("adaptive")(search("adaptive", options={"budget_steps": 100, "warm_steps": 10}),
                                        NAMES, ["maximize"] * 2, None)
    held_out = {(1.0, 0.0): (1.0, 0.0), (0.5, 0.5): (0.1, 0.9), (0.0, 1.0): (0.0, 1.0)}
    validation = {(1.0, 0.0): (1.0, 0.0), (0.5, 0.5): (0.9, 0.1), (0.0, 1.0): (0.0, 1.0)}
    done = {}
    for i, w in enumerate(held_out):
        unit = TrainUnit(w, 0)
        done[unit.key] = {**row(unit, f"r{i}"), "w_good": w[0], "w_bad": w[1], "good": held_out[w][0],
                          "bad": held_out[w][1], "val/good": validation[w][0], "val/bad": validation[w][1]}
    # the widest validation gap lies between (0.5, 0.5) and (0, 1); on the held-out scores it would be the other one
    assert [u.weights for u in adaptive.next_units(done)] == [(0.25, 0.75)]
    del done["train:0.5000,0.5000:s0"]["val/good"]  # a child trained before the split: refused, not decided on eval
    with pytest.raises(MoalignError, match="train:0.5000,0.5000:s0 .* has no validation scores"):
        adaptive.next_units(done)


def test_a_run_reused_in_this_process_is_recorded_on_the_parent_once():
    """The worker's Children finds the reuse, the orchestrator writes the parent's tag: in-process they
    are one object, and the find must not count as already recorded."""
    from types import SimpleNamespace

    from moalign.pareto.children import REUSED, Children

    class Tracker:
        def __init__(self):
            self.tags = []

        def find_runs(self, filter_string):
            return []

        def get_run(self, run_id):
            return SimpleNamespace(data=SimpleNamespace(tags={}))

        def set_tags(self, run_id, tags):
            self.tags.append((run_id, tags))

    tracker = Tracker()
    children = Children(tracker, "parent", "sid", None, NAMES, {}, [], ["maximize"] * 2)
    children.reused["train:1.0000,0.0000:s0"] = "elsewhere"  # what `_reuse` does in the worker
    row = {"key": "train:1.0000,0.0000:s0", "run_id": "elsewhere", "reused": True}
    children.record_reused(row)
    children.record_reused(row)
    assert tracker.tags == [("parent", {REUSED: '{"train:1.0000,0.0000:s0":"elsewhere"}'})]

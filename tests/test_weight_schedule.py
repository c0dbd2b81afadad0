"""Reward weights that change during training (moalign/rl/schedule.py): the values each kind
gives, the weights logged per step follow them, a resumed run continues the schedule exactly, a
search's points each anneal to their own weights, and bad schedules are one line."""
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

import moalign
from moalign import ConfigError
from moalign.pareto.config import SearchConfig
from moalign.pareto.search import run_search
from moalign.rl import trainer
from moalign.rl.config import OptimConfig, RewardConfig, TrackingConfig, TrainConfig

from rl_helpers import tiny_config, write_prompts

TWO = {"good": {"type": "word_share"}, "bad": {"type": "word_share", "word": "bad"}}


def resolved(schedule: dict, weights=None, steps=5):
    return RewardConfig(objectives=TWO, weights=weights, weight_schedule=schedule).schedule(steps)


def test_each_kind_gives_the_weights_it_says():
    linear = resolved({"kind": "linear", "start": [1, 0], "end": [0, 1]})
    assert [linear.at(s).tolist() for s in (1, 3, 5, 9)] == [[1, 0], [0.5, 0.5], [0, 1], [0, 1]]
    cosine = resolved({"kind": "cosine", "start": [1, 0], "end": [0, 1]})
    assert cosine.at(2)[1] == pytest.approx((1 - np.cos(np.pi / 4)) / 2)  # slower than linear at first
    assert cosine.at(3).tolist() == pytest.approx([0.5, 0.5])
    assert resolved({"kind": "constant"}, weights=[3, 1]).at(4).tolist() == [0.75, 0.25]
    piecewise = resolved({"kind": "piecewise", "points": [[1, [1, 0]], [3, [1, 1]], [5, [0, 1]]]})
    assert [piecewise.at(s).tolist() for s in (1, 2, 3, 4, 5)] == [[1, 0], [1, 0], [0.5, 0.5], [0.5, 0.5], [0, 1]]
    # `end` is the configured weights by default, `steps` the training's
    towards = resolved({"kind": "linear", "start": [1, 0]}, weights=[0.2, 0.8], steps=3)
    assert towards.at(3).tolist() == pytest.approx([0.2, 0.8]) and towards.at(2).tolist() == pytest.approx([0.6, 0.4])


@pytest.mark.parametrize("schedule,message", [
    ({"kind": "sideways"}, "reward.weight_schedule.kind must be one of"),
    ({"kind": "linear", "start": [1, 0, 0]}, "reward.weight_schedule.start: got 3 weights for 2 objectives"),
    ({"kind": "linear", "end": [0, 0]}, "reward.weight_schedule.end: at least one weight must be positive"),
    ({"kind": "piecewise", "points": [[2, [1, 0]]]}, "steps must start at 1 and increase"),
    ({"kind": "piecewise", "points": [[1, [1, 0]], [1, [0, 1]]]}, "steps must start at 1 and increase"),
    ({"kind": "linear", "steps": 0}, "reward.weight_schedule.steps must be an integer >= 1"),
    ({"kind": "linear", "stat": [1, 0]}, "unknown key 'reward.weight_schedule.stat'"),
])
def test_a_bad_schedule_is_one_line_naming_its_key(schedule, message):
    with pytest.raises(ConfigError, match=message) as info:
        TrainConfig(reward=RewardConfig(objectives=TWO, weight_schedule=schedule))
    assert "\n" not in str(info.value)


def test_a_schedule_is_refused_for_a_conditioned_policy():
    from moalign.rl.config import ConditioningConfig

    with pytest.raises(ConfigError, match="a weight-conditioned policy draws its own"):
        TrainConfig(reward=RewardConfig(objectives=TWO, weight_schedule={"kind": "linear", "start": [1, 0]}),
                    conditioning=ConditioningConfig(enabled=True))


def scheduled(tiny_llama, tmp, **kw):
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(tiny_llama, write_prompts(tmp / "p.jsonl"), tmp, optim=OptimConfig(steps=6, lr=2e-2),
                      reward=RewardConfig(objectives=TWO, weights=[0, 1],
                                          weight_schedule={"kind": "linear", "start": [1, 0]}),
                      tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", experiment="schedule"),
                      checkpoint_every=2, **kw)
    return cfg


def test_the_logged_weights_follow_the_schedule_and_a_resumed_run_continues_it(tiny_llama, tmp_path, monkeypatch,
                                                                              one_torch_thread):
    whole = moalign.train(scheduled(tiny_llama, tmp_path / "whole"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'whole' / 'mlflow.db'}")
    logged = {m.step: m.value for m in client.get_metric_history(whole.run_id, "weight/good")}
    assert logged == pytest.approx({s: 1 - (s - 1) / 5 for s in range(1, 7)})  # 1 -> 0 over six steps

    real, calls = trainer.policy_update, []

    def interrupt_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "policy_update", interrupt_at_step_5)
    config = scheduled(tiny_llama, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        moalign.train(config)
    monkeypatch.setattr(trainer, "policy_update", real)
    store = MlflowClient(f"sqlite:///{tmp_path / 'cut' / 'mlflow.db'}")
    (run,) = store.search_runs([store.get_experiment_by_name("schedule").experiment_id])
    resumed = moalign.train(config, resume_run_id=run.info.run_id)
    a, b = (load_file(r.adapter_dir / "adapter_model.safetensors") for r in (whole, resumed))
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), rtol=1e-5, atol=1e-7) for k in a)
    again = {m.step: m.value for m in store.get_metric_history(run.info.run_id, "weight/good")}
    assert again == pytest.approx(logged)
    np.testing.assert_allclose(resumed.history["reward/total"], whole.history["reward/total"], rtol=1e-5)


def test_each_point_of_a_search_anneals_to_its_own_weights(tiny_llama, tmp_path, one_torch_thread):
    cfg = scheduled(tiny_llama, tmp_path)
    cfg.optim.steps = 3
    result = run_search(SearchConfig(train=cfg, strategy="grid", weights=[[0, 1], [0.5, 0.5]], name="annealed",
                                     n_bootstrap=100, evaluate_base=False))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ends = {}
    for run_id, weights in zip(result.runs["run_id"], result.runs["weights"]):
        history = {m.step: m.value for m in client.get_metric_history(run_id, "weight/good")}
        assert history[1] == 1.0  # the common start
        ends[weights] = history[3]
    assert ends == pytest.approx({"0.0000,1.0000": 0.0, "0.5000,0.5000": 0.5})


def test_the_schedule_is_what_scores_each_step(tiny_llama, tmp_path, one_torch_thread):
    """A constant schedule at [1, 0] over configured weights [0, 1] trains exactly as weights [1, 0]
    without a schedule: the weights in force are the schedule's, not the config's."""
    scheduled_cfg = scheduled(tiny_llama, tmp_path / "a")
    scheduled_cfg.reward.weight_schedule = {"kind": "constant", "start": [1, 0]}
    scheduled_cfg.optim.steps = 3
    plain = scheduled(tiny_llama, tmp_path / "b")
    plain.reward.weight_schedule, plain.reward.weights, plain.optim.steps = None, [1, 0], 3
    other = scheduled(tiny_llama, tmp_path / "c")
    other.reward.weight_schedule, other.optim.steps = None, 3  # weights [0, 1]
    a, b, c = (load_file(moalign.train(cfg).adapter_dir / "adapter_model.safetensors")
               for cfg in (scheduled_cfg, plain, other))
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), rtol=1e-6, atol=1e-8) for k in a)
    assert not all(np.allclose(a[k].numpy(), c[k].numpy(), rtol=1e-3, atol=1e-6) for k in a)


@pytest.mark.parametrize("strategy,schedule,message", [
    ("grid", {"kind": "piecewise", "points": [[1, [1, 0]]]}, "a schedule must end at each point's own weights"),
    ("grid", {"kind": "linear", "start": [1, 0], "end": [0, 1]}, "a schedule must end at each point's own weights"),
    ("rejection", {"kind": "linear", "start": [1, 0]}, "supervised fine-tuning has no steps of reward"),
    ("conditioned", {"kind": "linear", "start": [1, 0]}, "a weight-conditioned policy draws its own"),
])
def test_a_search_refuses_a_schedule_its_points_cannot_follow_before_anything_runs(strategy, schedule, message, tiny_llama,
                                                                                  tmp_path):
    cfg = scheduled(tiny_llama, tmp_path)
    cfg.reward.weight_schedule = schedule
    with pytest.raises(ConfigError, match=message):
        run_search(SearchConfig(train=cfg, strategy=strategy, weights=[[1, 0], [0, 1]], name="x"))
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(
        f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["0"])


def test_a_rewards_in_context_search_needs_the_chat_template(tiny_llama, tmp_path):
    cfg = scheduled(tiny_llama, tmp_path)
    cfg.reward.weight_schedule, cfg.model.use_chat_template = None, False
    with pytest.raises(ConfigError, match="rewards_in_context needs model.use_chat_template: true"):
        run_search(SearchConfig(train=cfg, strategy="rewards_in_context", weights=[[1, 0]], name="x"))

"""Constraints: Lagrange multipliers learnt by projected dual ascent, or a fixed penalty, in normalised units."""
import json

import numpy as np
import pytest
import torch

from moalign import ConfigError
from moalign.rl.config import RewardConfig

from test_scalar_support import make_batch, make_reward

VIOLATED = [[0, 25], [1, 30], [2, 35], [3, 40]]  # b <= 20 broken by every sample
SATISFIED = [[0, 5], [1, 8], [2, 10], [3, 12]]
MIN_B = ("maximize", "minimize")  # a: a score to raise; b: a length to keep short


def penalty_of(reward, twin, rows, **kw):
    """What the constraints took off each sample: the same reward without constraints, minus it."""
    r, _, metrics = reward(make_batch(rows, **kw))
    free, _, _ = twin(make_batch(rows, **kw))
    return free - r, metrics


def test_lambda_rises_while_violated_and_decays_to_zero_once_satisfied():
    reward = make_reward(MIN_B, constraints=["b <= 20"], lagrange_lr=0.5, lagrange_max=3.0)
    twin = make_reward(MIN_B)
    lambdas = []
    for step in range(10):
        penalty, metrics = penalty_of(reward, twin, VIOLATED)
        lam = metrics["constraints/b/lambda"]
        lambdas.append(lam)
        b = np.tile(np.array(VIOLATED)[:, 1], step + 1)
        # the reward takes off lambda x the signed gap in running-std units (the batch's own std at step 1)
        np.testing.assert_allclose(penalty, lam * (np.array(VIOLATED)[:, 1] - 20) / b.std(ddof=1), rtol=1e-9)
        assert metrics["constraints/b/satisfied"] == 0.0
        assert metrics["constraints/b/violation"] == pytest.approx(12.5)  # raw units, as people read them
    gap1 = np.mean(np.array(VIOLATED)[:, 1] - 20) / np.std(np.array(VIOLATED)[:, 1], ddof=1)
    assert lambdas[0] == pytest.approx(0.5 * gap1)  # updated on this batch, then applied (as Safe RLHF does)
    assert np.all(np.diff(lambdas) >= 0) and lambdas[1] > lambdas[0] and lambdas[-1] == 3.0  # capped at lagrange_max
    for _ in range(10):
        penalty, metrics = penalty_of(reward, twin, SATISFIED)
        lambdas.append(metrics["constraints/b/lambda"])
        assert metrics["constraints/b/satisfied"] == 1.0 and metrics["constraints/b/gap"] < 0
    decay = lambdas[10:]
    assert np.all(np.diff(decay) <= 0) and decay[0] < 3.0 and decay[-1] == 0.0
    np.testing.assert_array_equal(penalty, 0.0)  # lambda 0: a slack constraint costs nothing


@pytest.mark.parametrize("normalization", ["running", "fixed", "group"])
@pytest.mark.parametrize("method", ["lagrangian", "penalty"])
def test_penalties_do_not_depend_on_the_objectives_units(normalization, method):
    """Counting length in characters (x5) instead of words must not change a single reward.

    In raw units, 10 words over `b <= 20` cost 5 x 10 = 50 reward units beside z-scores of about 1.
    """
    rng = np.random.default_rng(1)
    batches = [np.column_stack([rng.uniform(0, 1, 8), rng.uniform(10, 40, 8)]) for _ in range(4)]
    runs = []
    for unit in (1.0, 5.0):
        reward = make_reward(MIN_B, normalization=normalization, constraints=[f"b <= {20 * unit}"], constraint_method=method,
                             ranges={"a": [0, 1], "b": [0, 50 * unit]})
        runs.append([reward(make_batch(rows * [1, unit], groups=np.repeat([0, 1], 4)))[0] for rows in batches])
    # equal up to the normalisers' epsilons (1e-6 on running stds, 1e-4 on group stds)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-3, atol=1e-5)


def test_the_lagrangian_penalty_is_a_shifted_z_score_of_the_constrained_objective():
    reward = make_reward(MIN_B, constraints=["b <= 20"], lagrange_init=1.0)
    twin = make_reward(MIN_B)
    penalty, metrics = penalty_of(reward, twin, VIOLATED)
    b = np.array(VIOLATED)[:, 1]
    z = (b - b.mean()) / b.std(ddof=1)
    lam = metrics["constraints/b/lambda"]
    # lambda x (z + how far the mean sits past the threshold, in stds): the reward's own units
    np.testing.assert_allclose(penalty / lam, z + (b.mean() - 20) / b.std(ddof=1), rtol=1e-5)
    assert np.abs(penalty / lam).max() < 3.2  # 20 words over is 3.1 stds (x lambda), not 5 x 20 = 100 raw


def test_the_fixed_penalty_charges_only_violations_in_normalised_units():
    reward = make_reward(MIN_B, constraints=["b <= 20"], constraint_method="penalty", constraint_penalty=2.0,
                         normalization="fixed", ranges={"a": [0, 1], "b": [0, 40]})
    twin = make_reward(MIN_B, normalization="fixed", ranges={"a": [0, 1], "b": [0, 40]})
    penalty, metrics = penalty_of(reward, twin, [[0, 10], [1, 20], [2, 30]])
    np.testing.assert_allclose(penalty, [0, 0, 2.0 * 10 / 40])  # range units; satisfied samples earn nothing
    assert metrics["constraints/b/lambda"] == 2.0
    assert metrics["constraints/b/satisfied"] == pytest.approx(2 / 3)


def test_with_normalization_none_constraints_count_in_raw_units():
    reward = make_reward(MIN_B, normalization="none", constraints=["b <= 20"], constraint_method="penalty",
                         constraint_penalty=10.0)
    rewards, raw, _ = reward(make_batch([[0.5, 10], [0.5, 25]]))
    np.testing.assert_allclose(rewards, 0.5 * raw["a"] - 0.5 * raw["b"] - 10.0 * np.maximum(raw["b"] - 20, 0))


def test_a_constraint_only_objective_gets_its_own_scale():
    rows = [[0.1, 0, 10], [0.5, 0, 30], [0.9, 0, 50]]  # column 2: scalar_test_cost, named only in the constraint
    reward = make_reward(MIN_B, constraints=["scalar_test_cost <= 20"], lagrange_init=1.0)
    rewards, raw, metrics = reward(make_batch(rows))
    assert list(raw.columns) == ["a", "b", "scalar_test_cost"]
    free, _, _ = make_reward(MIN_B)(make_batch(rows))
    cost = raw["scalar_test_cost"].to_numpy()
    np.testing.assert_allclose(free - rewards, metrics["constraints/scalar_test_cost/lambda"] * (cost - 20) / cost.std(ddof=1))
    with pytest.raises(ConfigError, match="'scalar_test_cost'"):  # fixed ranges must cover it too
        make_reward(MIN_B, normalization="fixed", ranges={"a": [0, 1], "b": [0, 1]}, constraints=["scalar_test_cost <= 20"])


@pytest.mark.parametrize("normalization", ["running", "fixed", "group", "none"])
def test_resume_from_a_json_round_tripped_state_reproduces_rewards_exactly(normalization):
    rng = np.random.default_rng(2)
    batches = [np.column_stack([rng.uniform(0, 1, 6), rng.uniform(10, 40, 6), rng.uniform(0, 40, 6)]) for _ in range(6)]
    config = dict(scalarizer="chebyshev", normalization=normalization, constraints=["b <= 20", "scalar_test_cost <= 25"],
                  ranges={"a": [0, 1], "b": [0, 50], "scalar_test_cost": [0, 40]})
    groups = np.repeat([0, 1, 2], 2)
    straight = make_reward(MIN_B, **config)
    expected = [straight(make_batch(rows, groups))[:3:2] for rows in batches]
    first = make_reward(MIN_B, **config)
    for rows in batches[:3]:
        first(make_batch(rows, groups))
    state = first.state_dict()
    assert _plain(state), state  # torch.load(weights_only=True) takes lists, floats, ints and None only
    resumed = make_reward(MIN_B, **config)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    for (rewards, metrics), rows in zip(expected[3:], batches[3:]):
        got, _, got_metrics = resumed(make_batch(rows, groups))
        np.testing.assert_array_equal(got, rewards)
        assert got_metrics == metrics


def test_reward_state_survives_torch_weights_only_load(tmp_path):
    reward = make_reward(MIN_B, scalarizer="pbi", constraints=["b <= 20"])
    reward(make_batch(VIOLATED))
    torch.save({"reward": reward.state_dict()}, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)["reward"]
    assert loaded == reward.state_dict() and loaded["lambdas"][0] > 0


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (int, float, str, bool)


@pytest.mark.parametrize("fields, key", [
    ({"constraint_method": "barrier"}, "reward.constraint_method"),
    ({"lagrange_lr": 0.0}, "reward.lagrange_lr"),
    ({"lagrange_init": -1.0}, "reward.lagrange_init"),
    ({"lagrange_init": 5.0, "lagrange_max": 1.0}, "reward.lagrange_init"),
    ({"lagrange_max": 0.0}, "reward.lagrange_max"),
    ({"constraint_penalty": -1.0}, "reward.constraint_penalty"),
    ({"normalization": "zscore"}, "reward.normalization"),
])
def test_config_errors_name_the_key(fields, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RewardConfig(**fields)


def test_two_constraints_on_one_objective_are_refused():
    with pytest.raises(ConfigError, match="'b'"):
        make_reward(MIN_B, constraints=["b <= 20", "b >= 5"])

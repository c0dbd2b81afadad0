"""`normalization: group`: each objective standardised within its prompt's group, as TRL's normalize_then_sum."""
import numpy as np
import pytest

from test_scalar_support import make_batch, make_reward

ROWS = np.array([[0.2, 30], [0.8, 10], [0.5, 20], [0.1, 5], [0.9, 50], [0.4, 25], [0.7, 12]])
GROUPS = np.array([0, 0, 0, 1, 1, 1, 2])  # group 2 has a single completion


def trl_normalize_then_sum(values, groups, weights, signs):
    """By hand: per group and objective (x - mean) / (sample std + 1e-4), signed, weighted, summed."""
    out = np.zeros(len(values))
    for g in np.unique(groups):
        rows = groups == g
        block = values[rows]
        std = block.std(0, ddof=1) if rows.sum() > 1 else np.zeros(block.shape[1])
        z = (block - block.mean(0)) / (std + 1e-4)
        out[rows] = (z * signs) @ weights
    return out


def test_weighted_sum_of_group_z_scores_matches_trls_normalize_then_sum():
    reward = make_reward(("maximize", "minimize"), normalization="group", weights=[3, 1])
    rewards, _, metrics = reward(make_batch(ROWS, GROUPS))
    np.testing.assert_allclose(rewards, trl_normalize_then_sum(ROWS, GROUPS, np.array([0.75, 0.25]), np.array([1, -1])))
    assert rewards[GROUPS == 2] == 0.0  # a group of one has nothing to compare with
    assert metrics["rewards/a/normalized"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("scalarizer", ["weighted_sum", "chebyshev", "augmented_chebyshev", "pbi"])
def test_group_rewards_ignore_what_all_siblings_share(scalarizer):
    """Shifting and stretching one group's scores (an easy prompt) changes none of its rewards."""
    reward = make_reward(("maximize", "minimize"), normalization="group", scalarizer=scalarizer)
    base, _, _ = reward(make_batch(ROWS, GROUPS))
    easy = ROWS.copy()
    easy[GROUPS == 1] = easy[GROUPS == 1] * [3, 2] + [10, 100]
    shifted, _, _ = make_reward(("maximize", "minimize"), normalization="group", scalarizer=scalarizer)(make_batch(easy, GROUPS))
    np.testing.assert_allclose(shifted, base, rtol=1e-3, atol=1e-3)  # up to TRL's 1e-4 beside stds of 0.4 and more


@pytest.mark.parametrize("scalarizer", ["chebyshev", "augmented_chebyshev", "pbi"])
def test_the_group_ideal_is_the_groups_best_on_each_objective(scalarizer):
    # in group 0, (0.9, 5) is best on both: it sits on its group's ideal point, cost 0; the
    # single-sample group 2 is its own ideal.
    rows = np.array([[0.2, 30], [0.9, 5], [0.5, 20], [0.1, 5], [0.9, 50], [0.4, 25], [0.7, 12]])
    rewards, _, _ = make_reward(("maximize", "minimize"), normalization="group", scalarizer=scalarizer)(make_batch(rows, GROUPS))
    assert rewards[1] == pytest.approx(0.0, abs=1e-12) and rewards[6] == 0.0
    assert np.all(rewards[[0, 2, 3, 4, 5]] < 0)  # no one else is best on both within their group


def test_constraint_costs_count_in_each_groups_own_units():
    """Under group normalisation a sample's reward is in its group's z-scores, so between siblings a
    constraint is charged in the same units: the violation's difference from the group's mean over
    the group's std (+ 1e-4, as the z-scores), one penalty then weighing alike in a group whose
    lengths vary by 2 words and in one where they vary by 20. The group's level stays in running-std
    units: siblings that nearly agree cannot inflate it."""
    rows = np.array([[0.2, 21], [0.8, 22], [0.5, 23], [0.1, 30], [0.9, 50], [0.4, 40]])
    groups = np.array([0, 0, 0, 1, 1, 1])
    reward = make_reward(("maximize", "minimize"), normalization="group", constraints=["b <= 20"],
                         constraint_method="penalty", constraint_penalty=1.0)
    free = make_reward(("maximize", "minimize"), normalization="group")
    cost = free(make_batch(rows, groups))[0] - reward(make_batch(rows, groups))[0]
    running = rows[:, 1].std(ddof=1)
    for g in (0, 1):
        b = rows[groups == g, 1]
        violation = b - 20
        np.testing.assert_allclose(cost[groups == g], violation.mean() / running + (violation - violation.mean())
                                   / (b.std(ddof=1) + 1e-4))
    # siblings that nearly agree: the charge stays near the level, not a million times it
    close = np.array([[0.2, 30.0], [0.8, 30.0000001], [0.5, 40.0], [0.1, 50.0]])
    reward = make_reward(("maximize", "minimize"), normalization="group", constraints=["b <= 20"],
                         constraint_method="penalty", constraint_penalty=1.0)
    cost = free(make_batch(close, [0, 0, 1, 1]))[0] - reward(make_batch(close, [0, 0, 1, 1]))[0]
    assert np.abs(cost[:2] - 10 / close[:, 1].std(ddof=1)).max() < 1e-2


def test_group_normalisation_is_the_default_for_several_objectives():
    from moalign.rl.config import AlgorithmConfig, RewardConfig, SamplingConfig, TrainConfig

    two = {"chrf": {}, "verbosity": {}}
    assert TrainConfig(reward=RewardConfig(objectives=two)).reward.normalization == "group"
    assert TrainConfig(reward=RewardConfig(objectives={"chrf": {}})).reward.normalization == "running"
    # a group of one scores 0 under group normalisation: one sample a prompt keeps running statistics
    single = TrainConfig(reward=RewardConfig(objectives=two), sampling=SamplingConfig(num_generations=1),
                         algorithm=AlgorithmConfig(name="reinforce"))
    assert single.reward.normalization == "running"
    assert TrainConfig(reward=RewardConfig(objectives=two, normalization="running")).reward.normalization == "running"

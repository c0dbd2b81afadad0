"""Samples an objective drops (NaN scores) get reward NaN and leave every statistic untouched."""
import warnings

import numpy as np
import pytest

from moalign import MoalignError

from test_scalar_support import make_batch, make_reward

GROUPS = np.repeat([0, 1], 4)


def batches(seed: int):
    rng = np.random.default_rng(seed)
    return [np.column_stack([rng.uniform(0, 1, 8), rng.uniform(10, 40, 8), rng.uniform(0, 40, 8)]) for _ in range(4)]


@pytest.mark.parametrize("scalarizer", ["weighted_sum", "chebyshev", "pbi"])
@pytest.mark.parametrize("normalization", ["running", "fixed", "group", "none"])
def test_dropped_samples_are_as_if_never_sampled(scalarizer, normalization):
    config = dict(scalarizer=scalarizer, normalization=normalization, constraints=["b <= 20", "scalar_test_cost <= 25"],
                  ranges={"a": [0, 1], "b": [0, 50], "scalar_test_cost": [0, 40]})
    with_nan = make_reward(("maximize", "minimize"), **config)
    without = make_reward(("maximize", "minimize"), **config)
    for step, rows in enumerate(batches(0)):
        holed = rows.copy()
        holed[step, step % 3] = np.nan  # a different objective drops a different sample each step
        holed[7, 2] = np.nan  # a constraint-only objective's NaN drops the sample too
        keep = ~np.isnan(holed).any(1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "mean of empty slice" or "invalid value" on the way
            rewards, raw, metrics = with_nan(make_batch(holed, GROUPS))
        expected, _, expected_metrics = without(make_batch(rows[keep], GROUPS[keep]))
        assert np.isnan(rewards[~keep]).all() and raw.isna().to_numpy().sum() == 2
        np.testing.assert_allclose(rewards[keep], expected, rtol=1e-12)
        assert metrics["reward/dropped"] == 2 and expected_metrics["reward/dropped"] == 0
        for name, value in expected_metrics.items():
            if name != "reward/dropped":
                assert metrics[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    assert with_nan.state_dict() == without.state_dict()


def test_a_batch_with_nothing_valid_changes_nothing():
    reward = make_reward(("maximize", "minimize"), scalarizer="chebyshev", constraints=["b <= 20"])
    reward(make_batch([[0.1, 30], [0.5, 25]]))
    before = reward.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rewards, _, metrics = reward(make_batch([[np.nan, 30], [0.5, np.nan]]))
    assert np.isnan(rewards).all() and metrics["reward/dropped"] == 2
    assert np.isnan(metrics["reward/total"]) and np.isnan(metrics["constraints/b/violation"])
    assert reward.state_dict() == before


def test_infinite_scores_are_an_error_naming_the_objective():
    with pytest.raises(MoalignError, match="'b'.*sample 1"):
        make_reward(("maximize", "minimize"))(make_batch([[0.1, 30], [0.5, np.inf]]))

"""The Chebyshev/PBI ideal point is kept in raw units, so drifting normaliser statistics cannot stale it."""
import numpy as np
import pytest

from moalign.scalarization import IdealPoint, RunningNormalizer

from test_scalar_support import make_batch, make_reward


@pytest.mark.parametrize("scalarizer", ["chebyshev", "augmented_chebyshev", "pbi"])
def test_drifting_statistics_do_not_let_a_stale_ideal_decide_every_cost(scalarizer):
    reward = make_reward(scalarizer=scalarizer, normalization="running")
    reward(make_batch([[0, 0], [1, 0], [2, 0], [3, 10]]))  # b: one outlier, z = 1.5 under step 1's statistics
    for _ in range(8):  # then b settles at 10 for everyone: its running std shrinks, its z-scores with it
        rewards, _, _ = reward(make_batch([[0, 10], [1, 10], [2, 10], [3, 10]]))
    # (3, 10) is the best value ever seen on both objectives, so it *is* the ideal point: cost 0.
    # A z-score ideal keeps step 1's z_b = 1.5, which no later sample can reach, so every sample
    # carries the same large b-distance; in Chebyshev's max it decides every cost and r[3] < 0.
    assert rewards[3] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(rewards) > 0)  # b is equal for all: a alone orders them


def test_the_ideal_is_the_best_raw_value_normalised_by_todays_statistics():
    rng = np.random.default_rng(0)
    norm, ideal = RunningNormalizer(2), IdealPoint()
    seen = []
    for shift in (0.0, 5.0, 20.0):  # the statistics drift a lot between batches
        batch = rng.normal([shift, -shift], [1.0, 3.0], size=(8, 2))  # minimisation space
        seen.append(batch)
        norm.update(batch)
        ideal.update(batch)
    best = np.concatenate(seen).min(0)
    np.testing.assert_array_equal(ideal.raw, best)
    np.testing.assert_allclose(norm(ideal.raw[None])[0], (best - norm.mean) / (norm.std + norm.eps))
    restored = IdealPoint()
    restored.load_state_dict(ideal.state_dict())
    np.testing.assert_array_equal(restored.raw, best)

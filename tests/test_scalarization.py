"""Normalisers, scalarizers (against pymoo called directly), constraints, multipliers, weights, advantages."""
import numpy as np
import pytest
import torch
from pymoo.decomposition.pbi import PBI
from pymoo.decomposition.tchebicheff import Tchebicheff

from moalign import ConfigError
from moalign.rl.advantages import grpo_advantages, reinforce_advantages, rloo_advantages
from moalign.rl.kl import AdaptiveKLController, kl_per_token
from moalign.scalarization import (
    LagrangeMultipliers, RunningNormalizer, Scalarizer, make_normalizer, parse_constraint, pbi_direction, to_minimize,
    validate_weights,
)

F = np.array([[0.2, 0.9], [0.5, 0.5], [1.0, 0.1]])


def test_to_minimize_flips_only_maximized_columns():
    out = to_minimize([[3.0, 4.0]], ["maximize", "minimize"])
    assert out.tolist() == [[-3.0, 4.0]]
    with pytest.raises(ValueError):
        to_minimize([[1.0]], ["up"])


def test_weights_validation():
    np.testing.assert_allclose(validate_weights([3, 1], ["a", "b"]), [0.75, 0.25])
    np.testing.assert_allclose(validate_weights(None, ["a", "b", "c"]), [1 / 3] * 3)
    with pytest.raises(ConfigError, match="got 1 weights for 2 objectives"):
        validate_weights([1], ["a", "b"])
    with pytest.raises(ConfigError, match="non-negative"):
        validate_weights([1, -1], ["a", "b"])
    with pytest.raises(ConfigError, match="positive"):
        validate_weights([0, 0], ["a", "b"])


def test_weighted_sum_is_the_dot_product():
    s = Scalarizer("weighted_sum", np.array([0.25, 0.75]))
    np.testing.assert_allclose(s(F), F @ [0.25, 0.75])


def test_chebyshev_and_pbi_match_pymoo_about_the_given_ideal_point():
    w = np.array([0.5, 0.5])
    ideal = F.min(0)  # not pymoo's default of zero
    np.testing.assert_allclose(Scalarizer("chebyshev", w)(F, ideal), Tchebicheff().do(F, w, ideal_point=ideal))
    np.testing.assert_allclose(Scalarizer("chebyshev", w)(F), Tchebicheff().do(F, w, ideal_point=ideal))  # default: F's best
    w = np.array([0.8, 0.2])  # PBI aims along 1/w = (1.25, 5), where Chebyshev's optimum for w lies
    expected = PBI(theta=3.0).do(F, np.array([0.2, 0.8]), ideal_point=ideal)
    np.testing.assert_allclose(Scalarizer("pbi", w, theta=3.0)(F, ideal), expected)
    aug = Scalarizer("augmented_chebyshev", w, rho=0.1)
    expected = np.max(w * np.abs(F - ideal), 1) + 0.1 * np.abs(F - ideal).sum(1)
    np.testing.assert_allclose(aug(F, ideal), expected)
    per_row = np.vstack([ideal, ideal, [0.0, 0.0]])  # one ideal per row (group normalisation)
    np.testing.assert_allclose(aug(F, per_row)[2], 0.8 * 1.0 + 0.1 * 1.1)
    with pytest.raises(ConfigError, match="scalarizer"):
        Scalarizer("lexicographic", w)


def test_pbi_direction_inverts_weights_and_takes_zero_weights_to_the_limit():
    np.testing.assert_allclose(pbi_direction([0.8, 0.2]), [0.2, 0.8])
    np.testing.assert_allclose(pbi_direction([1 / 3, 1 / 3, 1 / 3]), [1 / 3] * 3)
    np.testing.assert_allclose(pbi_direction([1.0, 0.0]), [0.0, 1.0])  # all weight on 1: stay at its ideal


def test_group_normalizer_standardises_within_groups_and_skips_nan_rows():
    values = np.array([[1.0, 10.0], [3.0, 10.0], [np.nan, np.nan], [5.0, 0.0], [2.0, 7.0]])
    groups = np.array([0, 0, 0, 1, 2])
    norm = make_normalizer("group", ["a", "b"])
    out = norm(values, groups)
    np.testing.assert_allclose(out[:2], [[-1 / (np.sqrt(2) + 1e-4), 0], [1 / (np.sqrt(2) + 1e-4), 0]])
    assert np.isnan(out[2]).all()
    np.testing.assert_array_equal(out[3:], 0.0)  # groups of one
    norm.update(values[[0, 1, 3, 4]])
    np.testing.assert_allclose(norm.scale(), np.std(values[[0, 1, 3, 4]], 0, ddof=1))  # constraints' scale: all samples
    with pytest.raises(ConfigError, match="running, fixed, group, none"):
        make_normalizer("zscore", ["a"])


def test_normalizer_scales_are_one_unit_of_each_objective():
    assert make_normalizer("none", ["a"]).scale() == 1.0
    np.testing.assert_allclose(make_normalizer("fixed", ["a", "b"], {"a": [0, 10], "b": [-1, 1]}).scale(), [10, 2])
    running = RunningNormalizer(2)
    running.update(np.array([[1.0, 4.0], [3.0, 4.0]]))
    np.testing.assert_allclose(running.scale(), [np.sqrt(2), 1.0])  # no spread yet: raw units, not 1/eps


def test_lagrange_multipliers_ascend_clip_and_skip():
    m = LagrangeMultipliers(2, lr=0.5, init=1.0, maximum=2.0)
    assert m.step([4.0, -1.0]) == [2.0, 0.5]  # capped at the maximum
    assert m.step([None, -3.0]) == [2.0, 0.0]  # None: nothing measured, no step; never below 0
    restored = LagrangeMultipliers(2, lr=0.5, init=1.0, maximum=2.0)
    restored.load_state_dict(m.state_dict())
    assert restored.values == [2.0, 0.0]


def test_running_normalizer_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    data = rng.normal([5, -2], [3, 0.5], size=(90, 2))
    norm = RunningNormalizer(2)
    for chunk in np.split(data, 3):
        norm.update(chunk)
    np.testing.assert_allclose(norm.mean, data.mean(0))
    np.testing.assert_allclose(norm.std, data.std(0, ddof=1))
    z = norm(data)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-9)
    restored = RunningNormalizer(2)
    restored.load_state_dict(norm.state_dict())
    np.testing.assert_allclose(restored(data), z)


def test_fixed_normalizer_needs_every_range():
    norm = make_normalizer("fixed", ["a", "b"], {"a": [0, 10], "b": [0, 1]})
    np.testing.assert_allclose(norm(np.array([[5.0, 0.5]])), [[0.5, 0.5]])
    with pytest.raises(ConfigError, match="'b'"):
        make_normalizer("fixed", ["a", "b"], {"a": [0, 10]})
    with pytest.raises(ConfigError, match=r"reward\.ranges\.b: expected \[low, high\]"):
        make_normalizer("fixed", ["a", "b"], {"a": [0, 10], "b": 1})


def test_constraints_parse_and_measure_gaps():
    c = parse_constraint("toxicity <= 0.1", ["toxicity"])
    np.testing.assert_allclose(c.violation(np.array([0.0, 0.1, 0.6])), [0, 0, 0.5])
    np.testing.assert_allclose(c.gap(np.array([0.0, 0.6])), [-0.1, 0.5])
    ge = parse_constraint("rouge_l>=0.3", ["rouge_l"])
    np.testing.assert_allclose(ge.violation(np.array([0.1, 0.5])), [0.2, 0.0])
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_constraint("toxicity < 0.1", ["toxicity"])
    with pytest.raises(ConfigError, match="not among"):
        parse_constraint("fluency <= 1", ["toxicity"])


def test_advantages_by_hand():
    r = np.array([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    # RLOO: r_i - mean of the other two in its group of three
    np.testing.assert_allclose(rloo_advantages(r, 3), [1 - 2.5, 2 - 2.0, 3 - 1.5, 0, 0, 0])
    g = grpo_advantages(r, 3)
    np.testing.assert_allclose(g[:3], (r[:3] - 2) / (np.std(r[:3]) + 1e-4))
    np.testing.assert_allclose(g[3:], 0)
    adv, baseline = reinforce_advantages(np.array([1.0, 3.0]), baseline=0.0, decay=0.9)
    np.testing.assert_allclose(adv, [1.0, 3.0])
    assert baseline == pytest.approx(0.2)


def test_kl_estimators():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    np.testing.assert_allclose(kl_per_token(logp, ref, "k1"), [0.5, -1.0])
    k3 = kl_per_token(logp, ref, "k3")
    np.testing.assert_allclose(k3, np.exp([-0.5, 1.0]) - np.array([-0.5, 1.0]) - 1, rtol=1e-6)
    assert (k3 >= 0).all()
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=10)
    assert ctl.update(5.0) == pytest.approx(0.1 * 1.02)  # error clipped to +0.2
    assert ctl.update(0.0) < 0.1 * 1.02

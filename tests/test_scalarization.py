"""Normalisers, scalarizers (against pymoo called directly), constraints, weights, advantages."""
import numpy as np
import pytest
import torch
from pymoo.decomposition.pbi import PBI
from pymoo.decomposition.tchebicheff import Tchebicheff

from moalign import ConfigError
from moalign.rl.advantages import AdaptiveKLController, grpo_advantages, kl_per_token, reinforce_advantages, rloo_advantages
from moalign.scalarization import RunningNormalizer, Scalarizer, make_normalizer, parse_constraint, to_minimize, validate_weights

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


def test_chebyshev_and_pbi_match_pymoo_with_the_running_ideal_point():
    w = np.array([0.5, 0.5])
    cheb = Scalarizer("chebyshev", w)
    cheb.update(F)
    ideal = F.min(0)  # not pymoo's default of zero
    np.testing.assert_allclose(cheb(F), Tchebicheff().do(F, w, ideal_point=ideal))
    pbi = Scalarizer("pbi", w, theta=3.0)
    pbi.update(F)
    np.testing.assert_allclose(pbi(F), PBI(theta=3.0).do(F, w, ideal_point=ideal))
    aug = Scalarizer("augmented_chebyshev", w, rho=0.1)
    aug.update(F)
    expected = np.max(w * np.abs(F - ideal), 1) + 0.1 * np.abs(F - ideal).sum(1)
    np.testing.assert_allclose(aug(F), expected)
    with pytest.raises(ConfigError, match="scalarizer"):
        Scalarizer("lexicographic", w)


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


def test_constraints_parse_and_penalise():
    c = parse_constraint("toxicity <= 0.1", ["toxicity"])
    np.testing.assert_allclose(c.violation(np.array([0.0, 0.1, 0.6])), [0, 0, 0.5])
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

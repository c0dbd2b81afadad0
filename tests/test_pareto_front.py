"""Front metrics on a known front plus dominated points, against pymoo called directly."""
import numpy as np
import pytest
from pymoo.indicators.hv import HV

from moalign import ConfigError
from moalign.pareto import expected_utility, hypervolume, non_dominated, reference_point, weight_vectors

# rouge (maximize) and words (minimize): three points on the front, two dominated
SCORES = np.array([[0.5, 30.0], [0.4, 20.0], [0.2, 10.0], [0.3, 25.0], [0.1, 40.0]])
DIRS = ["maximize", "minimize"]


def test_non_dominated_on_a_known_front():
    assert non_dominated(SCORES, DIRS).tolist() == [True, True, True, False, False]
    # flipping a direction changes the answer: now higher word counts are better
    assert non_dominated(SCORES, ["maximize", "maximize"]).tolist() == [True, False, False, False, True]


def test_hypervolume_by_hand_and_against_pymoo():
    ref = np.array([0.0, 50.0])  # minimisation space: -rouge <= 0, words <= 50
    # staircase in (-rouge, words): areas 0.5*20 + 0.4*10 + 0.2*10 = 10 + 4 + 2... computed by hand:
    # sort by words: (10, .2), (20, .4), (30, .5): (20-10)*.2 + (30-20)*.4 + (50-30)*.5 = 2 + 4 + 10
    assert hypervolume(SCORES, DIRS, ref) == pytest.approx(16.0)
    F = np.column_stack([-SCORES[:, 0], SCORES[:, 1]])
    assert hypervolume(SCORES, DIRS, ref) == pytest.approx(HV(ref_point=ref).do(F))
    # dominated points add nothing
    assert hypervolume(SCORES[:3], DIRS, ref) == pytest.approx(16.0)


def test_reference_points():
    nadir = reference_point(SCORES, DIRS, "nadir")
    np.testing.assert_allclose(nadir, [-0.1 + 0.04, 40 + 3])  # worst + 10% of the range
    np.testing.assert_allclose(reference_point(SCORES, DIRS, {"rouge": 0.0, "words": 50}, ["rouge", "words"]), [0, 50])
    np.testing.assert_allclose(reference_point(SCORES, DIRS, "base", base_scores=np.array([0.3, 25.0])), [-0.3, 25])
    with pytest.raises(ConfigError):
        reference_point(SCORES, DIRS, {"rouge": 0.0}, ["rouge", "words"])


def test_expected_utility():
    # with one weight vector all on rouge, the best policy has normalised rouge 1
    assert expected_utility(SCORES, DIRS, np.array([[1.0, 0.0]])) == pytest.approx(1.0)
    # equal weights: normalised (rouge, -words) of row 1 are (0.75, 0.667), the best mean of all rows
    assert expected_utility(SCORES, DIRS, np.array([[0.5, 0.5]])) == pytest.approx(0.5 * (0.75 + 20 / 30))
    both = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert expected_utility(SCORES, DIRS, both) == pytest.approx((1.0 + 0.5 * (0.75 + 20 / 30)) / 2)


def test_weight_vectors_from_pymoo_and_lists():
    W = weight_vectors({"method": "das-dennis", "n_partitions": 4}, ["a", "b"])
    np.testing.assert_allclose(W, [[1, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 1]])
    W3 = weight_vectors({"method": "das-dennis", "n_partitions": 2}, ["a", "b", "c"])
    assert W3.shape == (6, 3) and np.allclose(W3.sum(1), 1)
    E = weight_vectors({"method": "energy", "n_points": 5, "seed": 1}, ["a", "b", "c"])
    assert E.shape == (5, 3) and np.allclose(E.sum(1), 1)
    np.testing.assert_allclose(weight_vectors([[3, 1], [0, 2]], ["a", "b"]), [[0.75, 0.25], [0, 1]])
    with pytest.raises(ConfigError, match="got 3 weights for 2 objectives"):
        weight_vectors([[1, 1, 1]], ["a", "b"])
    with pytest.raises(ConfigError, match="method"):
        weight_vectors({"method": "grid"}, ["a", "b"])


def test_expected_utility_on_a_common_scale():
    # alone, the two dominated rows normalise to their own range and one reaches utility 1;
    # on the scale of all five rows they are the mediocre points they are
    alone = expected_utility(SCORES[3:], DIRS, np.array([[0.5, 0.5]]))
    common = expected_utility(SCORES[3:], DIRS, np.array([[0.5, 0.5]]), scale=SCORES)
    assert alone == pytest.approx(1.0)
    assert common == pytest.approx(0.5 * (0.5 + 15 / 30))  # row 3: rouge (0.3-0.1)/0.4, words (40-25)/30


def test_weight_vectors_refuse_bad_sizes_by_key():
    with pytest.raises(ConfigError, match=r"search.weights.n_partitions: expected an integer >= 1, got -1"):
        weight_vectors({"method": "das-dennis", "n_partitions": -1}, ["a", "b"])
    with pytest.raises(ConfigError, match=r"search.weights.n_points: expected an integer >= 3, got 2"):
        weight_vectors({"method": "energy", "n_points": 2, "seed": 1}, ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"search.weights.n_parts: not a parameter of 'das-dennis'"):
        weight_vectors({"method": "das-dennis", "n_parts": 3}, ["a", "b"])
    # pymoo's own answer (a bare Exception) for a count das-dennis cannot place evenly, on one line
    with pytest.raises(ConfigError, match=r"n_points = 7\) can not be created uniformly\. Either choose n_points = 6"):
        weight_vectors({"method": "das-dennis", "n_points": 7}, ["a", "b", "c"])


def test_weight_vectors_let_other_errors_through(monkeypatch):
    from moalign.pareto import weights

    def broken(*args, **kwargs):
        raise RuntimeError("a bug inside pymoo")

    monkeypatch.setattr(weights, "get_reference_directions", broken)
    with pytest.raises(RuntimeError, match="a bug inside pymoo"):
        weight_vectors({"method": "das-dennis", "n_partitions": 2}, ["a", "b"])


def test_weight_vectors_are_distinct():
    # [2, 0] is [1, 0] again: one policy, trained once
    np.testing.assert_allclose(weight_vectors([[1, 0], [2, 0], [1, 1]], ["a", "b"]), [[1, 0], [0.5, 0.5]])


def test_reference_point_specs_are_checked_up_front():
    from moalign.pareto.front import check_reference_point

    with pytest.raises(ConfigError, match=r"search.reference_point must be nadir\|base\|\{objective: value\}, got 'foo'"):
        check_reference_point("foo")
    with pytest.raises(ConfigError, match=r"search.reference_point: 'bda' is not an objective of the front \(good, bad\)"):
        check_reference_point({"good": 0, "bda": 0}, ["good", "bad"])
    with pytest.raises(ConfigError, match=r"search.reference_point.good: expected a number, got 'low'"):
        check_reference_point({"good": "low", "bad": 0})
    check_reference_point({"good": 0, "bad": 0.5}, ["good", "bad"])

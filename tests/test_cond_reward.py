"""Per-sample weights (a weight-conditioned policy's groups): each row is scalarised under its own
weights, exactly as a reward configured with those weights would score it."""
import numpy as np
import pytest

from moalign import MoalignError
from moalign.objective import Batch
from moalign.rl.config import RewardConfig
from moalign.rl.reward import MultiObjectiveReward
from moalign.scalarization import SCALARIZERS, Scalarizer

import rl_helpers  # noqa: F401  (registers word_share)

OBJECTIVES = {"good": {"type": "word_share", "word": "good"}, "bad": {"type": "word_share", "word": "bad"}}
COMPLETIONS = ["good good bad", "bad bad", "good", "the cat", "good bad bad bad", "bad good", "good good", "bad"]
W1, W2 = [0.8, 0.2], [0.1, 0.9]


def batch() -> Batch:
    return Batch(prompts=["p"] * 8, completions=COMPLETIONS, groups=np.repeat([0, 1], 4))


@pytest.mark.parametrize("normalization", ["running", "group"])
@pytest.mark.parametrize("scalarizer", SCALARIZERS)
def test_per_row_weights_equal_one_reward_per_weight_vector(scalarizer, normalization):
    def reward(weights):  # a fresh reward each time: equal normaliser, ideal and multiplier state
        return MultiObjectiveReward(RewardConfig(objectives=OBJECTIVES, weights=weights, scalarizer=scalarizer,
                                                 normalization=normalization, constraints=["bad <= 0.3"]))

    alone1, _, _ = reward(W1)(batch())
    alone2, _, _ = reward(W2)(batch())
    per_row = np.array([W1] * 4 + [W2] * 4)
    mixed, _, metrics = reward(None)(batch(), weights=per_row)
    np.testing.assert_allclose(mixed[:4], alone1[:4], rtol=1e-12)
    np.testing.assert_allclose(mixed[4:], alone2[4:], rtol=1e-12)
    assert not np.allclose(alone1, alone2)  # the weights matter here, so the test can fail
    assert "constraints/bad/lambda" in metrics


@pytest.mark.parametrize("kind", SCALARIZERS)
def test_scalarizer_rows_match_separate_calls(kind):
    rng = np.random.default_rng(0)
    F, ideal = rng.normal(size=(6, 3)), np.full(3, -2.0)
    W = rng.dirichlet(np.ones(3), size=6)
    W[0] = [1.0, 0.0, 0.0]  # a zero weight: PBI's direction has its own limit there
    rows = Scalarizer(kind, np.full(3, 1 / 3))(F, ideal, weights=W)
    one_by_one = [Scalarizer(kind, w)(F[i : i + 1], ideal)[0] for i, w in enumerate(W)]
    np.testing.assert_allclose(rows, one_by_one, rtol=1e-12)


def test_bad_per_sample_weights_are_one_line():
    reward = MultiObjectiveReward(RewardConfig(objectives=OBJECTIVES))
    with pytest.raises(MoalignError, match=r"must be \[8, 2\]"):
        reward(batch(), weights=np.ones((8, 3)))
    with pytest.raises(MoalignError, match="non-negative"):
        reward(batch(), weights=np.array([[1.0, -1.0]] * 8))

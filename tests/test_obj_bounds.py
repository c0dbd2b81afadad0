"""Every objective declares the range its values lie in; summaries never claim values outside it."""
import numpy as np
import pandas as pd
import pytest

from moalign import ConfigError, get_objective, score, summarize
from moalign.scoring import clip_to_bounds

# What each objective's values can be, from its definition (not from its code).
EXPECTED = {
    "bleu": (0.0, 100.0), "chrf": (0.0, 100.0), "self_bleu": (0.0, 100.0),
    "rouge1": (0.0, 1.0), "rouge2": (0.0, 1.0), "rouge_l": (0.0, 1.0),  # F1
    "toxicity": (0.0, 1.0), "distinct_n": (0.0, 1.0),  # a probability, a ratio
    "embedding_diversity": (0.0, 2.0),  # cosine distance
    "verbosity": (0.0, None), "likelihood": (None, 0.0),  # a length; a log-probability
    "evaluate": (None, None),  # unknown until the user says
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_declared_bounds(name):
    objective = get_objective(name, **({"path": "x"} if name == "evaluate" else {}))
    assert objective.bounds == EXPECTED[name]


def test_factuality_bounds_follow_the_mode():
    assert get_objective("factuality").bounds == (-1.0, 1.0)  # P(entail) - P(contradict)
    assert get_objective("factuality", mode="e").bounds == (0.0, 1.0)  # P(entail)


def test_evaluate_adapter_takes_bounds_and_checks_them():
    assert get_objective("evaluate", path="x", bounds=[0, None]).bounds == (0.0, None)
    for bad in ([1, 0], [0], ["a", 1], [0, float("inf")]):
        with pytest.raises(ConfigError, match="objective 'evaluate': "):
            get_objective("evaluate", path="x", bounds=bad)


def test_clip_to_bounds():
    assert clip_to_bounds(-0.3, 0.4, (0.0, 1.0)) == (0.0, 0.4)
    assert clip_to_bounds(-5.0, 3.0, (None, 0.0)) == (-5.0, 0.0)
    assert clip_to_bounds(-5.0, 3.0, (None, None)) == (-5.0, 3.0)
    low, high = clip_to_bounds(np.array([-1.0, 0.5]), np.array([0.5, 2.0]), (0.0, 1.0))
    np.testing.assert_array_equal(low, [0.0, 0.5])
    np.testing.assert_array_equal(high, [0.5, 1.0])


def test_summary_interval_is_clipped_to_the_objective_bounds():
    # two zeros and a 1 of ROUGE: mean 1/3; clipped to the bounds whatever the interval
    samples = [{"prompt": "p", "completion": c, "references": ["the cat"]} for c in ("dog", "a bird", "the cat")]
    frame = score(samples, ["rouge1"])
    row = summarize(frame).loc["rouge1"]
    assert 0.0 <= row["ci95_low"] and row["ci95_high"] <= 1.0
    # bounds come from the objectives when the frame does not carry them: a shifted copy
    # (ROUGE values below 0, as an unchecked plugin might return) is clipped by rouge1's bounds
    bare = pd.DataFrame({"rouge1": frame["rouge1"].to_numpy() - 0.5})
    assert summarize(bare).loc["rouge1", "ci95_low"] < 0
    assert summarize(bare, ["rouge1"]).loc["rouge1", "ci95_low"] == 0.0

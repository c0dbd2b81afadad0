"""NaN, inf and out-of-bounds scores are never turned into a plausible number without a word."""
import pickle

import numpy as np
import pandas as pd
import pytest

from moalign import Batch, ConfigError, MoalignError, Objective, build_objectives, register_objective, score, summarize
from moalign.cli import main
from moalign.classifiers import load_classifier


class Scripted(Objective):
    """Returns the numbers written in the completions ("nan", "inf", "0.5"): a broken metric on demand."""

    name = "scripted"
    direction = "minimize"  # minimised, so a silent 0 would be its best score

    def __init__(self, unused: int = 0):
        self.unused = unused

    def _score(self, batch):
        return [float(c) for c in batch.completions]


class BoundedScripted(Scripted):
    """The same, declared to lie in [0, 1]."""

    name = "bounded_scripted"
    bounds = (0.0, 1.0)


register_objective(Scripted)
register_objective(BoundedScripted)


def batch(*values):
    return Batch(prompts=["p"] * len(values), completions=list(values))


def test_nan_is_an_error_naming_objective_sample_and_completion():
    with pytest.raises(MoalignError, match=r"objective 'scripted' scored sample 1 \(completion 'nan'\) as nan; set its on_invalid"):
        Scripted().score(batch("0.5", "nan", "2"))
    long = "nan" + " " * 60  # float() ignores the spaces; the message shows only the start
    with pytest.raises(MoalignError, match=r"\(completion 'nan {37}\.\.\.'\)"):
        Scripted().score(batch(long))
    with pytest.raises(MoalignError, match="sample 0 .* as -inf"):
        Scripted().score(batch("-inf"))


def test_a_value_outside_the_declared_bounds_is_invalid_but_rounding_noise_is_the_bound():
    with pytest.raises(MoalignError, match=r"sample 1 .* as 1.5, outside its bounds \(0.0, 1.0\)"):
        BoundedScripted().score(batch("0.5", "1.5"))
    # a float32 model lands a hair outside (1 - cos(x, x) = -6e-8): that is 0, not an error
    np.testing.assert_array_equal(BoundedScripted().score(batch("-6e-8", "1.0000001")), [0.0, 1.0])


def test_worst_uses_the_worst_bound_else_the_worst_valid_value_of_the_batch():
    bounded = BoundedScripted()
    bounded.on_invalid = "worst"
    np.testing.assert_array_equal(bounded.score(batch("0.25", "nan", "7")), [0.25, 1.0, 1.0])  # minimised: 1 is worst
    unbounded = Scripted()
    unbounded.on_invalid = "worst"
    np.testing.assert_array_equal(unbounded.score(batch("3", "inf", "5")), [3.0, 5.0, 5.0])
    with pytest.raises(MoalignError, match="no worst valid value"):
        unbounded.score(batch("nan", "nan"))


def test_drop_keeps_nan_and_summarize_counts_only_valid_samples():
    frame = score([{"prompt": "p", "completion": c} for c in ("1", "nan", "3")],
                  {"scripted": {"on_invalid": "drop"}})
    assert np.isnan(frame["scripted"][1]) and frame["scripted"][[0, 2]].tolist() == [1.0, 3.0]
    row = summarize(frame).loc["scripted"]
    assert (row["mean"], row["n"], row["n_dropped"]) == (2.0, 2, 1)


def test_on_invalid_is_validated_shown_in_get_params_and_pickled():
    objective = build_objectives({"chrf": {"on_invalid": "worst"}})["chrf"]
    assert objective.get_params()["on_invalid"] == "worst"
    assert pickle.loads(pickle.dumps(objective)).on_invalid == "worst"
    assert build_objectives(["chrf"])["chrf"].get_params()["on_invalid"] == "error"  # the default
    with pytest.raises(ConfigError, match="objective 'chrf': on_invalid must be one of error, worst, drop; got 'skip'"):
        build_objectives({"chrf": {"on_invalid": "skip"}})


def test_on_invalid_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "completion": "1"}\n{"prompt": "p", "completion": "nan"}\n')
    assert main(["evaluate", "--data", str(data), "--objectives", "scripted", "--quiet"]) == 2
    assert "objective 'scripted' scored sample 1" in capsys.readouterr().err
    out = tmp_path / "s.csv"
    assert main(["evaluate", "--data", str(data), "--objectives", "scripted", "--set", "scripted.on_invalid=drop",
                 "--out", str(out), "--quiet"]) == 0
    assert pd.read_csv(out)["scripted"].isna().tolist() == [False, True]


def test_factuality_with_an_unreachable_default_checkpoint_fails_in_seconds():
    """Offline (conftest sets HF_HUB_OFFLINE), the hub default fails at once with what to do."""
    import time

    from moalign import get_objective

    import transformers  # noqa: F401  (its import is not what is timed)

    load_classifier.cache_clear()
    started = time.perf_counter()
    with pytest.raises(MoalignError, match="pass the path of a local model directory"):
        get_objective("factuality").score(Batch(prompts=["p"], completions=["A cat."], sources=["A cat sat."]))
    assert time.perf_counter() - started < 5

from importlib.metadata import entry_points

import numpy as np
import pytest

from moalign import ConfigError, MoalignError, Objective, get_objective, get_objective_names, register_objective, score


def test_builtins_come_from_the_entry_point_group():
    names = {ep.name for ep in entry_points(group="moalign.objectives")}
    assert {"likelihood", "bleu", "rouge_l", "factuality", "toxicity", "verbosity", "distinct_n"} <= names
    assert names <= set(get_objective_names())


def test_unknown_objective_lists_available_ones():
    with pytest.raises(ConfigError, match=r"unknown objective 'blue'; available: .*bleu"):
        get_objective("blue")


def test_unknown_and_bad_parameters_name_the_key():
    with pytest.raises(ConfigError, match="unknown parameter 'smooth'"):
        get_objective("bleu", smooth="exp")
    with pytest.raises(ConfigError, match="unit"):
        get_objective("verbosity", unit="pages")


class Shouty(Objective):
    """Share of upper-case characters."""

    name = "shouty"

    def __init__(self, minimum: int = 0):
        self.minimum = minimum

    def _score(self, batch):
        return [sum(ch.isupper() for ch in c) / max(len(c), 1) for c in batch.completions]


def test_register_objective_in_process():
    register_objective("shouty", Shouty)
    assert "shouty" in get_objective_names()
    frame = score([{"prompt": "p", "completion": "AB"}, {"prompt": "p", "completion": "ab"}], ["shouty"])
    np.testing.assert_allclose(frame["shouty"], [1.0, 0.0])


def test_missing_field_names_objective_and_field():
    with pytest.raises(MoalignError, match="objective 'bleu' needs the field 'references'"):
        score([{"prompt": "p", "completion": "c"}], ["bleu"])


def test_summary_mean_std_and_a_bootstrap_interval_over_prompts():
    import numpy as np
    import pandas as pd
    from scipy import stats

    from moalign import summarize

    values = np.array([1.0, 2.0, 3.0, 7.0, 4.0, 4.0])
    row = summarize(pd.DataFrame({"x": values})).loc["x"]
    ci = stats.bootstrap((values,), np.mean, n_resamples=1000, method="percentile",
                         random_state=np.random.default_rng(0)).confidence_interval
    assert (row["mean"], row["n"], row["n_samples"]) == (3.5, 6, 6)
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((ci.low, ci.high))
    # three completions of one prompt are one answer, not three: averaged first, the unit is the prompt
    by_prompt = summarize(pd.DataFrame({"x": values}), prompts=["a", "a", "a", "b", "c", "c"]).loc["x"]
    assert (by_prompt["mean"], by_prompt["n"], by_prompt["n_samples"]) == (pytest.approx((2 + 7 + 4) / 3), 3, 6)
    means = np.array([2.0, 7.0, 4.0])
    ci = stats.bootstrap((means,), np.mean, n_resamples=1000, method="percentile",
                         random_state=np.random.default_rng(0)).confidence_interval
    assert (by_prompt["ci95_low"], by_prompt["ci95_high"]) == pytest.approx((ci.low, ci.high))


def test_built_ins_install_under_moalign_and_the_quickstart_data_ships_with_it():
    """No generic top-level `objectives`/`reports` in site-packages; the data travels as package data."""
    from importlib.metadata import entry_points
    from pathlib import Path

    from moalign.data import quickstart_data

    values = [ep.value for ep in entry_points(group="moalign.objectives") if ep.name in ("chrf", "verbosity")]
    assert values and all(v.startswith("moalign.objectives.") for v in values)
    import moalign.reports.build  # noqa: F401
    assert Path(quickstart_data()).is_file() and Path(quickstart_data("samples.jsonl")).is_file()

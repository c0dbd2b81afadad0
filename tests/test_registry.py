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


def test_summary_mean_std_and_student_t_interval():
    import pandas as pd

    from moalign import summarize

    row = summarize(pd.DataFrame({"x": [1.0, 2.0, 3.0]})).loc["x"]
    half = 4.302652729911275 / 3 ** 0.5  # t(0.975, df=2) * std / sqrt(n), std = 1
    assert (row["mean"], row["std"], row["n"]) == (2.0, 1.0, 3)
    assert row["ci95_low"] == pytest.approx(2 - half) and row["ci95_high"] == pytest.approx(2 + half)


def test_built_ins_install_under_moalign_and_the_quickstart_data_ships_with_it():
    """No generic top-level `objectives`/`reports` in site-packages; the data travels as package data."""
    from importlib.metadata import entry_points
    from pathlib import Path

    from moalign.data import quickstart_data

    values = [ep.value for ep in entry_points(group="moalign.objectives") if ep.name in ("chrf", "verbosity")]
    assert values and all(v.startswith("moalign.objectives.") for v in values)
    import moalign.reports.build  # noqa: F401
    assert Path(quickstart_data()).is_file() and Path(quickstart_data("samples.jsonl")).is_file()

"""`moalign.score` keeps what the caller gave it: the index, a single reference, a plugin's own name."""
import pandas as pd
import pytest

from moalign import MoalignError, Objective, get_objective_names, register_objective, score


def test_score_keeps_the_dataframe_index():
    frame = pd.DataFrame({"prompt": ["p", "q"], "completion": ["one two", "three"]}, index=["a", "b"])
    scores = score(frame, ["verbosity"])
    assert scores.index.tolist() == ["a", "b"] and scores["verbosity"].tolist() == [2.0, 1.0]
    assert frame.join(scores).loc["b", "verbosity"] == 1.0  # lines up with the input rows


def test_a_single_reference_string_is_one_reference():
    got = score([{"prompt": "p", "completion": "the cat", "reference": "the cat"},
                 {"prompt": "p", "completion": "the cat", "references": "the cat"}], ["rouge1"])
    assert got["rouge1"].tolist() == [1.0, 1.0]  # not a list of one-letter references


def test_missing_cells_of_a_dataframe_are_absent_fields():
    frame = pd.DataFrame({"prompt": ["p", "p"], "completion": ["the cat", "a dog"], "reference": ["the cat", None]})
    frame.loc[1, "reference"] = float("nan")  # what an empty cell of a float column holds
    with pytest.raises(MoalignError, match="objective 'rouge1' needs 'references', but sample 1 has none"):
        score(frame, ["rouge1"])


class Politeness(Objective):
    """Counts 'please'."""

    name = "politeness"

    def _score(self, batch):
        return [c.count("please") for c in batch.completions]


def test_register_objective_with_the_class_alone_uses_its_name():
    register_objective(Politeness)
    assert "politeness" in get_objective_names()
    assert score([{"prompt": "p", "completion": "please, please"}], ["politeness"])["politeness"].tolist() == [2.0]
    register_objective("polite_alias", Politeness)  # the two-argument form still works
    assert "polite_alias" in get_objective_names()

"""Objective parameters of the wrong type or range fail when the objective is built, in one line."""
import pytest

from moalign import ConfigError, Objective, build_objectives, get_objective, register_objective, score
from moalign.cli import main


@pytest.mark.parametrize("item,message", [
    ("verbosity.target=abc", "objective 'verbosity': parameter 'target' must be a finite number or null, got 'abc'"),
    ("verbosity.target=.nan", "objective 'verbosity': parameter 'target' must be a finite number or null, got nan"),
    ("verbosity.target=-2", "objective 'verbosity': parameter 'target' must be >= 0, got -2"),
    ("bleu.tokenize=nosuch", "objective 'bleu': parameter 'tokenize' must be one of none, zh, 13a"),
    ("chrf.word_order=-3", "objective 'chrf': parameter 'word_order' must be >= 0, got -3"),
    ("rouge_l.use_stemmer=maybe", "objective 'rouge_l': parameter 'use_stemmer' must be true or false, got 'maybe'"),
    ("toxicity.batch_size=-4", "objective 'toxicity': parameter 'batch_size' must be >= 1, got -4"),
    ("distinct_n.n=1.5", "objective 'distinct_n': parameter 'n' must be an integer, got 1.5"),
    ("distinct_n.n=true", "objective 'distinct_n': parameter 'n' must be an integer, got True"),
])
def test_bad_parameter_on_the_command_line_is_one_line_naming_objective_and_parameter(item, message, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "completion": "c", "references": ["c"]}\n')
    objective = item.split(".")[0]
    assert main(["evaluate", "--data", str(data), "--objectives", objective, "--set", item, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name,params", [
    ("factuality", {"batch_size": 0}), ("factuality", {"mode": "ec"}), ("factuality", {"max_length": 0}),
    ("likelihood", {"batch_size": -1}), ("likelihood", {"reduce": "max"}), ("embedding_diversity", {"batch_size": 0}),
    ("evaluate", {"path": "x", "direction": "up"}), ("evaluate", {"path": "x", "compute_kwargs": [1]}),
    ("self_bleu", {"smooth_method": "nosuch"}), ("bleu", {"lowercase": "yes"}), ("toxicity", {"model": 3}),
])
def test_every_objective_checks_its_parameters_when_built(name, params):
    key = next(iter(params if name != "evaluate" else set(params) - {"path"}))
    with pytest.raises(ConfigError, match=f"objective '{name}': parameter '{key}' must be"):
        get_objective(name, **params)


def test_values_of_the_right_type_pass_and_ints_are_numbers():
    assert get_objective("verbosity", target=3).target == 3.0
    assert get_objective("factuality", max_length=None).max_length is None
    assert get_objective("evaluate", path="x", bounds=[0, 1]).bounds == (0.0, 1.0)


def test_a_library_setting_that_cannot_work_fails_when_built_not_at_first_score(monkeypatch):
    # sacrebleu knows 'ja-mecab' but needs an extra package for it; it must not wait for a score.
    # The package is made unimportable here, so the test runs whether or not it is installed.
    import sys

    monkeypatch.setitem(sys.modules, "MeCab", None)
    with pytest.raises(ConfigError, match="objective 'bleu': .*Japanese"):
        get_objective("bleu", tokenize="ja-mecab")


class Greeting(Objective):
    """A plugin that declares nothing but annotations, and a range: it gets every check for free."""

    name = "greeting"
    param_ranges = {"weight": (0, 1)}

    def __init__(self, word: str = "hi", weight: float = 0.5, strict: bool = False, extra: dict | None = None):
        self.word, self.weight, self.strict, self.extra = word, weight, strict, extra

    def _score(self, batch):
        return [float(self.word in c) for c in batch.completions]


def test_a_plugin_gets_type_and_range_checks_for_free():
    register_objective(Greeting)
    assert get_objective("greeting", word="yo", weight=1, strict=True, extra={"a": 1}).weight == 1
    for params, text in [({"word": 5}, "'word' must be a string, got 5"),
                         ({"weight": 2.0}, "'weight' must be between 0 and 1, got 2.0"),
                         ({"strict": 1}, "'strict' must be true or false, got 1"),
                         ({"extra": "a"}, "'extra' must be a mapping or null, got 'a'")]:
        with pytest.raises(ConfigError, match=f"objective 'greeting': parameter {text}"):
            get_objective("greeting", **params)
    # an instance built by hand is checked when it is used
    with pytest.raises(ConfigError, match="parameter 'weight' must be between 0 and 1"):
        score([{"prompt": "p", "completion": "hi"}], [Greeting(weight=7)])


@pytest.mark.parametrize("column", ["a<b>", "x:y", "/lead", "a/../b", "", "dot/."])
def test_a_column_mlflow_cannot_store_is_a_config_error_naming_it(column):
    with pytest.raises(ConfigError, match=f"objective column '{column}'"):
        build_objectives({column: {"type": "verbosity"}})


def test_columns_mlflow_stores_are_fine():
    names = ["words", "len-chars", "v 2", "group/verbosity", "v.1"]
    assert list(build_objectives({n: {"type": "verbosity"} for n in names})) == names

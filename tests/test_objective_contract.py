"""One contract suite run over every registered objective (as sklearn's parametrize_with_checks)."""
import pickle
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest

from moalign import Batch, get_objective
from moalign.objective import MAXIMIZE, MINIMIZE, check_params, init_params

# How to build each registered objective offline. A new objective must add a line here.
FACTORIES = {
    "likelihood": lambda f: get_objective("likelihood", model=f["tiny_llama"]),
    "bleu": lambda f: get_objective("bleu"),
    "chrf": lambda f: get_objective("chrf"),
    "rouge1": lambda f: get_objective("rouge1"),
    "rouge2": lambda f: get_objective("rouge2"),
    "rouge_l": lambda f: get_objective("rouge_l", use_stemmer=True),
    "factuality": lambda f: get_objective("factuality", model=f["tiny_nli"]),
    "toxicity": lambda f: get_objective("toxicity"),
    "verbosity": lambda f: get_objective("verbosity"),
    "distinct_n": lambda f: get_objective("distinct_n"),
    "self_bleu": lambda f: get_objective("self_bleu"),
    "embedding_diversity": lambda f: get_objective("embedding_diversity"),
    "reference_similarity": lambda f: get_objective("reference_similarity"),
    "evaluate": lambda f: get_objective("evaluate", path=f["word_overlap_module"], key="overlap", single_reference=True),
    "coverage": lambda f: get_objective("coverage"),
    "density": lambda f: get_objective("density"),
    "novel_ngrams": lambda f: get_objective("novel_ngrams", n=1),
}

BATCH = Batch(
    prompts=["the cat", "the cat", "a dog", "a dog", "news"],
    completions=["the cat sat on the mat.", "", "a dog is very good. it sat.", "a dog was bad", "Ünïcode text ✓"],
    references=[["the cat sat on the mat"], ["the cat sat"], ["a good dog", "the dog is good"], ["a bad dog"], ["text"]],
    sources=["the cat sat on the mat. it was green.", "the cat sat", "a dog is good.", "a dog was bad.", "text"],
)


@pytest.fixture(scope="module")
def fixtures(tiny_llama, tiny_nli, word_overlap_module):
    return {"tiny_llama": tiny_llama, "tiny_nli": tiny_nli, "word_overlap_module": word_overlap_module}


def test_every_registered_objective_has_a_factory():
    assert {ep.name for ep in entry_points(group="moalign.objectives")} == set(FACTORIES)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_contract(name, fixtures):
    objective = FACTORIES[name](fixtures)
    assert objective.direction in (MAXIMIZE, MINIMIZE)
    values = objective.score(BATCH)
    assert values.shape == (len(BATCH),) and values.dtype == np.float64
    assert np.isfinite(values).all()
    # deterministic, and the empty batch is fine
    np.testing.assert_allclose(objective.score(BATCH), values, rtol=1e-6, atol=1e-9)
    empty = Batch(prompts=[], completions=[], references=[], sources=[])
    assert objective.score(empty).shape == (0,)
    # picklable, before and after models were loaded, and still scoring the same
    clone = pickle.loads(pickle.dumps(objective))
    np.testing.assert_allclose(clone.score(BATCH), values, rtol=1e-5, atol=1e-6)
    assert clone.get_params() == objective.get_params()
    # declared bounds: a (low, high) pair of float|None that the values keep to
    low, high = objective.bounds
    assert all(b is None or type(b) is float for b in (low, high)) and (None in (low, high) or low < high)
    assert (low is None or (values >= low).all()) and (high is None or (values <= high).all())
    # parameters: what MLflow logs includes on_invalid; defaults satisfy the objective's own checks
    assert objective.get_params()["on_invalid"] == "error"
    cls = type(objective)
    assert set(cls.param_ranges) | set(cls.param_choices) <= set(init_params(cls))
    check_params(cls, {k: v for k, v in objective.get_params().items() if k != "on_invalid"}, name)
    # what an empty completion (BATCH[1]) scores is documented, on the class or its module
    assert "empty" in f"{cls.__doc__} {sys.modules[cls.__module__].__doc__}".lower()

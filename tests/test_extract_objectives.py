"""Extractiveness objectives on hand-computed cases (Grusky et al., 2018, Newsroom: coverage =
sum|f|/|S|, density = sum|f|^2/|S| over the greedy fragments F(A, S)); the contract suite in
test_objective_contract.py runs over them too."""
import numpy as np
import pytest

from moalign import Batch, get_objective
from moalign.errors import ConfigError
from moalign.objectives.extractiveness import fragments, tokens

SOURCE = "The council voted on Tuesday to expand the bike lane network."


def scores(name: str, completions: list[str], sources=None, prompts=None, **params) -> np.ndarray:
    n = len(completions)
    batch = Batch(prompts=prompts or ["p"] * n, completions=completions,
                  sources=None if sources is None and prompts else (sources or [SOURCE] * n))
    return get_objective(name, **params).score(batch)


def test_fragments_of_a_paraphrase_by_hand():
    # summary: council voted to expand bike lanes quickly (7 words)
    # "council voted" (2; the source goes on "on"), "to expand" (2; "the" follows), "bike" (1; "lane"
    # is not "lanes"), then "lanes" and "quickly" match nothing
    summary = tokens("Council voted to expand bike lanes quickly.")
    assert fragments(summary, tokens(SOURCE)) == [2, 2, 1]
    completion = ["Council voted to expand bike lanes quickly."]
    assert scores("coverage", completion) == pytest.approx([5 / 7])
    assert scores("density", completion) == pytest.approx([(4 + 4 + 1) / 7])


def test_reordered_words_are_short_fragments():
    # "the cat sat on a mat" in "a cat sat on the mat": the | cat sat on | a | mat, every word copied
    batch = ["the cat sat on a mat"]
    assert scores("coverage", batch, ["a cat sat on the mat"]) == pytest.approx([1.0])
    assert scores("density", batch, ["a cat sat on the mat"]) == pytest.approx([(1 + 9 + 1 + 1) / 6])


def test_a_copy_scores_coverage_one_and_density_the_source_length():
    copy = ["the COUNCIL voted on tuesday, to expand the bike lane network"]  # case and punctuation do not count
    assert scores("coverage", copy) == pytest.approx([1.0])
    assert scores("density", copy) == pytest.approx([11.0])  # one fragment of all 11 words: 11^2 / 11
    assert scores("novel_ngrams", copy) == pytest.approx([0.0])


def test_unrelated_text_scores_zero():
    other = ["Heavy snow closed a mountain pass"]
    assert scores("coverage", other) == pytest.approx([0.0])
    assert scores("density", other) == pytest.approx([0.0])
    assert scores("novel_ngrams", other, n=1) == pytest.approx([1.0])


def test_novel_ngrams_by_hand():
    src = ["the cat sat on the mat"]
    # bigrams: (the cat) (cat lay) (lay on) (on the) (the mat): "cat lay" and "lay on" are new
    assert scores("novel_ngrams", ["the cat lay on the mat"], src) == pytest.approx([2 / 5])
    assert scores("novel_ngrams", ["the cat lay on the mat"], src, n=1) == pytest.approx([1 / 6])
    # repeats count: "mat mat" is two unigrams, both in the source
    assert scores("novel_ngrams", ["mat mat dog"], src, n=1) == pytest.approx([1 / 3])


def test_unigram_novelty_is_one_minus_coverage():
    # every source word is a fragment of length >= 1, so coverage is the share of copied words
    texts = ["Council voted to expand bike lanes quickly.", "the bike network is expanding", "snow"]
    np.testing.assert_allclose(scores("coverage", texts), 1 - scores("novel_ngrams", texts, n=1))


def test_empty_completion_scores_the_worst_value_of_the_declared_direction():
    empty = ["", "  ...  "]  # no word at all
    assert scores("coverage", empty).tolist() == [1.0, 1.0]  # minimize: silence copies least, so it must lose
    assert scores("coverage", empty, direction="maximize").tolist() == [0.0, 0.0]
    assert scores("density", empty).tolist() == [11.0, 11.0]  # the source's length: the largest density possible
    assert scores("density", empty, direction="maximize").tolist() == [0.0, 0.0]
    assert scores("novel_ngrams", empty + ["one"]).tolist() == [0.0, 0.0, 0.0]  # "one" has no bigram
    assert scores("novel_ngrams", empty, direction="minimize").tolist() == [1.0, 1.0]


def test_direction_is_a_declared_parameter():
    assert get_objective("coverage").direction == "minimize"
    assert get_objective("novel_ngrams").direction == "maximize"
    flipped = get_objective("density", direction="maximize")
    assert flipped.greater_is_better and flipped.get_params()["direction"] == "maximize"
    with pytest.raises(ConfigError, match="objective 'coverage': parameter 'direction' must be one of minimize, maximize"):
        get_objective("coverage", direction="lower")


def test_the_prompt_is_the_source_when_the_data_has_none():
    prompt = "Summarize: the bike lane network grows"
    assert scores("coverage", ["the bike lane network grows"], prompts=[prompt]) == pytest.approx([1.0])
    # a sample with an empty source falls back to its own prompt, the others keep theirs
    batch = Batch(prompts=[prompt, prompt], completions=["bike lane network", "bike lane network"],
                  sources=["", "snow in the pass"])
    assert get_objective("coverage").score(batch).tolist() == [1.0, 0.0]


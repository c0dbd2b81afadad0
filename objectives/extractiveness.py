"""How much of a completion is copied from its source: Newsroom's extractive fragment coverage
and density (Grusky et al., 2018), and the share of novel n-grams.

Why: overlap with a reference (chrF, ROUGE) rewards copying the source, since the reference
summary shares its words; RL finds that quickly, and a front of policies that all copy is no
trade-off. These objectives make copying visible, as a reward term or a constraint
(`coverage <= 0.8`). Default direction: less copying is better (`minimize` for coverage and
density, `maximize` for novel n-grams); `direction` turns that round where extraction is wanted
(copying as a cheap proxy for faithfulness).

Source: each sample's `source`; where the data has none (or a sample's is empty), its prompt,
which in a summarisation prompt holds the text to summarise (its instruction words then count
as source too).

Tokens: lower-cased runs of Unicode word characters (`\\w+`), so punctuation counts neither as
copied nor as novel. Newsroom tokenises with spaCy and keeps punctuation as tokens, which lifts
both measures for short summaries; on words alone the definitions are the paper's.

The greedy matching is written here (twenty lines): the reference implementation (newsroom's
`Fragments`, summ-eval's `DataStatsMetric`) is not on PyPI as a light package and needs spaCy.

Empty completions (no word, or fewer than n words for n-grams) score the worst value the
declared direction allows for their source: they copy nothing, but they say nothing either, and
the score that copies least must not be silence's. Coverage: 1 (minimize) or 0 (maximize);
density: the source's word count, the largest density any completion of it can have (one
fragment as long as the whole source), or 0; novel n-grams: 0 (maximize) or 1 (minimize).
"""
from __future__ import annotations

import re

import numpy as np

from moalign.objective import MAXIMIZE, MINIMIZE, Batch, Objective

_WORD = re.compile(r"\w+")
DIRECTIONS = (MINIMIZE, MAXIMIZE)


def tokens(text: str) -> list[str]:
    """The words compared: lower-cased `\\w+` runs, punctuation dropped.

    >>> tokens("The cat sat, on the MAT.")
    ['the', 'cat', 'sat', 'on', 'the', 'mat']
    """
    return _WORD.findall(text.lower())


def fragments(summary: list[str], article: list[str]) -> list[int]:
    """Lengths of the greedy extractive fragments F(A, S) of Grusky et al. (2018), Algorithm 1:
    from each summary position, the longest run of tokens that also occurs in the article; the
    summary resumes after it (or after one token that matched nothing). As in the paper (and
    newsroom's code) the article scan resumes after each match, so a longer match starting inside
    an earlier one is not seen: "a a b" in "a a a b" is fragments [2, 1], not [3].

    >>> fragments("the cat sat on a mat".split(), "a cat sat on the mat".split())
    [1, 3, 1, 1]
    >>> fragments("a a b".split(), "a a a b".split())
    [2, 1]
    """
    found, i = [], 0
    while i < len(summary):
        best, j = 0, 0
        while j < len(article):
            k = 0
            while i + k < len(summary) and j + k < len(article) and summary[i + k] == article[j + k]:
                k += 1
            best = max(best, k)
            j += max(k, 1)  # the paper's j <- j': the scan resumes after a match, not inside it
        if best:
            found.append(best)
        i += max(best, 1)
    return found


def _source_tokens(batch: Batch) -> list[list[str]]:
    sources = batch.sources or [""] * len(batch)
    return [tokens(s if s else p) for s, p in zip(sources, batch.prompts)]


class _Extractive(Objective):
    """Shared by coverage and density: fragments per sample, the statistic in `_stat`."""

    direction = MINIMIZE
    param_choices = {"direction": DIRECTIONS}

    def __init__(self, direction: str = MINIMIZE):
        self.direction = direction  # an instance attribute: `better` is the user's to declare

    def _stat(self, lengths: list[int], n_summary: int) -> float:
        raise NotImplementedError

    def _empty(self, n_source: int) -> float:
        raise NotImplementedError

    def _score(self, batch: Batch) -> np.ndarray:
        values = np.zeros(len(batch))
        for i, (completion, source) in enumerate(zip(batch.completions, _source_tokens(batch))):
            summary = tokens(completion)
            values[i] = self._stat(fragments(summary, source), len(summary)) if summary else self._empty(len(source))
        return values


class Coverage(_Extractive):
    """Newsroom coverage: the share of the completion's words copied from the source, in [0, 1].

    sum |f| / |S| over the extractive fragments f of completion S: a copy of the source scores 1,
    text sharing no word with it 0. Minimised by default (less copying is better); an empty
    completion scores the worst value, 1 (or 0 under `direction: maximize`).
    """

    name = "coverage"
    bounds = (0.0, 1.0)

    def _stat(self, lengths, n_summary):
        return sum(lengths) / n_summary

    def _empty(self, n_source):
        return 1.0 if self.direction == MINIMIZE else 0.0


class Density(_Extractive):
    """Newsroom density: the mean length of the copied fragment each completion word lies in.

    sum |f|^2 / |S|; at most the source's word count (a copy of the whole source). Minimised by
    default; an empty completion scores that maximum (or 0 under `direction: maximize`).
    """

    name = "density"
    bounds = (0.0, None)

    def _stat(self, lengths, n_summary):
        return sum(k * k for k in lengths) / n_summary

    def _empty(self, n_source):
        return float(n_source) if self.direction == MINIMIZE else 0.0


class NovelNgrams(Objective):
    """Share of the completion's n-grams that do not occur in the source, in [0, 1].

    N-grams count with repeats (abstractiveness as reported since See et al., 2017). Maximised by default (more novel
    wording, less copying). A completion with no n-gram (empty, or fewer than n words) scores the
    worst value: 0, or 1 under `direction: minimize`.
    """

    name = "novel_ngrams"
    direction = MAXIMIZE
    bounds = (0.0, 1.0)
    param_ranges = {"n": (1, None)}
    param_choices = {"direction": DIRECTIONS}

    def __init__(self, n: int = 2, direction: str = MAXIMIZE):
        self.n = n
        self.direction = direction

    def _grams(self, toks: list[str]) -> list[tuple]:
        return [tuple(toks[k : k + self.n]) for k in range(len(toks) - self.n + 1)]

    def _score(self, batch: Batch) -> np.ndarray:
        values = np.zeros(len(batch))
        for i, (completion, source) in enumerate(zip(batch.completions, _source_tokens(batch))):
            grams = self._grams(tokens(completion))
            if not grams:
                values[i] = 0.0 if self.direction == MAXIMIZE else 1.0
                continue
            seen = set(self._grams(source))
            values[i] = sum(g not in seen for g in grams) / len(grams)
        return values

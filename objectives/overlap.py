"""Overlap with references: BLEU and chrF (sacrebleu), ROUGE F1 (rouge-score).

These are the same libraries HF evaluate wraps, called directly so no hub download is needed;
the values equal the libraries' own sentence-level scores (sacrebleu on a 0-100 scale). An empty
completion scores 0 with every one of them: it matches nothing in the references, and 0 is each
metric's worst value, which is the honest score for saying nothing.

The library object is built in `__init__`, so a setting the library rejects (a tokenizer whose
extra package is missing) fails when the objective is built, not at its first score.
"""
from __future__ import annotations

import numpy as np
from sacrebleu.metrics import BLEU

from moalign.errors import ConfigError
from moalign.objective import MAXIMIZE, Batch, Objective


def _build(name: str, factory):
    try:
        return factory()
    except (AssertionError, ImportError, RuntimeError, ValueError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError(f"objective {name!r}: {first.strip()}") from None


class Bleu(Objective):
    """Smoothed sentence BLEU (sacrebleu) against all references of each sample, 0-100."""

    name = "bleu"
    direction = MAXIMIZE
    requires = ("references",)
    bounds = (0.0, 100.0)
    param_choices = {"smooth_method": tuple(BLEU.SMOOTH_DEFAULTS), "tokenize": tuple(BLEU.TOKENIZERS)}

    def __init__(self, smooth_method: str = "exp", tokenize: str = "13a", lowercase: bool = False):
        self.smooth_method = smooth_method
        self.tokenize = tokenize
        self.lowercase = lowercase
        self._metric = None
        self._load()

    def _load(self) -> BLEU:
        if self._metric is None:
            self._metric = _build(self.name, lambda: BLEU(smooth_method=self.smooth_method, tokenize=self.tokenize,
                                                          lowercase=self.lowercase, effective_order=True))
        return self._metric

    def _score(self, batch: Batch) -> np.ndarray:
        metric = self._load()
        return np.array([metric.sentence_score(c, r).score for c, r in zip(batch.completions, batch.references)])


class Chrf(Objective):
    """Sentence chrF against all references, 0-100 (`word_order=2` gives chrF++).

    sacrebleu takes any word order and silently computes garbage below 0, so it must be >= 0.
    """

    name = "chrf"
    direction = MAXIMIZE
    requires = ("references",)
    bounds = (0.0, 100.0)
    param_ranges = {"word_order": (0, None)}

    def __init__(self, word_order: int = 0):
        self.word_order = word_order
        self._metric = None
        self._load()

    def _load(self):
        from sacrebleu.metrics import CHRF

        if self._metric is None:
            self._metric = _build(self.name, lambda: CHRF(word_order=self.word_order))
        return self._metric

    def _score(self, batch: Batch) -> np.ndarray:
        metric = self._load()
        return np.array([metric.sentence_score(c, r).score for c, r in zip(batch.completions, batch.references)])


class _Rouge(Objective):
    """ROUGE F1 (rouge-score); with several references, the best one (rouge-score's score_multi)."""

    direction = MAXIMIZE
    requires = ("references",)
    bounds = (0.0, 1.0)
    rouge_type = ""

    def __init__(self, use_stemmer: bool = False):
        self.use_stemmer = use_stemmer
        self._scorer = None
        self._load()

    def _load(self):
        from rouge_score import rouge_scorer

        if self._scorer is None:
            self._scorer = _build(self.name, lambda: rouge_scorer.RougeScorer([self.rouge_type], use_stemmer=self.use_stemmer))
        return self._scorer

    def _score(self, batch: Batch) -> np.ndarray:
        scorer = self._load()
        return np.array([
            scorer.score_multi(refs, completion)[self.rouge_type].fmeasure
            for completion, refs in zip(batch.completions, batch.references)
        ])


class Rouge1(_Rouge):
    """ROUGE-1 F1 (unigram overlap) against the best-matching reference, in [0, 1]."""

    name, rouge_type = "rouge1", "rouge1"


class Rouge2(_Rouge):
    """ROUGE-2 F1 (bigram overlap) against the best-matching reference, in [0, 1]."""

    name, rouge_type = "rouge2", "rouge2"


class RougeL(_Rouge):
    """ROUGE-L F1 (longest common subsequence) against the best-matching reference, in [0, 1]."""

    name, rouge_type = "rouge_l", "rougeL"

"""Overlap with references: BLEU and chrF (sacrebleu), ROUGE F1 (rouge-score).

These are the same libraries HF evaluate wraps, called directly so no hub download is needed;
the values equal the libraries' own sentence-level scores (sacrebleu on a 0-100 scale).
"""
from __future__ import annotations

import numpy as np

from moalign.errors import ConfigError
from moalign.objective import MAXIMIZE, Batch, Objective


class Bleu(Objective):
    """Smoothed sentence BLEU (sacrebleu) against all references of each sample, 0-100."""

    name = "bleu"
    direction = MAXIMIZE
    requires = ("references",)

    def __init__(self, smooth_method: str = "exp", tokenize: str = "13a", lowercase: bool = False):
        if smooth_method not in ("exp", "floor", "add-k", "none"):
            raise ConfigError(f"objective 'bleu': smooth_method must be exp|floor|add-k|none, got {smooth_method!r}")
        self.smooth_method = smooth_method
        self.tokenize = tokenize
        self.lowercase = lowercase
        self._metric = None

    def _score(self, batch: Batch) -> np.ndarray:
        from sacrebleu.metrics import BLEU

        if self._metric is None:
            self._metric = BLEU(smooth_method=self.smooth_method, tokenize=self.tokenize,
                                lowercase=self.lowercase, effective_order=True)
        return np.array([self._metric.sentence_score(c, r).score for c, r in zip(batch.completions, batch.references)])


class Chrf(Objective):
    """Sentence chrF against all references, 0-100 (`word_order=2` gives chrF++)."""

    name = "chrf"
    direction = MAXIMIZE
    requires = ("references",)

    def __init__(self, word_order: int = 0):
        self.word_order = int(word_order)
        self._metric = None

    def _score(self, batch: Batch) -> np.ndarray:
        from sacrebleu.metrics import CHRF

        if self._metric is None:
            self._metric = CHRF(word_order=self.word_order)
        return np.array([self._metric.sentence_score(c, r).score for c, r in zip(batch.completions, batch.references)])


class _Rouge(Objective):
    """ROUGE F1 (rouge-score); with several references, the best one (rouge-score's score_multi)."""

    direction = MAXIMIZE
    requires = ("references",)
    rouge_type = ""

    def __init__(self, use_stemmer: bool = False):
        self.use_stemmer = use_stemmer
        self._scorer = None

    def _score(self, batch: Batch) -> np.ndarray:
        from rouge_score import rouge_scorer

        if self._scorer is None:
            self._scorer = rouge_scorer.RougeScorer([self.rouge_type], use_stemmer=self.use_stemmer)
        return np.array([
            self._scorer.score_multi(refs, completion)[self.rouge_type].fmeasure
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

"""Factual consistency of a completion with its source, judged by an NLI model (SummaC-ZS)."""
from __future__ import annotations

import numpy as np

from moalign.objective import MAXIMIZE, Batch, Objective
from moalign.text import split_sentences


class Factuality(Objective):
    """SummaC-ZS: for each completion sentence, the best support over source chunks, averaged.

    Support is P(entailment) - P(contradiction) (`mode="e-c"`, in [-1, 1]) or P(entailment)
    (`mode="e"`, in [0, 1]). Labels are found by name in the checkpoint's `config.id2label`,
    because label orders differ between NLI checkpoints.

    An empty completion scores the mode's lowest value (-1 for e-c, 0 for e): it asserts nothing
    the source supports. A neutral 0 in e-c would rank silence above any summary with one
    contradicted sentence, which rewards saying nothing.
    """

    name = "factuality"
    direction = MAXIMIZE
    requires = ("source",)
    param_choices = {"mode": ("e-c", "e")}
    param_ranges = {"chunk_sentences": (1, None), "batch_size": (1, None), "max_length": (1, None)}

    def __init__(self, model: str = "cross-encoder/nli-deberta-v3-xsmall", mode: str = "e-c",
                 chunk_sentences: int = 1, batch_size: int = 32, max_length: int | None = None,
                 device: str | None = None):
        self.model = model
        self.mode = mode
        self.chunk_sentences = chunk_sentences
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.bounds = (-1.0, 1.0) if mode == "e-c" else (0.0, 1.0)

    def _chunks(self, source: str) -> list[str]:
        sentences = split_sentences(source) or [source]
        k = self.chunk_sentences
        return [" ".join(sentences[i : i + k]) for i in range(0, len(sentences), k)]

    def _score(self, batch: Batch) -> np.ndarray:
        from moalign.classifiers import label_index, load_classifier, predict_probs

        model, tokenizer = load_classifier(self.model, self.device)
        entail = label_index(model.config, "entail", self.model)
        contradict = label_index(model.config, "contradict", self.model)
        # Flatten every (source chunk, completion sentence) pair of the batch into one NLI run.
        premises, hypotheses, owner = [], [], []  # owner: (sample, sentence) of each pair
        for i, (source, completion) in enumerate(zip(batch.sources, batch.completions)):
            chunks = self._chunks(source)
            for j, sentence in enumerate(split_sentences(completion)):
                premises += chunks
                hypotheses += [sentence] * len(chunks)
                owner += [(i, j)] * len(chunks)
        values = np.full(len(batch), self.bounds[0])  # what a completion without a sentence keeps
        if not premises:
            return values
        probs = predict_probs(model, tokenizer, premises, hypotheses, self.batch_size, self.max_length)
        support = probs[:, entail] - (probs[:, contradict] if self.mode == "e-c" else 0.0)
        best: dict[tuple[int, int], float] = {}
        for key, value in zip(owner, support):
            best[key] = max(best.get(key, -np.inf), float(value))
        per_sample: dict[int, list[float]] = {}
        for (sample, _), value in best.items():
            per_sample.setdefault(sample, []).append(value)
        for sample, sentence_scores in per_sample.items():
            values[sample] = np.mean(sentence_scores)
        return values

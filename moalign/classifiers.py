"""HF sequence classifiers (NLI, toxicity): loaded once, batched, labels found by name."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from moalign.errors import MoalignError


@lru_cache(maxsize=4)
def load_classifier(name_or_path: str, device: str | None = None):
    """(model, tokenizer) in eval mode on `device` (CUDA when present)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from moalign.models import check_model, default_device

    # Offline or with the hub unreachable, transformers retries for ~50 s before failing: check first.
    check_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(name_or_path)
    except OSError as exc:
        raise MoalignError(f"cannot load classifier {name_or_path!r}: {exc}".splitlines()[0]) from None
    model.eval().requires_grad_(False)
    return model.to(device or default_device()), tokenizer


def label_index(config, wanted: str, model_name: str) -> int:
    """Index of the label named `wanted`, or else containing it (case-insensitive), e.g. 'entail'.

    An exact name wins so that 'toxic' picks 'toxic' over 'non-toxic'.
    """
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    matches = [i for i, label in id2label.items() if label.lower() == wanted.lower()]
    if not matches:
        matches = [i for i, label in id2label.items() if wanted.lower() in label.lower()]
    if len(matches) != 1:
        raise MoalignError(
            f"model {model_name!r}: cannot find one label containing {wanted!r} in config.id2label {id2label}"
        )
    return matches[0]


def predict_probs(model, tokenizer, texts: list[str], pairs: list[str] | None = None,
                  batch_size: int = 32, max_length: int | None = None) -> np.ndarray:
    """Class probabilities [N, num_labels]; sigmoid for multi-label heads, softmax otherwise."""
    import torch

    limit = max_length or min(getattr(tokenizer, "model_max_length", 512) or 512, 4096)
    multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        args = [texts[start : start + batch_size]]
        if pairs is not None:
            args.append(pairs[start : start + batch_size])
        enc = tokenizer(*args, padding=True, truncation=True, max_length=limit, return_tensors="pt").to(device)
        with torch.inference_mode():
            logits = model(**enc).logits.float()
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
        out.append(probs.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels))

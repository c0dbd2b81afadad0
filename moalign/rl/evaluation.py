"""Evaluate a policy on held-out prompts with any set of objectives (training or Pareto search)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from moalign.objective import Batch
from moalign.rl.config import SamplingConfig
from moalign.rl.sampling import generate
from moalign.scoring import score


def batch_for(records: list[dict], prompt_rows: list[int], completions: list[str], groups=None) -> Batch:
    """A Batch pairing completions with their prompt records' references and sources."""
    rows = [records[i] for i in prompt_rows]
    has_refs = any(r.get("references") for r in records)
    has_src = any(r.get("source") for r in records)
    return Batch(
        prompts=[r["prompt"] for r in rows],
        completions=completions,
        references=[list(r.get("references") or []) for r in rows] if has_refs else None,
        sources=[r.get("source") or "" for r in rows] if has_src else None,
        groups=np.asarray(groups if groups is not None else prompt_rows),
    )


def evaluate_policy(model, tokenizer, records: list[dict], objectives: dict, sampling: SamplingConfig,
                    use_chat_template: bool = True, seed: int = 0, batch_prompts: int = 16, counter: dict | None = None,
                    synced: bool = False, progress: bool = True):
    """(per-sample scores, samples table): `eval_num_generations` completions per prompt.

    `counter`, if given, gains the evaluation's cost: `generated_tokens` (sampled completion tokens)
    and `forward_tokens` (each sequence's prompt and completion tokens, as the trainer counts them).
    `synced`: a sharded run, where every process generates (see `moalign.rl.sharding`); a process
    given no `objectives` only generates.
    """
    n = sampling.eval_num_generations
    texts, rows = [], []
    was_training = model.training
    model.eval()
    from tqdm.auto import tqdm

    # a bar on a terminal only (tqdm's disable=None), as every long phase has
    bar = tqdm(total=len(records), desc="evaluate", unit="prompt", leave=False, disable=None if progress else True)
    for start in range(0, len(records), batch_prompts):
        chunk = records[start : start + batch_prompts]
        rollout = generate(model, tokenizer, [r["prompt"] for r in chunk], n, sampling.max_new_tokens,
                           sampling.eval_temperature, sampling.top_k, sampling.top_p, use_chat_template,
                           seed=seed + start, static_cache=sampling.static_cache, synced=synced)
        texts += rollout.texts
        if counter is not None:
            counter["generated_tokens"] = counter.get("generated_tokens", 0) + int(rollout.completion_mask.sum())
            counter["forward_tokens"] = counter.get("forward_tokens", 0) + int(rollout.attention_mask.sum())
        rows += [start + i for i in rollout.prompt_index]
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    scores = score(batch_for(records, rows, texts), objectives) if objectives else pd.DataFrame(index=range(len(texts)))
    samples = pd.DataFrame({"prompt": [records[i]["prompt"] for i in rows], "completion": texts})
    return scores, pd.concat([samples, scores], axis=1)

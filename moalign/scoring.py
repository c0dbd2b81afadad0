"""Score samples with several objectives at once, and summarise the scores."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from moalign.objective import Batch, Objective
from moalign.registry import build_objectives


def score(samples: Sequence[dict] | pd.DataFrame | Batch, objectives: Any, progress: bool = False) -> pd.DataFrame:
    """One column per objective, one row per sample (a DataFrame's index is kept), values in each
    objective's natural direction; NaN only where an objective's `on_invalid` is `drop`.

    Each column's bounds go to `frame.attrs["bounds"]`, so `summarize` clips intervals to them.

    >>> score([{"prompt": "Hi", "completion": "Hello there"}], ["verbosity"])["verbosity"].tolist()
    [2.0]
    """
    index = samples.index if isinstance(samples, pd.DataFrame) else None
    if isinstance(samples, pd.DataFrame):
        samples = samples.to_dict("records")
    batch = samples if isinstance(samples, Batch) else Batch.from_records(list(samples))
    built: dict[str, Objective] = build_objectives(objectives)
    for objective in built.values():  # fail on missing fields before any model loads
        objective.check_fields(batch)
    columns = {}
    for column, objective in tqdm(built.items(), desc="objectives", disable=not progress, leave=False):
        columns[column] = objective.score(batch)
    frame = pd.DataFrame(columns, index=index)
    frame.attrs["bounds"] = {column: objective.bounds for column, objective in built.items()}
    return frame


def clip_to_bounds(low, high, bounds=(None, None)):
    """An interval (`low`, `high`; floats or arrays) moved inside `bounds` (lower, upper; None is
    unbounded): a t-interval around a mean near 0 would otherwise claim ROUGE can be negative.

    >>> clip_to_bounds(-0.2, 0.7, (0.0, 1.0))
    (0.0, 0.7)
    >>> clip_to_bounds(90.0, 104.0, (0.0, 100.0))
    (90.0, 100.0)
    """
    lower, upper = bounds
    low, high = (np.clip(np.asarray(v, dtype=float), lower, upper) for v in (low, high))
    return (float(low), float(high)) if low.ndim == 0 and high.ndim == 0 else (low, high)


def summarize(scores: pd.DataFrame, objectives: Any = None, prompts: Sequence | None = None,
              n_boot: int = 1000) -> pd.DataFrame:
    """Mean, std and a 95% percentile bootstrap interval of each column, over its valid (non-NaN)
    values, the interval a front's scores get (`moalign.pareto.uncertainty`).

    The unit resampled is the prompt: with `prompts` (one per row), the completions of one prompt
    are averaged first, since they are not independent answers; without, each row is its own
    prompt. `n` counts the prompts with a valid value, `n_samples` the valid values, `n_dropped`
    the NaN ones (`on_invalid: drop`). Intervals are clipped to each objective's bounds: those of
    `objectives` (anything `build_objectives` takes) where given, else those `score` stored in
    `scores.attrs`. Seeded: the same scores give the same interval.
    """
    bounds = dict(scores.attrs.get("bounds", {}))
    if objectives is not None:
        bounds.update({column: o.bounds for column, o in build_objectives(objectives).items()})
    units = np.arange(len(scores)) if prompts is None else pd.factorize(pd.Series(list(prompts), dtype=object))[0]
    rows = {}
    for column in scores.columns:
        values = scores[column].to_numpy(dtype=float)
        valid = ~np.isnan(values)
        per_prompt = pd.Series(values[valid]).groupby(units[valid], sort=False).mean().to_numpy()
        n = len(per_prompt)
        mean = float(per_prompt.mean()) if n else float("nan")
        std = float(per_prompt.std(ddof=1)) if n > 1 else 0.0
        low = high = mean
        if n > 1 and std > 0:  # scipy's percentile bootstrap over prompts (constant data: no spread to draw)
            ci = stats.bootstrap((per_prompt,), np.mean, n_resamples=n_boot, confidence_level=0.95,
                                 method="percentile", random_state=np.random.default_rng(0)).confidence_interval
            low, high = float(ci.low), float(ci.high)
        low, high = clip_to_bounds(low, high, bounds.get(column, (None, None)))
        rows[column] = {"mean": mean, "std": std, "ci95_low": low, "ci95_high": high, "n": n,
                        "n_samples": int(valid.sum()), "n_dropped": int((~valid).sum())}
    return pd.DataFrame(rows).T.astype({"n": int, "n_samples": int, "n_dropped": int})

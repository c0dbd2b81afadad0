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


def summarize(scores: pd.DataFrame, objectives: Any = None) -> pd.DataFrame:
    """Mean, std and a 95% Student-t confidence interval of each column, over its valid (non-NaN)
    values: `n` counts them, `n_dropped` the NaN ones (`on_invalid: drop`).

    Intervals are clipped to each objective's bounds: those of `objectives` (anything
    `build_objectives` takes) where given, else those `score` stored in `scores.attrs`.
    """
    bounds = dict(scores.attrs.get("bounds", {}))
    if objectives is not None:
        bounds.update({column: o.bounds for column, o in build_objectives(objectives).items()})
    rows = {}
    for column in scores.columns:
        values = scores[column].to_numpy(dtype=float)
        valid = values[~np.isnan(values)]
        n = len(valid)
        mean = float(valid.mean()) if n else float("nan")
        std = float(valid.std(ddof=1)) if n > 1 else 0.0
        half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else 0.0
        low, high = clip_to_bounds(mean - half, mean + half, bounds.get(column, (None, None)))
        rows[column] = {"mean": mean, "std": std, "ci95_low": low, "ci95_high": high, "n": n,
                        "n_dropped": len(values) - n}
    return pd.DataFrame(rows).T.astype({"n": int, "n_dropped": int})

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
    """One column per objective, one row per sample, values in each objective's natural direction.

    >>> score([{"prompt": "Hi", "completion": "Hello there"}], ["verbosity"])["verbosity"].tolist()
    [2.0]
    """
    if isinstance(samples, pd.DataFrame):
        samples = samples.to_dict("records")
    batch = samples if isinstance(samples, Batch) else Batch.from_records(list(samples))
    built: dict[str, Objective] = build_objectives(objectives)
    for objective in built.values():  # fail on missing fields before any model loads
        objective.check_fields(batch)
    columns = {}
    for column, objective in tqdm(built.items(), desc="objectives", disable=not progress, leave=False):
        columns[column] = objective.score(batch)
    return pd.DataFrame(columns)


def summarize(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and a 95% Student-t confidence interval of each column."""
    rows = {}
    for column in scores.columns:
        values = scores[column].to_numpy(dtype=float)
        n = len(values)
        mean = float(values.mean()) if n else float("nan")
        std = float(values.std(ddof=1)) if n > 1 else 0.0
        half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else 0.0
        rows[column] = {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}
    return pd.DataFrame(rows).T.astype({"n": int})

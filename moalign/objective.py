"""The objective contract: a named, directed, batched scorer of (prompt, completion) samples.

Subclasses declare `name`, `direction` and `requires`, take every parameter as an explicit
`__init__` argument (so `get_params` and logging work without effort, as in scikit-learn) and
implement `_score(batch)`. The public `score` validates the batch and the result, so a plugin
never sees an empty or inconsistent batch and never leaks NaN.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from moalign.errors import MoalignError

MAXIMIZE, MINIMIZE = "maximize", "minimize"
FIELDS = ("references", "source")


@dataclass
class Batch:
    """Columns of a batch of samples. `groups` ties completions sampled for the same prompt.

    >>> b = Batch(prompts=["Hi"], completions=["Hello!"])
    >>> len(b)
    1
    """

    prompts: list[str]
    completions: list[str]
    references: list[list[str]] | None = None
    sources: list[str] | None = None
    groups: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.completions)
        if len(self.prompts) != n:
            raise MoalignError(f"batch has {len(self.prompts)} prompts but {n} completions")
        for name in ("references", "sources"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise MoalignError(f"batch has {len(col)} {name} but {n} completions")
        if self.groups is None:
            # Completions of the same prompt form a group (n samples per prompt in RL).
            _, self.groups = np.unique(np.asarray(self.prompts, dtype=object), return_inverse=True)
        self.groups = np.asarray(self.groups).reshape(-1)
        if len(self.groups) != n:
            raise MoalignError(f"batch has {len(self.groups)} group ids but {n} completions")

    def __len__(self) -> int:
        return len(self.completions)

    @classmethod
    def from_records(cls, records: Sequence[dict]) -> "Batch":
        """Build a batch from dicts with `prompt`, `completion` and optional `references`/`source`."""
        has_refs = any(r.get("references") is not None for r in records)
        has_src = any(r.get("source") is not None for r in records)
        return cls(
            prompts=[r.get("prompt") or "" for r in records],
            completions=[r.get("completion") or "" for r in records],
            references=[list(r.get("references") or []) for r in records] if has_refs else None,
            sources=[r.get("source") or "" for r in records] if has_src else None,
        )

    def group_indices(self) -> list[np.ndarray]:
        """Indices of each group's members, in order of first appearance."""
        return [np.flatnonzero(self.groups == g) for g in dict.fromkeys(self.groups.tolist())]


def init_params(cls) -> list[str]:
    """Names of the explicit `__init__` arguments of `cls` (no self, *args or **kwargs)."""
    sig = inspect.signature(cls.__init__)
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [name for name, p in sig.parameters.items() if name != "self" and p.kind not in kinds]


class Objective:
    """Base class of every objective. See the module docstring for the contract."""

    name: ClassVar[str] = ""
    direction: ClassVar[str] = MAXIMIZE
    requires: ClassVar[tuple[str, ...]] = ()  # subset of FIELDS
    is_group: ClassVar[bool] = False  # scores depend on the other members of a group

    @property
    def greater_is_better(self) -> bool:
        return self.direction == MAXIMIZE

    def score(self, batch: Batch) -> np.ndarray:
        """One float per sample, in the objective's natural direction, never NaN."""
        self.check_fields(batch)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float64)
        values = np.asarray(self._score(batch), dtype=np.float64).reshape(-1)
        if values.shape != (len(batch),):
            raise RuntimeError(f"objective {self.name!r} returned {values.shape[0]} values for {len(batch)} samples")
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)

    def _score(self, batch: Batch) -> np.ndarray:
        raise NotImplementedError

    def check_fields(self, batch: Batch) -> None:
        for field in self.requires:
            column = batch.references if field == "references" else batch.sources
            if column is None:
                raise MoalignError(f"objective {self.name!r} needs the field {field!r}, which the data lacks")
            if field == "references" and any(len(r) == 0 for r in column):
                row = next(i for i, r in enumerate(column) if len(r) == 0)
                raise MoalignError(f"objective {self.name!r} needs 'references', but sample {row} has none")

    def get_params(self) -> dict:
        """Constructor arguments and their current values (what MLflow logs)."""
        return {p: getattr(self, p) for p in init_params(type(self))}

    def __getstate__(self):
        # Loaded models are caches, rebuilt lazily after unpickling (objectives travel to workers).
        return {k: (None if k.startswith("_") else v) for k, v in self.__dict__.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

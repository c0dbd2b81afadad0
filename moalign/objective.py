"""The objective contract: a named, directed, batched scorer of (prompt, completion) samples.

Subclasses declare `name`, `direction` and `requires`, take every parameter as an explicit
`__init__` argument (so `get_params` and logging work without effort, as in scikit-learn) and
implement `_score(batch)`. The base class does the rest, so a plugin writes none of it: the registry
checks parameters against their annotations and the declared `param_ranges`/`param_choices` when
the objective is built; `score` validates the batch, and turns NaN, inf or a value outside the
declared `bounds` into an error naming the sample (or, by `on_invalid`, the worst value or NaN),
because a silent 0 can be the best score an objective has.
"""
from __future__ import annotations

import inspect
import logging
import math
import numbers
import types
import typing
from collections import abc
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Sequence

import numpy as np

from moalign.errors import ConfigError, MoalignError

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
        """Build a batch from dicts with `prompt`, `completion` and optional `references` (a list,
        or one string), `reference` (one string) and `source`. A missing value (None, NaN) is absent.

        >>> Batch.from_records([{"prompt": "p", "completion": "c", "reference": "r"}]).references
        [['r']]
        """
        refs = [_references(r) for r in records]
        sources = [_present(r.get("source")) for r in records]
        has_refs, has_src = any(r is not None for r in refs), any(s is not None for s in sources)
        return cls(
            prompts=[_present(r.get("prompt")) or "" for r in records],
            completions=[_present(r.get("completion")) or "" for r in records],
            references=[r or [] for r in refs] if has_refs else None,
            sources=[s or "" for s in sources] if has_src else None,
        )

    def group_indices(self) -> list[np.ndarray]:
        """Indices of each group's members, in order of first appearance."""
        return [np.flatnonzero(self.groups == g) for g in dict.fromkeys(self.groups.tolist())]


def _present(value):
    """`value`, or None where it is missing: None or NaN (an empty cell of a DataFrame)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _references(record: dict) -> list[str] | None:
    # A lone string is one reference: list("abc") would silently make three one-letter ones.
    refs = _present(record.get("references"))
    if refs is None:
        refs = _present(record.get("reference"))
    return [refs] if isinstance(refs, str) else (None if refs is None else list(refs))


@lru_cache(maxsize=None)  # a class's signature does not change, and reading it is slow
def init_params(cls) -> tuple[str, ...]:
    """Names of the explicit `__init__` arguments of `cls` (no self, *args or **kwargs)."""
    sig = inspect.signature(cls.__init__)
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return tuple(name for name, p in sig.parameters.items() if name != "self" and p.kind not in kinds)


_KINDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
          type(None): "null", dict: "a mapping", abc.Mapping: "a mapping", list: "a list", tuple: "a list",
          abc.Sequence: "a list"}


def _fits(tp, value) -> bool:
    """Whether `value` has annotation `tp`'s type; containers are checked shallowly."""
    origin = typing.get_origin(tp) or tp
    if origin in (typing.Union, types.UnionType):
        return any(_fits(t, value) for t in typing.get_args(tp))
    if origin is type(None) or origin is None:
        return value is None
    if origin is bool:  # YAML's `maybe` or 1 is not a boolean
        return isinstance(value, bool)
    if origin is int:  # True is an int to Python, never to a config
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if origin is str:
        return isinstance(value, str)
    if origin in (dict, abc.Mapping):
        return isinstance(value, abc.Mapping)
    if origin in (list, tuple, abc.Sequence):  # YAML has no tuples: a list stands for one
        return isinstance(value, (list, tuple))
    return True  # Any, Literal or a class: the objective checks it itself


def _describe(tp) -> str:
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return " or ".join(_KINDS.get(typing.get_origin(t) or t, getattr(t, "__name__", str(t))) for t in options)


@lru_cache(maxsize=None)
def _init_hints(cls) -> dict:
    # cached: resolving string annotations costs ~0.2 ms, and the reward rebuilds objectives every step
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that cannot be resolved at runtime: only ranges are checked
        return {}


def check_params(cls, params: dict, name: str | None = None) -> None:
    """Raise ConfigError naming the objective and parameter when a value has the wrong type for
    its `__init__` annotation or falls outside the class's `param_ranges` / `param_choices`.

    >>> from moalign.objectives.diversity import DistinctN
    >>> check_params(DistinctN, {"n": 1.5})
    Traceback (most recent call last):
    moalign.errors.ConfigError: objective 'distinct_n': parameter 'n' must be an integer, got 1.5
    """
    where = f"objective {name or cls.name!r}: parameter"
    hints = _init_hints(cls)
    for key, value in params.items():
        tp = hints.get(key)
        if tp is not None and not _fits(tp, value):
            raise ConfigError(f"{where} {key!r} must be {_describe(tp)}, got {value!r}")
        if value is None:
            continue
        choices = cls.param_choices.get(key)
        if choices is not None and value not in choices:
            raise ConfigError(f"{where} {key!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
        if key in cls.param_ranges:
            low, high = cls.param_ranges[key]
            if not _fits(float, value) or (low is not None and value < low) or (high is not None and value > high):
                span = f">= {low}" if high is None else f"<= {high}" if low is None else f"between {low} and {high}"
                raise ConfigError(f"{where} {key!r} must be {span}, got {value!r}")


def check_bounds(bounds, name: str) -> tuple[float | None, float | None]:
    """`bounds` as a (low, high) tuple of float|None with low < high, else ConfigError."""
    ok = isinstance(bounds, (list, tuple)) and len(bounds) == 2
    ok = ok and all(b is None or _fits(float, b) for b in bounds)
    if not ok or (None not in bounds and bounds[0] >= bounds[1]):
        raise ConfigError(f"objective {name!r}: bounds must be [low, high] with low < high (null: unbounded), got {bounds!r}")
    return tuple(None if b is None else float(b) for b in bounds)


ON_INVALID = ("error", "worst", "drop")
_log = logging.getLogger(__name__)


class Objective:
    """Base class of every objective. See the module docstring for the contract."""

    name: ClassVar[str] = ""
    direction: ClassVar[str] = MAXIMIZE
    requires: ClassVar[tuple[str, ...]] = ()  # subset of FIELDS
    is_group: ClassVar[bool] = False  # scores depend on the other members of a group
    # Every value lies in [low, high] (None: unbounded). Reports clip confidence intervals to it and
    # on_invalid="worst" uses the worst end; an instance may set its own (it can depend on a mode).
    bounds: tuple[float | None, float | None] = (None, None)
    # Declared limits of `__init__` arguments, checked with their annotations when the objective is
    # built (registry.get_objective), so a bad value fails there and not inside a library later.
    param_ranges: ClassVar[dict[str, tuple[float | None, float | None]]] = {}  # inclusive
    param_choices: ClassVar[dict[str, tuple]] = {}

    @property
    def greater_is_better(self) -> bool:
        return self.direction == MAXIMIZE

    @property
    def on_invalid(self) -> str:
        """What a NaN, infinite or out-of-bounds value becomes: `error` (raise), `worst` (the worst
        bound, else the batch's worst valid value) or `drop` (NaN: summaries and rewards skip it)."""
        return self.__dict__.get("on_invalid", "error")

    @on_invalid.setter
    def on_invalid(self, value: str) -> None:
        if value not in ON_INVALID:
            raise ConfigError(f"objective {self.name!r}: on_invalid must be one of {', '.join(ON_INVALID)}; got {value!r}")
        self.__dict__["on_invalid"] = value  # stored in __dict__ so that it pickles with the objective

    def score(self, batch: Batch) -> np.ndarray:
        """One float per sample, in the objective's natural direction, within `bounds`.

        Invalid values (NaN, inf, outside `bounds`) are handled by `on_invalid`; only `drop`
        returns NaN.
        """
        self.check_fields(batch)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float64)
        try:
            values = np.asarray(self._score(batch), dtype=np.float64).reshape(-1)
        except MoalignError:
            raise
        except Exception as exc:  # a plugin's own failure, named: which objective, what it raised
            detail = str(exc).strip().splitlines()
            raise MoalignError(f"objective {self.name!r} failed: {type(exc).__name__}"
                               f"{': ' + detail[0][:300] if detail else ''}") from exc
        if values.shape != (len(batch),):
            raise RuntimeError(f"objective {self.name!r} returned {values.shape[0]} values for {len(batch)} samples")
        values, invalid = self._within_bounds(values)
        return self._handle_invalid(values, invalid, batch) if invalid.any() else values

    def _score(self, batch: Batch) -> np.ndarray:
        raise NotImplementedError

    def _within_bounds(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values with rounding noise at a bound clipped to it, and the mask of invalid ones."""
        invalid = ~np.isfinite(values)
        low, high = self.bounds
        for bound, sign in ((low, -1.0), (high, 1.0)):
            if bound is None:
                continue
            excess = np.where(invalid, 0.0, sign * (values - bound))
            # float32 models land a hair outside (1 - cos(x, x) = -6e-8): that is the bound itself
            invalid |= excess > 1e-6 * max(1.0, abs(bound))
            values = np.where((excess > 0) & ~invalid, bound, values)
        return values, invalid

    def _handle_invalid(self, values: np.ndarray, invalid: np.ndarray, batch: Batch) -> np.ndarray:
        first = int(np.flatnonzero(invalid)[0])
        what = f"{values[first]}" + (f", outside its bounds {self.bounds}" if np.isfinite(values[first]) else "")
        if self.on_invalid == "error":
            text = batch.completions[first]
            text = text if len(text) <= 40 else text[:40] + "..."
            raise MoalignError(
                f"objective {self.name!r} scored sample {first} (completion {text!r}) as {what}; "
                f"set its on_invalid to 'worst' or 'drop' to accept such samples"
            )
        values = values.copy()
        if self.on_invalid == "drop":
            values[invalid] = np.nan
        else:
            worst = self.bounds[0] if self.greater_is_better else self.bounds[1]
            if worst is None:
                valid = values[~invalid]
                if not len(valid):
                    raise MoalignError(f"objective {self.name!r}: every sample scored NaN, inf or out of bounds "
                                       f"(sample {first}: {what}), so there is no worst valid value to use")
                worst = valid.min() if self.greater_is_better else valid.max()
            values[invalid] = worst
        _log.warning("objective %r: %d of %d samples scored NaN, inf or out of bounds (sample %d: %s); on_invalid=%s",
                     self.name, int(invalid.sum()), len(values), first, what, self.on_invalid)
        return values

    def check_fields(self, batch: Batch) -> None:
        for field in self.requires:
            column = batch.references if field == "references" else batch.sources
            if column is None:
                raise MoalignError(f"objective {self.name!r} needs the field {field!r}, which the data lacks")
            if field == "references" and any(len(r) == 0 for r in column):
                row = next(i for i, r in enumerate(column) if len(r) == 0)
                raise MoalignError(f"objective {self.name!r} needs 'references', but sample {row} has none")

    def get_params(self) -> dict:
        """Constructor arguments and their current values, and `on_invalid` (what MLflow logs)."""
        return {**{p: getattr(self, p) for p in init_params(type(self))}, "on_invalid": self.on_invalid}

    def __getstate__(self):
        # Loaded models are caches, rebuilt lazily after unpickling (objectives travel to workers).
        return {k: (None if k.startswith("_") else v) for k, v in self.__dict__.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

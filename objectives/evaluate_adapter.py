"""Any HF `evaluate` module as an objective (a local script path, or a hub name where reachable)."""
from __future__ import annotations

import numpy as np

from moalign.errors import ConfigError, MoalignError
from moalign.objective import MAXIMIZE, MINIMIZE, Batch, Objective, check_bounds


class EvaluateMetric(Objective):
    """Per-sample scores from `evaluate.load(path).compute(...)[key]`.

    The module is called once on the whole batch; if `key` holds one value per sample (as with
    rouge's `use_aggregator=False`) that is the score, otherwise the corpus-level metric is
    computed per sample (one call each, since such modules only return an aggregate).

    `bounds` ([low, high], null for unbounded) are the wrapped metric's range, which only the user
    knows; they default to unbounded. An empty completion gets whatever the module computes for
    an empty prediction.
    """

    name = "evaluate"
    requires = ("references",)
    param_choices = {"direction": (MAXIMIZE, MINIMIZE)}

    def __init__(self, path: str = "", key: str | None = None, direction: str = MAXIMIZE,
                 compute_kwargs: dict | None = None, single_reference: bool = False,
                 bounds: tuple[float | None, float | None] = (None, None)):
        if not path:
            raise ConfigError("objective 'evaluate': 'path' (module path or hub name) is required")
        self.path = path
        self.key = key
        self.direction = direction  # per instance: it depends on the wrapped metric
        self.compute_kwargs = dict(compute_kwargs or {})
        self.single_reference = single_reference
        self.bounds = check_bounds(bounds, self.name)
        self._module = None

    def _load(self):
        if self._module is None:
            import evaluate

            try:
                self._module = evaluate.load(self.path)
            except Exception as exc:  # evaluate raises many types (FileNotFoundError, ConnectionError, ...)
                raise MoalignError(f"objective 'evaluate': cannot load module {self.path!r}: {exc}".splitlines()[0]) from None
        return self._module

    def _value(self, result: dict):
        key = self.key or next(iter(result))
        if key not in result:
            raise MoalignError(f"objective 'evaluate': module {self.path!r} returned no key {key!r} (keys: {sorted(result)})")
        return result[key]

    def _score(self, batch: Batch) -> np.ndarray:
        module = self._load()
        refs = [r[0] for r in batch.references] if self.single_reference else batch.references
        value = self._value(module.compute(predictions=batch.completions, references=refs, **self.compute_kwargs))
        if isinstance(value, (list, tuple, np.ndarray)) and len(value) == len(batch):
            return np.asarray(value, dtype=float)
        return np.array([
            float(self._value(module.compute(predictions=[c], references=[r], **self.compute_kwargs)))
            for c, r in zip(batch.completions, refs)
        ])

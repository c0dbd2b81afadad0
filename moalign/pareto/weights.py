"""Weight vectors to search over, from pymoo's reference directions or an explicit list."""
from __future__ import annotations

import numpy as np
from pymoo.util.ref_dirs import get_reference_directions

from moalign.errors import ConfigError
from moalign.scalarization import validate_weights


def weight_vectors(spec, names: list[str]) -> np.ndarray:
    """[K, M] weight vectors, each non-negative and summing to 1.

    `spec` is a list of vectors, or a mapping `{method: das-dennis, n_partitions: 4}` /
    `{method: energy, n_points: 6, seed: 1}` passed to pymoo's `get_reference_directions`.

    >>> weight_vectors({"method": "das-dennis", "n_partitions": 2}, ["a", "b"]).tolist()
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    m = len(names)
    if isinstance(spec, (list, tuple)):
        vectors = np.array([validate_weights(w, names) for w in spec])
    elif isinstance(spec, dict):
        params = dict(spec)
        method = params.pop("method", "das-dennis")
        if method not in ("das-dennis", "uniform", "energy"):
            raise ConfigError(f"search.weights.method must be das-dennis|energy, got {method!r}")
        try:
            vectors = get_reference_directions(method, m, **params)
        except (TypeError, ValueError, Exception) as exc:  # pymoo raises bare Exceptions for bad sizes
            raise ConfigError(f"search.weights: pymoo cannot build {method!r} directions with {params}: {exc}") from None
        vectors = np.clip(vectors, 0.0, None)
        vectors = vectors / vectors.sum(1, keepdims=True)
    else:
        raise ConfigError(f"search.weights: expected a list of vectors or a mapping, got {spec!r}")
    if len(vectors) == 0:
        raise ConfigError("search.weights: no weight vectors")
    # das-dennis lists vectors from (0, 1) to (1, 0); order them by the first objective's weight
    return vectors[np.lexsort(vectors.T[::-1])[::-1]]

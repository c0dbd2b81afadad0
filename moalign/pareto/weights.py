"""Weight vectors to search over, from pymoo's reference directions or an explicit list."""
from __future__ import annotations

import numpy as np
from pymoo.util.ref_dirs import get_reference_directions

from moalign.errors import ConfigError
from moalign.scalarization import validate_weights

# The size parameters each method takes, and the smallest value that yields a front (energy
# places at least one point per objective; pymoo fails with an AttributeError below that).
SIZES = {"das-dennis": {"n_partitions": 1, "n_points": 1}, "uniform": {"n_partitions": 1, "n_points": 1},
         "energy": {"n_points": "m"}}


def _check_params(method: str, params: dict, m: int) -> None:
    """pymoo answers bad sizes with TypeErrors and AttributeErrors from deep inside; refuse them
    here, by key, so that whatever pymoo raises afterwards is a real problem."""
    allowed = dict(SIZES[method], **({"seed": 0} if method == "energy" else {}))
    for key, value in params.items():
        if key not in allowed:
            raise ConfigError(f"search.weights.{key}: not a parameter of {method!r} (known: {', '.join(allowed)})")
        minimum = m if allowed[key] == "m" else allowed[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"search.weights.{key}: expected an integer >= {minimum}, got {value!r}")
    if not any(k in params for k in SIZES[method]):
        raise ConfigError(f"search.weights: {method!r} needs {' or '.join(SIZES[method])}")


def weight_vectors(spec, names: list[str]) -> np.ndarray:
    """[K, M] distinct weight vectors, each non-negative and summing to 1.

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
        if method not in SIZES:
            raise ConfigError(f"search.weights.method must be das-dennis|energy, got {method!r}")
        _check_params(method, params, m)
        try:
            vectors = get_reference_directions(method, m, **params)
        except Exception as exc:
            if type(exc) is not Exception:  # pymoo's own size errors are bare Exceptions; others are bugs
                raise
            message = " ".join(str(exc).split())
            raise ConfigError(f"search.weights: pymoo cannot build {method!r} directions with {params}: "
                              f"{message}") from None
        vectors = np.clip(vectors, 0.0, None)
        vectors = vectors / vectors.sum(1, keepdims=True)
    else:
        raise ConfigError(f"search.weights: expected a list of vectors or a mapping, got {spec!r}")
    if len(vectors) == 0:
        raise ConfigError("search.weights: no weight vectors")
    # one policy per distinct vector: [1, 0] listed twice (or as [2, 0]) would train it twice
    _, first = np.unique(vectors.round(4), axis=0, return_index=True)
    vectors = vectors[np.sort(first)]
    # das-dennis lists vectors from (0, 1) to (1, 0); order them by the first objective's weight
    return vectors[np.lexsort(vectors.T[::-1])[::-1]]

"""Search strategies, one module each, behind the interface in `base.py`.

`STRATEGIES` maps a strategy's name (`SearchConfig.strategy`) to the module that defines it as
`STRATEGY`; modules are imported on first use. A module added to this package by name
(mixing.py, conditioned.py) is registered as soon as it exists.
"""
from __future__ import annotations

import importlib
import importlib.util

from moalign.errors import ConfigError

# each registered when its module is present
_ORDER = ("grid", "soups", "adaptive", "mixing", "conditioned", "best_of_n", "rejection", "rewards_in_context")


def _available() -> dict[str, str]:
    return {n: f"{__name__}.{n}" for n in _ORDER if importlib.util.find_spec(f"{__name__}.{n}") is not None}


STRATEGIES: dict[str, str] = _available()


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def get_strategy(name: str, key: str = "strategy"):
    """The Strategy class registered as `name`; ConfigError naming `key` for an unknown one."""
    if name not in STRATEGIES:
        raise ConfigError(f"{key} must be one of {', '.join(STRATEGIES)}, got {name!r}")
    return importlib.import_module(STRATEGIES[name]).STRATEGY

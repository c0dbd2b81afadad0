"""Objective registry: names map to classes through the `moalign.objectives` entry-point group.

Built-in objectives are registered in moalign's own pyproject.toml, third-party packages add
theirs the same way, and `register_objective` adds one in-process (tests, notebooks).

>>> from moalign.registry import get_objective
>>> get_objective("verbosity", unit="words").direction
'minimize'
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Mapping

from moalign.errors import ConfigError
from moalign.objective import Objective, init_params

GROUP = "moalign.objectives"
_extra: dict[str, type[Objective]] = {}


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def get_objective_names() -> list[str]:
    """Every registered objective name, sorted."""
    return sorted(set(_entry_points()) | set(_extra))


def register_objective(name: str, cls: type[Objective]) -> None:
    """Register an objective class under `name` for this process."""
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise TypeError(f"{cls!r} is not an Objective subclass")
    _extra[name] = cls


def get_objective_class(name: str) -> type[Objective]:
    if name in _extra:
        return _extra[name]
    eps = _entry_points()
    if name not in eps:
        names = ", ".join(get_objective_names()) or "none (is moalign installed? pip install -e .)"
        raise ConfigError(f"unknown objective {name!r}; available: {names}")
    return eps[name].load()


def get_objective(name: str, **params: Any) -> Objective:
    """Instantiate objective `name`; an unknown parameter is an error that names it."""
    cls = get_objective_class(name)
    accepted = init_params(cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"objective {name!r}: unknown parameter {unknown[0]!r} (accepted: {', '.join(accepted) or 'none'})"
        )
    return cls(**params)


def build_objectives(spec: Any) -> dict[str, Objective]:
    """Objectives from a config value, keyed by the column name they score into.

    Accepts a list of names (`["bleu", "verbosity"]`), a comma-separated string, Objective
    instances, or a mapping `{column: {param: value}}` where the optional `type` key picks the
    registered objective (default: the column name), so one objective can appear twice:
    `{"words": {"type": "verbosity", "unit": "words"}, "chars": {"type": "verbosity", "unit": "chars"}}`.
    """
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    if isinstance(spec, Objective):
        spec = [spec]
    if isinstance(spec, Mapping):
        out = {}
        for column, params in spec.items():
            if isinstance(params, Objective):
                out[str(column)] = params
                continue
            if not isinstance(params, (dict, type(None))):
                raise ConfigError(f"objectives.{column}: expected a mapping of parameters, got {params!r}")
            params = dict(params or {})
            kind = params.pop("type", column)
            out[str(column)] = get_objective(kind, **params)
        spec_out = out
    else:
        spec_out = {}
        for item in spec:
            obj = item if isinstance(item, Objective) else get_objective(str(item))
            spec_out[obj.name if isinstance(item, Objective) else str(item)] = obj
    if not spec_out:
        raise ConfigError("no objectives given")
    return spec_out

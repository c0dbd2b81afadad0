"""Objective registry: names map to classes through the `moalign.objectives` entry-point group.

Built-in objectives are registered in moalign's own pyproject.toml, third-party packages add
theirs the same way, and `register_objective` adds one in-process (tests, notebooks).

>>> from moalign.registry import get_objective
>>> get_objective("verbosity", unit="words").direction
'minimize'
"""
from __future__ import annotations

import posixpath
import re
from importlib.metadata import entry_points
from typing import Any, Mapping

from moalign.errors import ConfigError
from moalign.objective import Objective, check_params, init_params

GROUP = "moalign.objectives"
_extra: dict[str, type[Objective]] = {}


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def get_objective_names() -> list[str]:
    """Every registered objective name, sorted."""
    return sorted(set(_entry_points()) | set(_extra))


def register_objective(name_or_cls: str | type[Objective], cls: type[Objective] | None = None) -> None:
    """Register an objective class for this process, under its declared `name` or the one given.

    >>> class Shout(Objective):
    ...     name = "shout"
    >>> register_objective(Shout)
    >>> "shout" in get_objective_names()
    True
    """
    if cls is None and not isinstance(name_or_cls, str):
        name_or_cls, cls = getattr(name_or_cls, "name", ""), name_or_cls
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise TypeError(f"{cls!r} is not an Objective subclass")
    if not name_or_cls:
        raise ConfigError(f"{cls.__name__} declares no `name`: give one, register_objective(name, cls)")
    _extra[name_or_cls] = cls


def registered_objectives() -> dict[str, type[Objective]]:
    """The objectives `register_objective` added in this process (not the entry points), by name:
    what a search ships to its Ray workers, which see only installed plugins otherwise."""
    return dict(_extra)


def get_objective_class(name: str) -> type[Objective]:
    if name in _extra:
        return _extra[name]
    eps = _entry_points()
    if name not in eps:
        names = ", ".join(get_objective_names()) or "none (is moalign installed? pip install -e .)"
        raise ConfigError(f"unknown objective {name!r}; available: {names}")
    return eps[name].load()


def get_objective(name: str, **params: Any) -> Objective:
    """Instantiate objective `name`; an unknown parameter, or a value of the wrong type or range,
    is a ConfigError naming both. `on_invalid` (error | worst | drop) is accepted by every objective.
    """
    cls = get_objective_class(name)
    on_invalid = params.pop("on_invalid", None)
    accepted = init_params(cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"objective {name!r}: unknown parameter {unknown[0]!r} (accepted: {', '.join([*accepted, 'on_invalid'])})"
        )
    check_params(cls, params, name)
    objective = cls(**params)
    if on_invalid is not None:
        objective.on_invalid = on_invalid
    return objective


# MLflow's rule for metric keys (mlflow.utils.validation), without the colon that its Windows stores
# reject: a column becomes the key `rewards/<column>/mean`, so a bad one would fail mid-run.
_MLFLOW_KEY = re.compile(r"[/\w.\- ]+")


def check_column(column: str) -> str:
    """`column` if MLflow can store it as (part of) a metric key, else ConfigError naming it."""
    ok = isinstance(column, str) and _MLFLOW_KEY.fullmatch(column) and posixpath.normpath(column) == column
    if not ok or column == "." or column.startswith(("/", "..")):  # MLflow treats keys as file paths
        raise ConfigError(
            f"objective column {column!r}: MLflow keys allow only letters, digits, '_', '-', '.', ' ' and '/' "
            "(no leading '/', no '..' or '.' path parts)"
        )
    return column


def _by_column(spec: Any) -> Mapping:
    """Any form `build_objectives` takes as {column: params, an Objective, or None}."""
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    if isinstance(spec, Objective):
        spec = [spec]
    if not isinstance(spec, Mapping):  # a list: each name (or instance's name) is its column
        spec = {(item.name if isinstance(item, Objective) else str(item)): (item if isinstance(item, Objective) else None)
                for item in spec}
    return spec


def objective_types(spec: Any) -> set[str]:
    """The registered names `build_objectives(spec)` would build from, without building anything.

    >>> sorted(objective_types({"words": {"type": "verbosity"}, "chrf": {}}))
    ['chrf', 'verbosity']
    """
    return {params.get("type", column) if isinstance(params, Mapping) else column
            for column, params in _by_column(spec).items() if not isinstance(params, Objective)}


def build_objectives(spec: Any) -> dict[str, Objective]:
    """Objectives from a config value, keyed by the column name they score into.

    Accepts a list of names (`["bleu", "verbosity"]`), a comma-separated string, Objective
    instances, or a mapping `{column: {param: value}}` where the optional `type` key picks the
    registered objective (default: the column name), so one objective can appear twice:
    `{"words": {"type": "verbosity", "unit": "words"}, "chars": {"type": "verbosity", "unit": "chars"}}`.
    Every objective also takes `on_invalid` (`{"chrf": {"on_invalid": "drop"}}`, see Objective);
    a column must be a name MLflow can store.
    """
    out = {}
    for column, params in _by_column(spec).items():
        column = check_column(str(column))
        if isinstance(params, Objective):
            # built by hand, so get_objective's checks did not run
            check_params(type(params), {p: getattr(params, p) for p in init_params(type(params))}, params.name)
            out[column] = params
            continue
        if not isinstance(params, (dict, type(None))):
            raise ConfigError(f"objectives.{column}: expected a mapping of parameters, got {params!r}")
        params = dict(params or {})
        out[column] = get_objective(params.pop("type", column), **params)
    if not out:
        raise ConfigError("no objectives given")
    return out

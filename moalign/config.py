"""Dataclass configs from YAML and `--set key=value` overrides; unknown keys are errors.

Every component has a dataclass with defaults and validation in `__post_init__`; this module maps
nested dicts onto them, naming the full key path (and the file) of whatever is wrong.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Iterable

import yaml

from moalign.errors import ConfigError, MoalignError


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 floats: PyYAML reads `2e-4` as a string, which no one means in a config."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def load_yaml(path: str | Path) -> dict:
    """A YAML mapping from `path`; syntax errors name the file and line."""
    from moalign.data import read_text

    path = Path(path)
    if not path.is_file():
        raise MoalignError(f"{path}: no such config file")
    try:
        data = parse_yaml(read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise MoalignError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})".splitlines()[0]) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise MoalignError(f"{path}: YAML nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MoalignError(f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Set dotted keys from `key=value` strings; values are parsed as YAML (numbers, lists...).

    A list is entered by index or, for a list of named sections (a pipeline's searches), by name:

    >>> apply_overrides({"train": {"lr": 1e-4}}, ["train.lr=2e-4", "seed=3"])
    {'train': {'lr': 0.0002}, 'seed': 3}
    >>> apply_overrides({"searches": [{"name": "soups", "seeds": [0]}]}, ["searches.soups.seeds=[0, 1, 2]"])
    {'searches': [{'name': 'soups', 'seeds': [0, 1, 2]}]}
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except (yaml.YAMLError, RecursionError):
            shown = item if len(item) <= 80 else item[:77] + "..."
            raise ConfigError(f"--set {shown!r}: the value is not valid YAML") from None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = _list_item(node, part, item) if isinstance(node, list) else node.get(part)
            if child is None:
                if isinstance(node, list):  # an empty item (`searches: [~]`)
                    raise ConfigError(f"--set {item!r}: item {part!r} of that list is empty")
                child = node[part] = {}
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        if isinstance(node, list):
            last = parts[-1]
            if not (last.isdigit() and int(last) < len(node)):
                raise ConfigError(f"--set {item!r}: {parts[-2]!r} is a list of {len(node)}: give an index below "
                                  f"{len(node)}, or set the whole list ({parts[-2]}=[...])")
            node[int(last)] = value
            continue
        node[parts[-1]] = value
    return data


def _list_item(items: list, part: str, item: str):
    """The list element `part` names: an index, or the `name` of a section in it."""
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    named = [x for x in items if isinstance(x, dict) and x.get("name") == part]
    if len(named) == 1:
        return named[0]
    if named:
        raise ConfigError(f"--set {item!r}: {len(named)} items are named {part!r}: give the index instead")
    names = [x["name"] for x in items if isinstance(x, dict) and "name" in x]
    raise ConfigError(f"--set {item!r}: no item {part!r} in that list (an index below {len(items)}"
                      + (f", or one of: {', '.join(map(str, names))}" if names else "") + ")")


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


_SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _union_options(tp) -> tuple:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def _check_scalar(tp, value, key: str):
    """Reject a value of the wrong basic type (`lr: fast`), naming the key; ints pass as floats."""
    options = _union_options(tp)
    if value is None and type(None) in options:
        return value
    basics = [t for t in options if t in _SCALARS]
    if not basics or len(basics) != len([t for t in options if t is not type(None)]):
        return _check_container(options, value, key)
    for t in basics:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
    raise ConfigError(f"{key}: expected {' or '.join(_SCALARS[t] for t in basics)}, got {value!r}")


def _check_container(options: tuple, value, key: str):
    """A number, true/false or null where a list or mapping belongs is an error naming the key.

    Strings pass: the sections accept them as shorthand (`objectives: "bleu,chrf"`,
    `constraints: "toxicity <= 0.1"`) and normalise them in `__post_init__`. The items of a typed
    list (`weights: list[float]`) are checked like scalars, each named by its index.
    """
    kinds = {typing.get_origin(t) or t for t in options}
    if isinstance(value, str) or value is None and type(None) in options or not kinds & {list, dict}:
        return value
    for t in options:
        if (typing.get_origin(t) or t) is list and isinstance(value, (list, tuple)):
            args = typing.get_args(t)
            return [_check_scalar(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)] if args else value
        if (typing.get_origin(t) or t) is dict and isinstance(value, dict):
            return value
    if isinstance(value, (list, tuple, dict)):
        return value  # a list where the section takes a mapping of names (or the reverse): its own shorthand
    names = {list: "a list", dict: "a mapping", **_SCALARS}
    wanted = " or ".join(dict.fromkeys(names[k] for k in kinds if k in names))
    raise ConfigError(f"{key}: expected {wanted}, got {value!r}")


def _join_key(where: str, message: str) -> str:
    """`where` + a section's own message, naming each key once.

    A section reports its keys from its own name (`optim.lr must be > 0`); nested at
    `train.optim` that becomes `train.optim.lr must be > 0`, not `train.optim.optim.lr`.
    """
    if not where:
        return message
    parts = where.split(".")
    for k in range(len(parts), 0, -1):
        own = ".".join(parts[-k:])
        if message.startswith(own) and message[len(own):len(own) + 1] in (".", ":", " ", "["):
            return ".".join(parts[:-k] + [message]) if len(parts) > k else message
    return f"{where}.{message}"


def from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass `cls` from `data`, recursing into dataclass-typed fields.

    Unknown keys raise ConfigError naming the key path, e.g. ``train.lerning_rate``.
    """
    prefix = f"{where}." if where else ""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys, got {data!r}")
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}'; known keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        tp = hints.get(name)
        if _is_dataclass_type(tp):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a section (a mapping of keys), got {value!r}")
            value = from_dict(tp, value, f"{prefix}{name}")
        elif tp is not None:
            value = _check_scalar(tp, value, f"{prefix}{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(_join_key(where, str(exc))) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}".splitlines()[0]) from None

"""Typed settings from plain values: the one place where dicts (keyword arguments, YAML, JSON) become the frozen
config dataclasses (``EnvConfig`` with its ``WorldConfig``, ``RenderConfig`` and ``RefinerConfig``, scenario events).

:func:`from_mapping` checks every key against the dataclass's fields (an unknown key is an error, never silently
ignored), builds nested dataclasses from nested mappings, turns lists into tuples where the field holds a tuple, and
validates the result. :func:`field_kinds` describes the fields for schema checks with line numbers (scenario files).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, Mapping

from stag_sim.errors import StagSimError, ValidationError

#: Makes the error for a problem at a key path: ``error(path, message) -> Exception``.
ErrorFactory = Callable[[tuple, str], Exception]


def _default_error(path: tuple, message: str) -> Exception:
    dotted = ".".join(str(p) for p in path)
    return ValidationError(f"{dotted + ': ' if dotted else ''}{message}")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_of(hint) -> type | None:
    """The dataclass a field's type names (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        found = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a) and isinstance(a, type)]
        return found[0] if len(found) == 1 else None
    return None


def _is_tuple(hint) -> bool:
    if typing.get_origin(hint) is tuple:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))
    return False


def _tuple_item(hint):
    """The item type of a ``tuple[X, ...]`` field (or of ``tuple[X, ...] | None``), else None."""
    for h in ([hint] + list(typing.get_args(hint))):
        if typing.get_origin(h) is tuple:
            args = typing.get_args(h)
            if len(args) == 2 and args[1] is Ellipsis:
                return args[0]
    return None


def from_mapping(cls, values: Mapping[str, Any] | Any, path: tuple = (), error: ErrorFactory = _default_error):
    """An instance of dataclass ``cls`` from ``values`` (a mapping, or already an instance), validated.

    Nested dataclass fields accept a mapping (built recursively) or an instance; ``tuple[X, ...]`` fields accept a
    list (items that are mappings become ``X`` when ``X`` is a dataclass). Errors name the key path: ``error(path,
    message)`` makes them (default: :class:`ValidationError` with the dotted path).
    """
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise error(path, f"expected a mapping of {cls.__name__} settings, got {type(values).__name__}")
    hints = _hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(map(str, values)) - set(known))
    if unknown:
        raise error(path + (unknown[0],), f"unknown setting; {cls.__name__} takes {', '.join(sorted(known))}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        sub = _dataclass_of(hint)
        if sub is not None and value is not None and not isinstance(value, sub):
            value = from_mapping(sub, value, path + (key,), error)
        elif _is_tuple(hint) and isinstance(value, (list, tuple)):
            item = _tuple_item(hint)
            if item is not None and dataclasses.is_dataclass(item):
                value = tuple(from_mapping(item, v, path + (key, i), error) for i, v in enumerate(value))
            else:
                value = tuple(value)
        kwargs[key] = value
    try:
        obj = cls(**kwargs)
        return obj.validate() if hasattr(obj, "validate") else obj
    except StagSimError as e:
        raise error(path, str(e)) from None
    except TypeError as e:  # e.g. a wrong type the dataclass could not take
        raise error(path, f"{cls.__name__}: {e}") from None


def field_kinds(cls) -> dict[str, str]:
    """``{field: kind}`` of dataclass ``cls`` for schema checks: ``number``, ``integer``, ``string``, ``boolean``,
    ``list``, ``mapping`` (a nested dataclass or dict), with ``|null`` appended when None is allowed."""
    out = {}
    for name, hint in _hints(cls).items():
        args = typing.get_args(hint) if (isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union) else (hint,)
        nullable = type(None) in args
        base = [a for a in args if a is not type(None)][0]
        origin = typing.get_origin(base) or base
        if base is bool:
            kind = "boolean"
        elif base is int:
            kind = "integer"
        elif base is float:
            kind = "number"
        elif base is str:
            kind = "string"
        elif origin in (tuple, list):
            kind = "list"
        else:
            kind = "mapping"
        out[name] = kind + ("|null" if nullable else "")
    return out

"""dict -> dataclass with type checks: unknown keys suggest the closest valid one; numbers must be finite."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from tunewise.config.schema import SECTIONS, load_extensions
from tunewise.errors import TunewiseError, did_you_mean


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except TunewiseError as err:
                errors.append(err)
        raise errors[0]
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TunewiseError(f"{where}: expected a mapping of options, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, prefix=where)
    if origin is list:
        if not isinstance(value, list):
            raise TunewiseError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TunewiseError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise TunewiseError(f"{where}: must be a finite number, got {value!r}")
            return number
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TunewiseError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields if not f.metadata.get("sections")]
    holder = next((f.name for f in fields if f.metadata.get("sections")), None)
    if holder is not None:  # RunConfig: task sections are top-level keys too
        load_extensions()
        names += list(SECTIONS)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if holder is not None and key in SECTIONS:
            kwargs.setdefault(holder, {})[key] = _coerce(value, SECTIONS[key], where)
            continue
        if key not in names:
            raise TunewiseError(
                f"unknown config key '{where}'{did_you_mean(key, names)}; valid keys here: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)

"""Checked conversion of plain mappings (TOML tables, `--param key=value`) into settings dataclasses.

Every unknown key and every value of the wrong type or outside its allowed set becomes a `ConfigError` whose
message names the full key (`engine.motion.history`), so the CLI can print it as one line.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from seg_video.core.errors import ConfigError

T = TypeVar("T")
INT_LIMIT = 2**31
"""Integer settings lie within ±(2**31 - 1): the 32-bit ints OpenCV and FFmpeg take them as (no setting needs more)."""


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """Build dataclass `cls` from `data`, checking each key and value against the field's declared type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ConfigError(f"unknown setting {where}.{key} (known: {known})")
        values[key] = coerce(raw, hints[key], f"{where}.{key}")
    instance = cls(**values)
    check = getattr(instance, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
    return instance


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against `annotation` (int, float, str, bool, Literal, X | None, tuple/list of X)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list; got {value!r}")
        item_type = get_args(annotation)[0]
        items = [coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false; got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer; got {value!r}")
        if not -INT_LIMIT < value < INT_LIMIT:
            raise ConfigError(f"{where} must be within ±{INT_LIMIT - 1}; got {value}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number; got {value!r}")
        if not math.isfinite(value) or abs(value) >= INT_LIMIT:
            raise ConfigError(f"{where} must be a finite number within ±{INT_LIMIT - 1}; got {value}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string; got {value!r}")
        return value
    if annotation is Any:
        return value
    raise TypeError(f"settings field {where} has an unsupported type {annotation!r}")


def parse_scalar(text: str) -> Any:
    """Read a command-line value the way TOML would (`3`, `0.5`, `true`, `"x"`, `[1, 2]`), else as a string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:  # tomllib recurses per nesting level
        raise ConfigError(f"value nested too deeply: {text[:20]}…") from None

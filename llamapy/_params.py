"""Filling llama.cpp parameter structs from keyword arguments, with clear errors."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ._ffi import ffi, lib


def enum_value(prefix: str, value: Any, what: str) -> int:
    """An enum constant from an int or a case-insensitive name (``"q8_0"`` -> GGML_TYPE_Q8_0)."""
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected a name or an int, got {value!r}")
    if isinstance(value, int):
        return value
    name = prefix + str(value).upper()
    try:
        return getattr(lib, name)
    except AttributeError:
        choices = sorted(n[len(prefix):].lower() for n in dir(lib) if n.startswith(prefix))
        raise ValueError(f"{what}: unknown value {value!r}; choose from {', '.join(choices)}") from None


def fill(params: Any, values: Mapping[str, Any], converters: Mapping[str, Callable[[Any], Any]],
         struct_name: str) -> None:
    """Set struct fields by name; unknown names raise TypeError listing the valid ones."""
    fields = {name for name, _ in ffi.typeof(params).fields}
    for name, value in values.items():
        if value is None:
            continue
        if name not in fields:
            raise TypeError(f"unknown {struct_name} field {name!r}; valid: {', '.join(sorted(fields))}")
        try:
            setattr(params, name, converters[name](value) if name in converters else value)
        except (TypeError, OverflowError) as e:
            raise TypeError(f"{struct_name}.{name}: {e}") from None

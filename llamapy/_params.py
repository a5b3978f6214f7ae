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


class StructParams:
    """A llama.cpp parameter struct as an object with attributes, starting from llama.cpp's defaults.

    The names users of other bindings know (``LlamaModelParams``, ``LlamaContextParams``, ...):
    every scalar and enum field of the C struct reads and writes the struct itself; pointer
    fields (callbacks, device lists) belong to the objects that take the parameters. Enum
    fields also accept names (``params.type_k = "q8_0"``).
    """

    _struct = ""
    _prefixes: dict[str, str] = {}  # enum field -> constant prefix, for names

    def __init__(self, **values: Any) -> None:
        object.__setattr__(self, "_c", ffi.new(self._struct + " *", self._defaults()))
        object.__setattr__(self, "_changed", set())
        for name, value in values.items():
            setattr(self, name, value)

    @staticmethod
    def _defaults() -> Any:
        raise NotImplementedError

    @classmethod
    def field_names(cls) -> list[str]:
        return [name for name, f in ffi.typeof(cls._struct).fields if f.type.kind in ("primitive", "enum")]

    def __getattr__(self, name: str) -> Any:
        if name in self.field_names():
            return getattr(self._c, name)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}; fields: {', '.join(self.field_names())}")

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
            return
        if name not in self.field_names():
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; "
                                 f"fields: {', '.join(self.field_names())}")
        converters = {n: (lambda v, p=p, n=n: enum_value(p, v, n)) for n, p in self._prefixes.items()}
        fill(self._c[0], {name: value}, converters, self._struct)
        self._changed.add(name)

    def changed(self) -> dict[str, Any]:
        """The fields set on this object (the rest keep the defaults of whoever takes them)."""
        return {name: getattr(self._c, name) for name in self._changed}

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self._c, n)!r}" for n in self.field_names())
        return f"{type(self).__name__}({fields})"

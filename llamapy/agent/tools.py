"""Tools: OpenAI tool definitions, and tools made from plain Python functions.

A function's schema comes from its signature: type hints (str, int, float, bool, list,
tuple, dict, Optional/unions, Literal, Enum, and pydantic models when pydantic is installed),
defaults (optional parameters) and the docstring (the first paragraph describes the tool;
``name: text`` lines in an Args/Parameters section, or reST ``:param name: text`` lines,
describe the parameters).
"""
from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

_PRIMITIVES: dict[Any, dict[str, Any]] = {str: {"type": "string"}, int: {"type": "integer"},
                                          float: {"type": "number"}, bool: {"type": "boolean"},
                                          type(None): {"type": "null"}}


@dataclass
class Tool:
    """A tool the model may call: name, description, JSON schema of its arguments, and the
    Python function that runs it (None for tools run elsewhere)."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI tool definition."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def __call__(self, **arguments: Any) -> Any:
        if self.fn is None:
            raise TypeError(f"tool {self.name!r} has no Python function to run")
        return self.fn(**_coerce(self.fn, arguments))

    @classmethod
    def from_function(cls, fn: Callable[..., Any], name: str | None = None,
                      description: str | None = None) -> Tool:
        """A tool from a function's signature, type hints, defaults and docstring."""
        if not callable(fn):
            raise TypeError(f"a tool must be a function, got {fn!r}")
        doc = inspect.getdoc(fn) or ""
        summary, param_docs = _parse_docstring(doc)
        hints = typing.get_type_hints(fn, include_extras=False) if _has_hints(fn) else {}
        props: dict[str, Any] = {}
        required: list[str] = []
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            schema = dict(type_schema(hints.get(p.name, str)))
            if p.name in param_docs:
                schema["description"] = param_docs[p.name]
            if p.default is p.empty:
                required.append(p.name)
            elif p.default is not None:
                schema["default"] = _jsonable(p.default)
            props[p.name] = schema
        params: dict[str, Any] = {"type": "object", "properties": props, "required": required}
        return cls(name or fn.__name__, description if description is not None else summary, params, fn)


def _has_hints(fn: Callable[..., Any]) -> bool:
    try:
        typing.get_type_hints(fn)
        return True
    except Exception:  # unresolvable forward references: treat parameters as strings
        return False


def _jsonable(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON schema of a Python type hint."""
    if tp in _PRIMITIVES:
        return _PRIMITIVES[tp]
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if hasattr(tp, "model_json_schema"):  # a pydantic model
        return _inline_refs(tp.model_json_schema())
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        alts = [type_schema(a) for a in args]
        return alts[0] if len(alts) == 1 else {"anyOf": alts}
    if origin in (list, Sequence, tuple, set, frozenset) or tp in (list, tuple, set):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {"type": "array", "prefixItems": [type_schema(a) for a in args], "items": False}
        return {"type": "array", "items": type_schema(args[0]) if args else {}}
    if origin in (dict, Mapping) or tp is dict:
        return {"type": "object"}
    raise TypeError(f"cannot describe the type {tp!r} as a JSON schema: use str, int, float, bool, list, dict, "
                    f"Literal, an Enum or a pydantic model")


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic schema with its titles dropped ($defs are kept: the grammar follows them)."""
    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    return clean(schema)


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params)\s*:?\s*$", re.I)
_PARAM_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")
_REST_PARAM = re.compile(r"^\s*:param\s+(?:\w+\s+)?(\w+)\s*:\s*(.+)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(summary, {parameter: description}) from a Google-, NumPy- or reST-style docstring."""
    lines = doc.splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line.strip()) or line.strip().startswith(":"):
            break
        summary.append(line.strip())
    params: dict[str, str] = {}
    in_section = False
    for line in lines:
        if _SECTION.match(line.strip()):
            in_section = True
            continue
        m = _REST_PARAM.match(line)
        if m:
            params[m.group(1)] = m.group(2).strip()
            continue
        if in_section:
            if line.strip().startswith("---"):
                continue
            m = _PARAM_LINE.match(line)
            if m:
                params[m.group(1)] = m.group(2).strip()
            elif line.strip() and not line.startswith((" ", "\t")):
                in_section = False
    return " ".join(summary), params


def _coerce(fn: Callable[..., Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments turned into the function's types where JSON cannot carry them (enums, pydantic models)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return dict(arguments)
    out = dict(arguments)
    for name, value in arguments.items():
        tp = hints.get(name)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            out[name] = tp(value)
        elif hasattr(tp, "model_validate") and isinstance(value, Mapping):
            out[name] = tp.model_validate(value)  # type: ignore[union-attr]
    return out


FINAL_ANSWER = Tool("final_answer", "Give the final answer to the user's request.",
                    {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]})


def as_tool(item: Any) -> Tool:
    """A Tool from a Tool, a function, an OpenAI tool dict or a bare function-definition dict."""
    if isinstance(item, Tool):
        return item
    if isinstance(item, Mapping):
        fn = item.get("function", item) if item.get("type", "function") == "function" else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise ValueError(f"a tool must look like {{'type': 'function', 'function': {{'name': ..., "
                             f"'parameters': {{...}}}}}}, got {dict(item)!r}")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        return Tool(fn["name"], fn.get("description", ""), dict(params))
    if callable(item):
        return Tool.from_function(item)
    raise TypeError(f"not a tool: {item!r} (give a function, a Tool or an OpenAI tool dict)")


def as_tools(items: Sequence[Any]) -> list[Tool]:
    """Tools from a mixed list; names must be unique."""
    if isinstance(items, (Tool, Mapping)) or callable(items):
        items = [items]
    tools = [as_tool(t) for t in items]
    names = [t.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"several tools are named {', '.join(dupes)}: tool names must be unique")
    return tools


__all__ = ["Tool", "FINAL_ANSWER", "as_tool", "as_tools", "type_schema"]

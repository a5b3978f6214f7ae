"""JSON schema -> GBNF for tool arguments written in a family's own value syntax (Gemma 4's
``{key:<|"|>text<|"|>}``, LFM2's ``name(key="text")``), so that forced calls of these families
follow the tool's schema as JSON calls do.

Enforced: objects with properties (required ones always, optional ones maybe, no other keys; in
the schema's order, or sorted where the family's template sorts keys), arrays with items and
minItems/maxItems, strings, integers (a small bounded range, or minimum 0 or 1), numbers,
booleans, null, enum/const, anyOf/oneOf, allOf of one schema, type lists and local ``$ref``.
Anything else, or what the syntax cannot write, becomes the family's generic value of that kind
(any string, any object, any value): the grammar never refuses a schema, and those parts go
unchecked.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

from .base import gbnf_literal

_MAX_ENUMERATED_INTEGERS = 256


class ValueSyntax:
    """How a family writes values, as GBNF. The generic rules named here come from the format's
    ``grammar_rules``; a subclass says how constants and keys are written."""

    value = ""  # any value
    string = ""
    integer = ""
    number = ""
    true = '"true"'
    false = '"false"'
    null = '"null"'
    any_object = ""
    any_list = ""
    any_args = ""  # any top-level arguments
    sep = '","'  # between the items of a list or an object
    list_open, list_close = '"["', '"]"'
    object_open, object_close = '"{"', '"}"'
    args_open, args_close = '"{"', '"}"'  # around the top-level arguments
    #: whether the family's template writes keys (the arguments' too) sorted, as Jinja's dictsort
    sort_keys = False

    def text(self, s: str) -> str | None:
        """GBNF for the string constant ``s``; None when the syntax cannot write it."""
        raise NotImplementedError

    def key(self, name: str) -> str | None:
        """GBNF for key ``name`` of a nested object, with what leads to its value; None if unwritable."""
        raise NotImplementedError

    def arg(self, name: str) -> str | None:
        """The same for a top-level argument."""
        return self.key(name)


def _choice(alts: list[str]) -> str:
    return alts[0] if len(alts) == 1 else "( " + " | ".join(alts) + " )"


class _Converter:
    def __init__(self, syntax: ValueSyntax, root: Mapping[str, Any], prefix: str):
        self.syntax, self.root, self.prefix = syntax, root, prefix
        self.rules: dict[str, str] = {prefix + "root": ""}
        self.refs: dict[str, str] = {}

    def add(self, hint: str, body: str) -> str:
        """A new rule named after ``hint``."""
        name = self.prefix + (re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-").lower() or "r")
        candidate, i = name, 1
        while candidate in self.rules:
            i += 1
            candidate = f"{name}{i}"
        self.rules[candidate] = body
        return candidate

    def arguments(self, schema: Any) -> str:
        """The top-level arguments: an object's properties in the family's argument syntax."""
        if isinstance(schema, Mapping) and (schema.get("type") == "object" or "properties" in schema):
            return self.object(schema, "root", top=True)
        return self.syntax.any_args

    def convert(self, schema: Any, path: str) -> str:
        s = self.syntax
        if not isinstance(schema, Mapping) or not schema:
            return s.value  # true, {}, false or not a schema
        if isinstance(schema.get("$ref"), str):
            return self.ref(schema["$ref"], path)
        if "const" in schema:
            return self.literal(schema["const"]) or s.value
        if isinstance(schema.get("enum"), list):
            alts = [a for a in map(self.literal, schema["enum"]) if a]
            return _choice(alts) if alts else s.value
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return _choice([self.convert(sub, f"{path}-{i}") for i, sub in enumerate(schema[key])])
        if "allOf" in schema:
            all_of = schema["allOf"]
            return self.convert(all_of[0], path) if isinstance(all_of, list) and len(all_of) == 1 else s.value
        t = schema.get("type")
        if isinstance(t, list):
            return _choice([self.convert({**schema, "type": one}, path) for one in t]) if t else s.value
        if t == "object" or (t is None and "properties" in schema):
            return self.object(schema, path, top=False)
        if t == "array" or (t is None and "items" in schema):
            return self.array(schema, path)
        if t == "integer":
            return self.integer(schema)
        generic = {"string": s.string, "number": s.number, "boolean": f"( {s.true} | {s.false} )", "null": s.null}
        return generic.get(t, s.value) if isinstance(t, str) else s.value

    def ref(self, ref: str, path: str) -> str:
        if ref not in self.refs:
            m = re.fullmatch(r"#/(\$defs|definitions)/(.+)", ref)
            defs = self.root.get(m.group(1)) if m else None
            target = defs.get(m.group(2)) if m and isinstance(defs, Mapping) else None
            if target is None:
                return self.syntax.value
            # named before its body is built: the schema may refer to itself
            self.refs[ref] = name = self.add("ref-" + m.group(2), "")  # type: ignore[union-attr]
            self.rules[name] = self.convert(target, f"{path}-ref")
        return self.refs[ref]

    def literal(self, value: Any) -> str | None:
        """GBNF for a constant; None when the syntax cannot write it."""
        s = self.syntax
        if isinstance(value, bool):
            return s.true if value else s.false
        if value is None:
            return s.null
        if isinstance(value, (int, float)):
            return gbnf_literal(json.dumps(value)) if math.isfinite(value) else None
        if isinstance(value, str):
            return s.text(value)
        if isinstance(value, list):
            items = [self.literal(v) for v in value]
            if None in items:
                return None
            return f"{s.list_open} {f' {s.sep} '.join(items)} {s.list_close}"  # type: ignore[arg-type]
        if isinstance(value, Mapping):
            keys = sorted(value, key=str.lower) if s.sort_keys else list(value)
            members = [(s.key(k), self.literal(value[k])) for k in keys]
            if any(k is None or v is None for k, v in members):
                return None
            return f"{s.object_open} {f' {s.sep} '.join(f'{k} {v}' for k, v in members)} {s.object_close}"
        return None

    def object(self, schema: Mapping[str, Any], path: str, top: bool) -> str:
        s = self.syntax
        generic = s.any_args if top else s.any_object
        props = dict(schema["properties"]) if isinstance(schema.get("properties"), Mapping) else {}
        required = schema.get("required")
        required = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
        for name in required:
            props.setdefault(name, True)
        names = sorted(props, key=str.lower) if s.sort_keys else list(props)
        items: list[tuple[str, str]] = []
        for name in names:
            key = s.arg(name) if top else s.key(name)
            if key is None:
                if name in required:
                    return generic
                continue  # an optional key the syntax cannot write is left out
            items.append((name, f"{key} {self.convert(props[name], f'{path}-{name}')}"))
        if not items:
            return generic

        # rest(i, first): the properties from i on; ``first``: nothing written yet (no separator)
        memo: dict[tuple[int, bool], str] = {}

        def rest(i: int, first: bool) -> str:
            if i == len(items):
                return ""
            if (i, first) not in memo:
                present = f"{'' if first else s.sep + ' '}{items[i][1]} {rest(i + 1, False)}".strip()
                if items[i][0] in required:
                    body = present
                else:
                    skip = rest(i + 1, first)
                    body = f"( {present} ) | {skip}" if skip else f"( {present} )?"
                memo[(i, first)] = self.add(f"{path}-{items[i][0]}-{'a' if first else 'b'}", body)
            return memo[(i, first)]

        open_, close = (s.args_open, s.args_close) if top else (s.object_open, s.object_close)
        return f"{open_} {rest(0, True)} {close}".strip()

    def array(self, schema: Mapping[str, Any], path: str) -> str:
        s = self.syntax
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        if "prefixItems" in schema or not isinstance(lo, int) or not isinstance(hi, (int, type(None))) \
                or (hi is not None and hi < lo):
            return s.any_list
        if hi == 0:
            return f"{s.list_open} {s.list_close}"
        item = self.add(f"{path}-item", self.convert(schema.get("items", True), f"{path}-item"))
        body = f"{item} ( {s.sep} {item} ){{{max(lo - 1, 0)},{'' if hi is None else hi - 1}}}"
        return f"{s.list_open} {body if lo else f'( {body} )?'} {s.list_close}"

    def integer(self, schema: Mapping[str, Any]) -> str:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if isinstance(lo, int) and isinstance(hi, int) and 0 <= hi - lo < _MAX_ENUMERATED_INTEGERS:
            return _choice([f'"{v}"' for v in range(lo, hi + 1)])
        if hi is None and lo in (0, 1) and not isinstance(lo, bool):
            return '( "0" | [1-9] [0-9]{0,15} )' if lo == 0 else "( [1-9] [0-9]{0,15} )"
        return self.syntax.integer  # other bounds go unchecked


def value_rules(schema: Any, syntax: ValueSyntax, prefix: str) -> list[str]:
    """GBNF rules, root rule ``<prefix>root``, for tool arguments with JSON schema ``schema``
    written in ``syntax`` (the generic rules it names are the format's ``grammar_rules``)."""
    conv = _Converter(syntax, schema if isinstance(schema, Mapping) else {}, prefix)
    conv.rules[prefix + "root"] = conv.arguments(schema)
    return [f"{name} ::= {body}" for name, body in conv.rules.items()]


__all__ = ["ValueSyntax", "value_rules"]

"""JSON schema -> GBNF grammar, so that generated output always parses and validates.

Supported: objects (properties, required/optional, additionalProperties is never used to
emit extra keys), arrays (items, prefixItems, minItems/maxItems), strings (minLength,
maxLength, enum, const, formats date/time/date-time/uuid), integers and numbers (minimum 0
or 1 for integers, small bounded integer ranges), booleans, null, enum, const,
anyOf/oneOf, allOf with one member, type lists, $ref to #/$defs/... or #/definitions/....
Anything else raises SchemaError naming the part of the schema, rather than producing a
grammar whose output might not validate.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from ..errors import SchemaError

_BASE_RULES = {
    "ws": '| " "',
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "string": r'"\"" char{0,256} "\""',
    "integer": '"-"? ("0" | [1-9] [0-9]{0,15})',
    "number": '"-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,15})? ([eE] [-+]? [0-9]{1,3})?',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "value": "object-any | array-any | string | number | boolean | null",
    "object-any": '"{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value ){0,32} )? ws "}"',
    "array-any": '"[" ws ( value ( ws "," ws value ){0,32} )? ws "]"',
    # Formats: days stop at 28 so that every generated date exists.
    "date": '[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | "1" [0-9] | "2" [0-8])',
    "time": '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})? ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])',
    "uuid": '[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}',
}
_DEPENDS = {"value": ["object-any", "array-any", "string", "number", "boolean", "null"],
            "object-any": ["string", "value", "ws"], "array-any": ["value", "ws"], "string": ["char"]}
_FORMATS = {"date": '"\\"" date "\\""', "time": '"\\"" time "\\""', "date-time": '"\\"" date "T" time "\\""',
            "uuid": '"\\"" uuid "\\""'}
_MAX_ENUMERATED_INTEGERS = 256


def _literal(value: Any) -> str:
    """A GBNF string literal matching the JSON text of ``value`` exactly."""
    text = json.dumps(value, ensure_ascii=False)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _Converter:
    def __init__(self, root: Mapping[str, Any]):
        self.root = root
        self.rules: dict[str, str] = {}
        self.used: set[str] = set()
        self.refs: dict[str, str] = {}

    def base(self, name: str) -> str:
        stack = [name]
        while stack:
            n = stack.pop()
            if n not in self.used:
                self.used.add(n)
                stack.extend(_DEPENDS.get(n, []))
        return name

    def add(self, hint: str, body: str) -> str:
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-").lower() or "r"
        candidate, i = name, 1
        while candidate in self.rules or candidate in _BASE_RULES:
            if self.rules.get(candidate) == body:
                return candidate
            i += 1
            candidate = f"{name}{i}"
        self.rules[candidate] = body
        return candidate

    def resolve(self, ref: str, path: str) -> Mapping[str, Any]:
        m = re.fullmatch(r"#/(\$defs|definitions)/(.+)", ref)
        if not m:
            raise SchemaError(f"{path}: only local references like '#/$defs/Name' are supported, got {ref!r}")
        defs = self.root.get(m.group(1), {})
        if m.group(2) not in defs:
            raise SchemaError(f"{path}: reference {ref!r} points to nothing")
        return defs[m.group(2)]

    def convert(self, schema: Any, path: str) -> str:
        """A GBNF expression for ``schema``."""
        if schema is True or schema == {}:
            return self.base("value")
        if schema is False:
            raise SchemaError(f"{path}: the schema 'false' matches nothing")
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{path}: a schema must be an object, got {schema!r}")
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref not in self.refs:
                name = self.add("ref-" + ref.rsplit("/", 1)[-1], "")
                self.refs[ref] = name
                self.rules[name] = self.convert(self.resolve(ref, path), f"{path}/$ref")
            return self.refs[ref]
        if "const" in schema:
            return _literal(schema["const"])
        if "enum" in schema:
            if not schema["enum"]:
                raise SchemaError(f"{path}: an empty enum matches nothing")
            return "(" + " | ".join(_literal(v) for v in schema["enum"]) + ")"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                alts = [self.convert(s, f"{path}/{key}/{i}") for i, s in enumerate(schema[key])]
                return "(" + " | ".join(alts) + ")"
        if "allOf" in schema:
            if len(schema["allOf"]) != 1:
                raise SchemaError(f"{path}/allOf: combining several schemas with allOf is not supported")
            return self.convert(schema["allOf"][0], f"{path}/allOf/0")
        for unsupported in ("not", "if", "patternProperties", "pattern", "multipleOf", "dependentRequired",
                            "exclusiveMinimum", "exclusiveMaximum", "minProperties", "maxProperties", "uniqueItems"):
            if unsupported in schema:
                raise SchemaError(f"{path}: '{unsupported}' is not supported in grammars")
        t = schema.get("type")
        if isinstance(t, list):
            return "(" + " | ".join(self.convert({**schema, "type": one}, path) for one in t) + ")"
        if t == "object" or (t is None and "properties" in schema):
            return self.object(schema, path)
        if t == "array" or (t is None and ("items" in schema or "prefixItems" in schema)):
            return self.array(schema, path)
        if t == "string":
            return self.string(schema, path)
        if t == "integer":
            return self.integer(schema, path)
        if t == "number":
            if "minimum" in schema or "maximum" in schema:
                raise SchemaError(f"{path}: bounds on 'number' are not supported (bounds on 'integer' are)")
            return self.base("number")
        if t in ("boolean", "null"):
            return self.base(t)
        if t is None:
            return self.base("value")
        raise SchemaError(f"{path}: unknown type {t!r}")

    def object(self, schema: Mapping[str, Any], path: str) -> str:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        missing = required - set(props)
        if missing:
            raise SchemaError(f"{path}: required properties without a schema: {', '.join(sorted(missing))}")
        if not props:
            if schema.get("additionalProperties") is False:
                return '"{" ws "}"'
            return self.base("object-any")
        self.base("ws")
        items = list(props.items())
        kv = [f'{_literal(k)} ws ":" ws {self.convert(v, f"{path}/properties/{k}")}' for k, v in items]
        # rest(i, first): the properties from i on; `first` = nothing emitted yet (no comma needed)
        memo: dict[tuple[int, bool], str] = {}

        def rest(i: int, first: bool) -> str:
            if i == len(items):
                return ""
            if (i, first) in memo:
                return memo[(i, first)]
            lead = "" if first else '"," ws '
            present = f"{lead}{kv[i]} {rest(i + 1, False)}".strip()
            skip = rest(i + 1, first)
            if items[i][0] in required:
                body = present
            elif skip:
                body = f"( {present} ) | {skip}"
            else:
                body = f"( {present} )?"
            name = self.add(f"{path.rsplit('/', 1)[-1] or 'root'}-{items[i][0]}-{'a' if first else 'b'}", body)
            memo[(i, first)] = name
            return name

        inner = rest(0, True)
        return f'"{{" ws {inner} ws "}}"'

    def array(self, schema: Mapping[str, Any], path: str) -> str:
        self.base("ws")
        lo = int(schema.get("minItems", 0))
        hi = schema.get("maxItems")
        if hi is not None and int(hi) < lo:
            raise SchemaError(f"{path}: maxItems is smaller than minItems")
        if "prefixItems" in schema:
            parts = [self.convert(s, f"{path}/prefixItems/{i}") for i, s in enumerate(schema["prefixItems"])]
            if schema.get("items", False) is not False or lo > len(parts):
                raise SchemaError(f"{path}: prefixItems is supported only as a fixed tuple (items: false)")
            return '"[" ws ' + ' ws "," ws '.join(parts) + ' ws "]"'
        item = self.convert(schema.get("items", True), f"{path}/items")
        item_rule = self.add(f"{path.rsplit('/', 1)[-1] or 'root'}-item", item)
        hi_n = None if hi is None else int(hi)
        if hi_n == 0:
            return '"[" ws "]"'
        more_lo = max(lo - 1, 0)
        more = f'( ws "," ws {item_rule} ){{{more_lo},{"" if hi_n is None else hi_n - 1}}}'
        body = f"{item_rule} {more}"
        if lo == 0:
            body = f"( {body} )?"
        return f'"[" ws {body} ws "]"'

    def string(self, schema: Mapping[str, Any], path: str) -> str:
        fmt = schema.get("format")
        if fmt is not None:
            if fmt not in _FORMATS:
                raise SchemaError(f"{path}: string format {fmt!r} is not supported "
                                  f"(supported: {', '.join(sorted(_FORMATS))})")
            for part in ("date", "time", "uuid"):
                if part in _FORMATS[fmt]:
                    self.base(part)
            return "(" + _FORMATS[fmt] + ")"
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        if lo == 0 and hi is None:
            return self.base("string")
        self.base("char")
        return f'"\\"" char{{{lo},{"" if hi is None else int(hi)}}} "\\""'

    def integer(self, schema: Mapping[str, Any], path: str) -> str:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is None and hi is None:
            return self.base("integer")
        if lo is not None and hi is not None and 0 <= int(hi) - int(lo) < _MAX_ENUMERATED_INTEGERS:
            return "(" + " | ".join(f'"{v}"' for v in range(int(lo), int(hi) + 1)) + ")"
        if hi is None and lo in (0, 1):
            return '("0" | [1-9] [0-9]{0,15})' if lo == 0 else '([1-9] [0-9]{0,15})'
        raise SchemaError(f"{path}: integer bounds minimum={lo}, maximum={hi} cannot be expressed in the grammar "
                          f"(supported: minimum 0 or 1, or a range of at most {_MAX_ENUMERATED_INTEGERS} values)")


def schema_to_gbnf(schema: Mapping[str, Any] | str) -> str:
    """The GBNF grammar (root rule ``root``) of a JSON schema (a dict or JSON text)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise SchemaError(f"the JSON schema is not valid JSON: {e}") from None
    conv = _Converter(schema)  # type: ignore[arg-type]
    root = conv.convert(schema, "#")
    lines = [f"root ::= {root}"]
    lines += [f"{name} ::= {body}" for name, body in conv.rules.items()]
    lines += [f"{name} ::= {_BASE_RULES[name]}" for name in sorted(conv.used)]
    return "\n".join(lines) + "\n"


json_schema_to_grammar = schema_to_gbnf  # the name other bindings use

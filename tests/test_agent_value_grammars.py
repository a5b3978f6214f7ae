"""Forced-call grammars of Gemma 4 and LFM2, whose arguments are not JSON: they follow the tool's
schema in the family's own value syntax. What the family's chat template renders for arguments
that match the schema is accepted (by llguidance and by llama.cpp's grammar engine) and parses to
arguments that validate; a wrong enum value, a missing required key, a string for an integer or
an unknown tool is refused; what the grammar cannot express falls back to the family's generic
values."""
from __future__ import annotations

import copy

import jsonschema
import llguidance
import pytest

from llamapy.agent import get_format
from llamapy.agent.grammar import build_tool_grammar
from llamapy.generation.grammar import Grammar
from tests.test_agent_formats import ADD, _call
from tests.test_agent_formats_families import _takes, reply

TRIP_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "mode": {"enum": ["train", "plane"]},
        "nights": {"type": "integer", "minimum": 0},
        "refundable": {"type": "boolean"},
        "traveller": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                      "required": ["name"]},
        "stops": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "budget": {"type": ["number", "null"]},
        "notes": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "integer"}}]},
    },
    "required": ["city", "mode", "nights", "traveller"],
    "additionalProperties": False,
}
TRIP = {"type": "function", "function": {"name": "book_trip", "description": "Book a trip", "parameters": TRIP_SCHEMA}}
TOOLS = [TRIP, ADD]
NAMES = {"book_trip", "add"}
FULL = {"city": 'Zürich "Altstadt" 東京', "mode": "train", "nights": 3, "refundable": True,
        "traveller": {"name": "Ada", "age": 36}, "stops": ["Bern", "Chur"], "budget": None, "notes": [1, 2]}
GOOD = [FULL,
        {"city": "Bern", "mode": "plane", "nights": 0, "traveller": {"name": "Bo"}},  # required keys only
        {"city": "x", "mode": "plane", "nights": 12, "refundable": False, "traveller": {"name": ""},
         "stops": [], "budget": -2.5, "notes": "window seat"}]
BAD = {  # label -> changes to FULL (None: the key is left out)
    "wrong enum value": {"mode": "bus"},
    "missing required key": {"city": None},
    "string for an integer": {"nights": "3"},
    "negative for minimum 0": {"nights": -1},
    "nested required key missing": {"traveller": {"age": 3}},
    "too many items": {"stops": ["a", "b", "c", "d"]},
    "unknown key": {"pets": 2},
}
# (template, format, hand-written calls in the family's other spellings, matching TRIP_SCHEMA)
FAMILIES = [
    ("google-gemma-4-31B-it.jinja", "gemma4",
     ['<|tool_call>call:book_trip{budget:null,city:<|"|>a<b<|"|>,mode:<|"|>plane<|"|>,nights:7,'
      'traveller:{name:<|"|>Bo<|"|>}}<tool_call|><|tool_call>call:add{a:1.5e3,b:-0}<tool_call|>']),
    ("LFM2.5-8B-A1B.jinja", "lfm2",
     ['<|tool_call_start|>[book_trip(city="it\'s \\"x\\"\\n", mode="plane", nights=7, refundable=true, '
      "traveller={'name': 'Bo', \"age\": 2}, budget=null), add(a=1.5e3, b=-0)]<|tool_call_end|>"]),
]
IDS = [f[1] for f in FAMILIES]
TEMPLATES = [f[:2] for f in FAMILIES]


class _Bytes:
    """A tokenizer of single bytes, so that llguidance checks text without a model."""

    tokens = [bytes([i]) for i in range(256)] + [b""]
    eos_token_id, bos_token_id, special_token_ids = 256, None, []

    def __call__(self, text: bytes | str) -> list[int]:
        return list(text if isinstance(text, bytes) else text.encode())


BYTES = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()), n_vocab=257, eos_token=256)


def llg_takes(gbnf: str, text: str) -> bool:
    """Whether llguidance's reading of ``gbnf`` matches the whole of ``text``."""
    grammar = llguidance.grammar_from("gbnf", gbnf)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, BYTES)
    assert not is_error, messages
    matcher = llguidance.LLMatcher(BYTES, grammar, log_level=0)
    return all(matcher.consume_token(b) for b in text.encode()) and matcher.is_accepting()


def takes(model, gbnf: str, text: str) -> bool:
    """Whether both engines accept ``text``; fails when they disagree."""
    by_llg = llg_takes(gbnf, text)
    by_llama = _takes(model, Grammar.gbnf(gbnf), text, "llama")
    assert by_llg == by_llama, f"llguidance {by_llg}, llama.cpp {by_llama}: {text!r}"
    return by_llg


def rendered(template: str, *calls: tuple[str, dict]) -> str:
    return reply(template, {"role": "assistant", "content": "", "tool_calls": [_call(n, a) for n, a in calls]})


def check_parses(fmt, text: str, tools=TOOLS) -> None:
    """``text`` parses to calls whose arguments validate against their tool's schema."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    msg = fmt.parse(text, tool_names=set(schemas))
    assert msg.tool_calls and not msg.content, text
    for call in msg.tool_calls:
        jsonschema.validate(call.args, schemas[call.name])


@pytest.mark.parametrize("template,name,spellings", FAMILIES, ids=IDS)
def test_calls_that_follow_the_schema_are_accepted_and_validate(model, template, name, spellings):
    fmt = get_format(name)
    required = build_tool_grammar(fmt, TOOLS, "required").gbnf
    named = build_tool_grammar(fmt, TOOLS, {"type": "function", "function": {"name": "book_trip"}}).gbnf
    texts = [rendered(template, ("book_trip", args)) for args in GOOD]
    texts += [rendered(template, ("book_trip", GOOD[1]), ("add", {"a": 2, "b": 3.5}))] + spellings
    for text in texts:
        assert takes(model, required, text), text
        check_parses(fmt, text)
    assert takes(model, named, texts[0]) and not takes(model, named, rendered(template, ("add", {"a": 1, "b": 2})))


@pytest.mark.parametrize("template,name", TEMPLATES, ids=IDS)
def test_calls_that_break_the_schema_are_refused(model, template, name):
    fmt = get_format(name)
    gbnf = build_tool_grammar(fmt, TOOLS, "required").gbnf
    for label, change in BAD.items():
        args = {k: v for k, v in {**copy.deepcopy(FULL), **change}.items() if v is not None}
        text = rendered(template, ("book_trip", args))
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(args, TRIP_SCHEMA)
        assert not takes(model, gbnf, text), label
    assert not takes(model, gbnf, rendered(template, ("book_flight", FULL))), "unknown tool"
    assert not takes(model, gbnf, rendered(template, ("add", {"a": "1", "b": 2}))), "string for a number"


ODD_SCHEMA = {  # parts the grammar does not express: generic values there
    "type": "object",
    "properties": {
        "mix": {"allOf": [{"type": "string"}, {"maxLength": 5}]},
        "meta": {"type": "object"},
        "code": {"type": "string", "pattern": "^[A-Z]+$"},
        "ref": {"$ref": "#/$defs/missing"},
    },
    "required": ["mix", "meta"],
}
FREE = {"type": "object", "additionalProperties": {"type": "integer"}}  # no properties: any arguments
ODD = [{"type": "function", "function": {"name": "odd", "parameters": ODD_SCHEMA}},
       {"type": "function", "function": {"name": "free", "parameters": FREE}}]


@pytest.mark.parametrize("template,name", TEMPLATES, ids=IDS)
def test_what_the_grammar_cannot_express_takes_generic_values(model, template, name):
    fmt = get_format(name)
    gbnf = build_tool_grammar(fmt, ODD, "required").gbnf
    for args in ({"mix": 3, "meta": {"deep": [1, {"k": None}]}},
                 {"mix": ["a"], "meta": {}, "code": "abc", "ref": True},
                 {"mix": "too long for five", "meta": {"x": "y"}, "ref": {"a": [1.5]}}):
        text = rendered(template, ("odd", args))
        assert takes(model, gbnf, text), text
        assert fmt.parse(text, tool_names={"odd"}).tool_calls[0].args == args
    assert not takes(model, gbnf, rendered(template, ("odd", {"meta": {}}))), "a required key is still required"
    free = rendered(template, ("free", {"a": 1, "b": "two"}))
    assert takes(model, gbnf, free) and fmt.parse(free, tool_names={"free"}).tool_calls[0].args == {"a": 1, "b": "two"}


def test_lfm2_leaves_out_keys_python_cannot_write(model):
    """A keyword argument must be an identifier: an optional ``class`` is left out."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}, "class": {"type": "string"}}, "required": ["x"]}}}
    gbnf = build_tool_grammar(get_format("lfm2"), [tool], "required").gbnf
    assert takes(model, gbnf, "<|tool_call_start|>[f(x=1)]<|tool_call_end|>")
    assert not takes(model, gbnf, "<|tool_call_start|>[f(x=1, class='a')]<|tool_call_end|>")
    assert not takes(model, gbnf, "<|tool_call_start|>[f(x=01)]<|tool_call_end|>")  # Python refuses 01


def test_gemma4_quotes_keys_that_cannot_be_bare(model):
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a,b": {"const": 1}, "Zeta": {"type": "boolean"}},
        "required": ["a,b", "Zeta"]}}}
    gbnf = build_tool_grammar(get_format("gemma4"), [tool], "required").gbnf
    text = '<|tool_call>call:f{<|"|>a,b<|"|>:1,Zeta:true}<tool_call|>'  # sorted as the template sorts
    assert takes(model, gbnf, text)
    assert get_format("gemma4").parse(text, tool_names={"f"}).tool_calls[0].args == {"a,b": 1, "Zeta": True}
    assert not takes(model, gbnf, '<|tool_call>call:f{Zeta:true,<|"|>a,b<|"|>:1}<tool_call|>')

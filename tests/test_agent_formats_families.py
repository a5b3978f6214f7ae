"""Tool-call formats of GPT-OSS (harmony channels), Gemma 4 and LFM2 / LFM2.5: each parses what
its own chat template (from the fetched llama.cpp tree) renders, streams to the same message for
every split, keeps reasoning out of the content, and its forced-call grammar takes the
template's rendering, in llama.cpp's grammar engine and in llguidance."""
from __future__ import annotations

import json

import pytest

from llamapy import ChatTemplate
from llamapy.agent import StreamParser, detect_format, get_format, parse_reply
from llamapy.agent.grammar import build_tool_grammar
from llamapy.generation.grammar import Grammar, make_constraint
from tests.test_agent_formats import NAMES, NESTED, TOOLS, _args, _call, _templates_dir, check_streaming

# What ends these families' turns (the model stops there; the text after it is the template's).
END_OF_TURN = ["<|call|>", "<|return|>", "<turn|>", "<|tool_response>", "<|im_end|>"]
# Gemma 4's generation prompt, with thinking off, closes an empty thought block the history does not show.
EMPTY_THOUGHT = "<|channel>thought\n<channel|>"
WEATHER_ARGS = {"city": "Zürich \"Altstadt\" 東京 🌧", "unit": "celsius"}  # within the tool's schema


def _template(name: str) -> ChatTemplate:
    path = _templates_dir() / name
    assert path.is_file(), f"template {name} is not in the fetched llama.cpp tree"
    return ChatTemplate(path.read_text(), "<s>", "</s>")  # LFM2.5-8B-A1B uses {% generation %} as is


def reply(template: str, assistant: dict, **extra) -> str:
    """What a model of this family writes for ``assistant``: the conversation rendered with the
    message minus the conversation rendered up to the assistant's turn, cut at the turn's end."""
    t = _template(template)
    history = [{"role": "system", "content": "You are a helpful assistant."},
               {"role": "user", "content": "What's the weather in Zürich? And 2+3?"}]
    prompt = t.render(history, add_generation_prompt=True, tools=TOOLS, **extra)
    full = t.render(history + [assistant], add_generation_prompt=False, tools=TOOLS, **extra)
    if not full.startswith(prompt) and prompt.endswith(EMPTY_THOUGHT):
        prompt = prompt[:-len(EMPTY_THOUGHT)]
    assert full.startswith(prompt), f"{template}: the reply does not follow the generation prompt"
    text = full[len(prompt):]
    ends = [i for i in (text.find(e) for e in END_OF_TURN) if i >= 0]
    return text[:min(ends)] if ends else text


def _names(msg: dict) -> list[str]:
    return [c["function"]["name"] for c in msg.get("tool_calls", [])]


# (template, format name, renders several calls in one reply)
FAMILIES = [
    ("openai-gpt-oss-120b.jinja", "gpt-oss", False),  # "We assume max 1 tool call per message"
    ("google-gemma-4-31B-it.jinja", "gemma4", True),
    ("google-gemma-4-31B-it-interleaved.jinja", "gemma4", True),
    ("LFM2.5-8B-A1B.jinja", "lfm2", True),
]
IDS = [f[0] for f in FAMILIES]
NEW = {"gpt-oss", "gemma4", "lfm2"}


def test_detection_from_the_template_source():
    for template, name in [*[(t, n) for t, n, _ in FAMILIES], ("LFM2-8B-A1B.jinja", "lfm2"),
                           ("LFM2.5-Instruct.jinja", "lfm2")]:
        assert detect_format(_template(template).source).name == name, template
    others = [p for p in _templates_dir().glob("*.jinja")
              if not p.name.startswith(("openai-gpt-oss", "google-gemma-4", "LFM2"))]
    assert others and all(detect_format(p.read_text()).name not in NEW for p in others)


@pytest.mark.parametrize("template,name,parallel", FAMILIES, ids=IDS)
def test_family_parses_its_own_rendering(template, name, parallel):
    fmt = get_format(name)
    text = reply(template, {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", NESTED)]})
    msg = check_streaming(fmt, text)
    assert _names(msg) == ["get_weather"] and _args(msg) == NESTED and not msg["content"], text
    if parallel:
        text = reply(template, {"role": "assistant", "content": "", "tool_calls": [
            _call("get_weather", {"city": "Paris"}), _call("add", {"a": 2, "b": 3.5})]})
        msg = check_streaming(fmt, text)
        assert _names(msg) == ["get_weather", "add"] and _args(msg, 1) == {"a": 2, "b": 3.5}, text
    text = reply(template, {"role": "assistant", "content": "It is sunny, 21 °C."})
    msg = check_streaming(fmt, text)
    assert "tool_calls" not in msg and msg["content"] == "It is sunny, 21 °C.", text


@pytest.mark.parametrize("template,name,parallel", FAMILIES, ids=IDS)
def test_family_truncated_and_malformed_calls_never_raise(template, name, parallel):
    fmt = get_format(name)
    text = reply(template, {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", NESTED)]})
    for k in range(len(text)):
        msg = parse_reply(fmt, text[:k], NAMES).to_dict()  # a reply cut off at any point
        for call in msg.get("tool_calls", []):
            assert json.loads(call["function"]["arguments"]) == NESTED  # what is reported as a call is whole
    broken = text.replace('"city"', '"city', 1) if '"city"' in text else text.replace("city", "", 1)
    msg = check_streaming(fmt, broken)
    assert "tool_calls" not in msg and msg["content"], broken
    unknown = text.replace("get_weather", "launch_rockets")
    msg = check_streaming(fmt, unknown)
    assert "tool_calls" not in msg and "launch_rockets" in msg["content"], "a call of an unknown tool stays visible"


@pytest.mark.parametrize("template,assistant,extra", [
    ("openai-gpt-oss-120b.jinja", {"thinking": "plan"}, {}),
    ("google-gemma-4-31B-it.jinja", {"reasoning_content": "plan"}, {"enable_thinking": True}),
    ("google-gemma-4-31B-it-interleaved.jinja", {"reasoning_content": "plan"}, {}),
    ("LFM2.5-8B-A1B.jinja", {"thinking": "plan"}, {}),
], ids=["gpt-oss", "gemma4", "gemma4-interleaved", "lfm2.5"])
def test_rendered_reasoning_goes_to_reasoning_content(template, assistant, extra):
    text = reply(template, {"role": "assistant", "content": "", **assistant,
                            "tool_calls": [_call("add", {"a": 1, "b": 2})]}, **extra)
    msg = check_streaming(detect_format(_template(template).source), text)
    assert msg["reasoning_content"] == "plan" and not msg["content"] and _args(msg) == {"a": 1, "b": 2}, text


@pytest.mark.parametrize("name,close", [("gpt-oss", "<|end|><|start|>assistant<|channel|>final<|message|>"),
                                        ("gemma4", "<channel|>"), ("lfm2", "</think>")])
def test_reasoning_opened_by_the_prompt(name, close):
    fmt = get_format(name)
    msg = check_streaming(fmt, f"still thinking{close}The answer is 5.", thinking=True)
    assert msg == {"role": "assistant", "content": "The answer is 5.", "reasoning_content": "still thinking"}
    msg = check_streaming(fmt, "cut off while thinking", thinking=True)
    assert msg["reasoning_content"] == "cut off while thinking" and msg["content"] == ""


# -- GPT-OSS ---------------------------------------------------------------------------
def test_gpt_oss_channels_and_recipients():
    fmt = get_format("gpt-oss")
    # The template puts an assistant message's content beside a call into the analysis channel.
    text = reply("openai-gpt-oss-120b.jinja", {"role": "assistant", "content": "Let me check.",
                                               "tool_calls": [_call("add", {"a": 1, "b": 2})]})
    assert text.startswith("<|channel|>analysis<|message|>Let me check.<|end|>")
    msg = check_streaming(fmt, text)
    assert msg["reasoning_content"] == "Let me check." and msg["content"] is None and _args(msg) == {"a": 1, "b": 2}
    # A commentary preamble is content; the recipient may follow the channel, with <|constrain|>.
    msg = check_streaming(fmt, "<|channel|>commentary<|message|>Let me check.<|end|><|start|>assistant"
                               '<|channel|>commentary to=functions.add <|constrain|>json<|message|>{"a": 1, "b": 2}')
    assert msg["content"] == "Let me check." and _args(msg) == {"a": 1, "b": 2}
    # <|call|> ends generation, so a reply usually stops right after the arguments.
    assert check_streaming(fmt, text + "<|call|>") == check_streaming(fmt, text)
    # Several analysis messages, and the stray "commentary to=assistant" header some replies start with.
    msg = check_streaming(fmt, "<|channel|>commentary to=assistant<|channel|>analysis<|message|>one<|end|>"
                               "<|start|>assistant<|channel|>analysis<|message|>two<|end|>"
                               "<|start|>assistant<|channel|>final<|message|>Done.<|return|>")
    assert msg == {"role": "assistant", "content": "Done.", "reasoning_content": "one\n\ntwo"}
    # A built-in tool the caller did not offer stays visible; a reply without channels is content.
    msg = check_streaming(fmt, "<|channel|>analysis<|message|>run it<|end|><|start|>assistant to=container.exec"
                               "<|channel|>commentary<|message|>ls")
    assert "tool_calls" not in msg and "container.exec" in msg["content"] and msg["reasoning_content"] == "run it"
    assert check_streaming(fmt, "Plain answer.")["content"] == "Plain answer."


def test_gpt_oss_holds_back_half_written_markers():
    p = StreamParser(get_format("gpt-oss"), NAMES)
    assert p.push("<|channel|>analysis<|message|>Think") == [{"reasoning_content": "Think"}]
    assert p.push("ing<|en") == [{"reasoning_content": "ing"}]
    assert p.push("d|><|start|>assistant<|channel|>fin") == []
    assert p.push("al<|message|>Sunny<|ret") == [{"content": "Sunny"}]
    assert p.finish() == [{"content": "<|ret"}]  # it was text after all
    p = StreamParser(get_format("gpt-oss"), NAMES)
    assert p.push(' to=functions.add<|channel|>commentary json<|message|>{"a": 1, "b": 2}') == []
    assert p.finish()[0]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1, "b": 2}'}


# -- Gemma 4 ---------------------------------------------------------------------------
def test_gemma4_values_and_layout():
    fmt = get_format("gemma4")
    text = reply("google-gemma-4-31B-it.jinja", {"role": "assistant", "content": "", "tool_calls": [
        _call("get_weather", {"city": "x", "hourly": None, "when": [1, -2.5, "a", {"k": True}]})]})
    assert "hourly:None" in text  # the template writes Python's None
    msg = check_streaming(fmt, text)
    assert _args(msg) == {"city": "x", "hourly": None, "when": [1, -2.5, "a", {"k": True}]}
    # The template renders an assistant's text after its calls; a model may write it first.
    text = reply("google-gemma-4-31B-it.jinja", {"role": "assistant", "content": "Let me check.",
                                                 "tool_calls": [_call("add", {"a": 1, "b": 2})]})
    assert text.endswith("<tool_call|>Let me check.")
    for text in (text, "Let me check.<|tool_call>call:add{a:1,b:2}<tool_call|>"):
        msg = check_streaming(fmt, text)
        assert msg["content"] == "Let me check." and _args(msg) == {"a": 1, "b": 2}
    for text, args in [('<|tool_call>call:add{<|"|>a<|"|>:null,b:1.5e3}<tool_call|>', {"a": None, "b": 1500.0}),
                       ("<|tool_call>call:add{}<tool_call|>", {}),
                       ("<|tool_call>call:add{a:1,b:2}", {"a": 1, "b": 2})]:  # the end marker cut off
        assert _args(check_streaming(fmt, text)) == args
    for text in ("<|tool_call>call:add{a:1 b:2}<tool_call|>", "<|tool_call>call:add{a:tru}<tool_call|>",
                 "<|tool_call>call:add{a:[1,2}<tool_call|>", "<|tool_call>call:add(a=1)<tool_call|>",
                 "<|tool_call>call:add{a:1e999}<tool_call|>"):
        msg = check_streaming(fmt, text)
        assert "tool_calls" not in msg and msg["content"] == text


def test_gemma4_thought_blocks_never_reach_the_content():
    fmt = get_format("gemma4")
    msg = check_streaming(fmt, "<|channel>thought\n<channel|>Hello.<|channel>thought\n<channel|><channel|>")
    assert msg == {"role": "assistant", "content": "Hello."}
    msg = check_streaming(fmt, "<|channel><|channel>thought\nfirst<channel|>Hi<|channel>thought\nsecond"
                               "<channel|> there<|tool_call>call:add{a:1,b:2}<tool_call|>")
    assert msg["reasoning_content"] == "first\n\nsecond" and msg["content"] == "Hi there" and _args(msg)["a"] == 1
    p = StreamParser(fmt, NAMES)
    assert p.push("Sure.<|tool_c") == [{"content": "Sure."}]
    assert p.push("all>call:add{a:1,b:<|") == []
    assert p.push('"|>x<|"|>}<tool_call|>')[0]["tool_calls"][0]["function"]["arguments"] == '{"a": 1, "b": "x"}'


# -- LFM2 ------------------------------------------------------------------------------
def test_lfm2_python_calls():
    fmt = get_format("lfm2")
    # LFM2.5-8B-A1B renders the call list itself: strings in single quotes, nested objects as JSON.
    text = reply("LFM2.5-8B-A1B.jinja", {"role": "assistant", "content": "Let me check.",
                                         "tool_calls": [_call("get_weather", NESTED)]})
    assert text.startswith("Let me check.<|tool_call_start|>[get_weather(city='Zürich")
    msg = check_streaming(fmt, text)
    assert msg["content"] == "Let me check." and _args(msg) == NESTED
    names = NAMES | {"Calendar.create_event"}
    for text, name, args in [
        ('[Calendar.create_event(title="demo", who=["Alice", "Bob"], at=None)]', "Calendar.create_event",
         {"title": "demo", "who": ["Alice", "Bob"], "at": None}),
        ("[python(code=\"def hello():\\n    print('hey')\")]", "python", {"code": "def hello():\n    print('hey')"}),
        ('[add(a=-1, b=+2.5)]', "add", {"a": -1, "b": 2.5}),
        ('[get_weather(city="x", extra={"on": true, "off": False, "n": null})]', "get_weather",
         {"city": "x", "extra": {"on": True, "off": False, "n": None}}),
    ]:
        msg = check_streaming(fmt, f"<|tool_call_start|>{text}<|tool_call_end|>", names=names)
        assert _names(msg) == [name] and _args(msg) == args, text
    for text in ("<|tool_call_start|>[add(1, 2)]<|tool_call_end|>", "<|tool_call_start|>[add(a=b)]<|tool_call_end|>",
                 "<|tool_call_start|>[add(**kw)]<|tool_call_end|>", "<|tool_call_start|>[]<|tool_call_end|>",
                 "<|tool_call_start|>[add(a=1e999)]<|tool_call_end|>", "<|tool_call_start|>[add(a=1)"):
        msg = check_streaming(fmt, text)
        assert "tool_calls" not in msg and msg["content"] == text


@pytest.mark.parametrize("template", ["LFM2-8B-A1B.jinja", "LFM2.5-Instruct.jinja"])
def test_lfm2_templates_that_keep_calls_in_the_content(template):
    """These templates render no ``tool_calls``: the call text travels in the assistant's content."""
    calls = '<|tool_call_start|>[get_weather(city="Paris"), add(a=2, b=3)]<|tool_call_end|>'
    text = reply(template, {"role": "assistant", "content": "Checking." + calls})
    assert text == "Checking." + calls
    msg = check_streaming(get_format("lfm2"), text)
    assert msg["content"] == "Checking." and _names(msg) == ["get_weather", "add"] and _args(msg, 1) == {"a": 2, "b": 3}


# -- grammars ----------------------------------------------------------------------------
def _takes(model, grammar: Grammar, text: str, backend: str) -> bool:
    """Whether ``grammar`` lets the test model write ``text`` (its tokens, one at a time) and stop there."""
    constraint = make_constraint(model, grammar, backend)
    for token in model.vocab.tokenize(text, add_special=False):
        if not constraint.allows(token):
            return False
        constraint.accept(token)
    return constraint.complete or constraint.allows(model.vocab.eos)  # llguidance: complete, no EOS asked


@pytest.mark.parametrize("backend", ["llama", "llguidance"])
@pytest.mark.parametrize("template,name,parallel", FAMILIES, ids=IDS)
def test_forced_call_grammar_takes_the_templates_rendering(model, backend, template, name, parallel):
    fmt = get_format(name)
    weather = _call("get_weather", WEATHER_ARGS)
    single = reply(template, {"role": "assistant", "content": "", "tool_calls": [weather]})
    other = reply(template, {"role": "assistant", "content": "", "tool_calls": [_call("add", {"a": 2, "b": 3.5})]})
    required = Grammar.gbnf(build_tool_grammar(fmt, TOOLS, "required").gbnf)
    named = Grammar.gbnf(build_tool_grammar(fmt, TOOLS, {"type": "function", "function": {"name": "get_weather"}}).gbnf)
    assert _takes(model, required, single, backend) and _takes(model, required, other, backend)
    assert _takes(model, named, single, backend) and not _takes(model, named, other, backend)
    assert not _takes(model, required, "It is sunny.", backend)
    if parallel:
        both = reply(template, {"role": "assistant", "content": "",
                                "tool_calls": [weather, _call("add", {"a": 1, "b": 2})]})
        assert _takes(model, required, both, backend)
        single_only = Grammar.gbnf(build_tool_grammar(fmt, TOOLS, "required", parallel=False).gbnf)
        assert _takes(model, single_only, single, backend) and not _takes(model, single_only, both, backend)
    # Reasoning may come first (GPT-OSS writes it in the analysis channel, Gemma 4 in a thought block).
    if name != "lfm2":
        key = "thinking" if name == "gpt-oss" else "reasoning_content"
        thought = reply(template, {"role": "assistant", "content": "", key: "I should call get_weather.",
                                   "tool_calls": [weather]})
        assert thought != single and _takes(model, required, thought, backend)


LAZY = [  # (format, a reply with text before the call)
    ("gpt-oss", "<|channel|>analysis<|message|>plan<|end|><|start|>assistant to=functions.add<|channel|>commentary "
                'json<|message|>{"a": 1, "b": 2}'),
    ("gpt-oss", "<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant<|channel|>commentary "
                'to=functions.add <|constrain|>json<|message|>{"a": 1, "b": 2}'),
    ("gemma4", "Let me check.<|tool_call>call:add{a:1,b:2}<tool_call|>"),
    ("lfm2", "Let me check.<|tool_call_start|>[add(a=1, b=2)]<|tool_call_end|>"),
]


@pytest.mark.parametrize("backend", ["llama", "llguidance"])
@pytest.mark.parametrize("name,text", LAZY, ids=["gpt-oss-analysis", "gpt-oss-preamble", "gemma4", "lfm2"])
def test_auto_grammar_triggers_at_the_call(model, backend, name, text):
    """Under "auto" the text before the call is free; the call itself is constrained."""
    g = build_tool_grammar(get_format(name), TOOLS, "auto")
    grammar = Grammar.gbnf(g.gbnf).lazy(g.trigger_patterns)
    assert _takes(model, grammar, text, backend)
    constraint = make_constraint(model, grammar, backend)
    for token in model.vocab.tokenize(text, add_special=False):
        constraint.accept(token)
    assert not constraint.allows(model.vocab.tokenize("Z", add_special=False)[0]), "the call was not constrained"
    assert _takes(model, grammar, "It is sunny, 21 °C.", backend)  # an answer never meets a trigger

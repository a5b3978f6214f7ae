"""Tool-call formats: each family's parser reads what that family's own chat template (from the
fetched llama.cpp tree) renders for an assistant message, and the streaming parser adds up to
the same message for every way of splitting the text."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from llamapy import ChatTemplate
from llamapy.agent import StreamParser, detect_format, get_format, merge_deltas, parse_reply
from llamapy.agent.grammar import build_tool_grammar, react_grammar

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two numbers",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                   "required": ["a", "b"]}}}
TOOLS = [WEATHER, ADD]
NAMES = {"get_weather", "add", "python", "brave_search"}
NESTED = {"city": "Zürich \"Altstadt\" 東京 🌧", "unit": "celsius", "extra": {"days": [1, 2], "hourly": False}}
END_OF_TURN = ["<|im_end|>", "<|eot_id|>", "<|eom_id|>", "</s>", "<｜end▁of▁sentence｜>", "<|end_of_text|>",
               "<|END_OF_TURN_TOKEN|>", "<|user|>", "<|observation|>"]


def _templates_dir() -> Path:
    dirs = sorted(Path.home().glob(".cache/llamapy/sources/llama.cpp-*/models/templates"))
    assert dirs, "the fetched llama.cpp source tree (with models/templates) is missing: build llamapy first"
    return dirs[-1]


def _template(name: str) -> ChatTemplate:
    path = _templates_dir() / name
    assert path.is_file(), f"template {name} is not in the fetched llama.cpp tree"
    return ChatTemplate(path.read_text(), "<s>", "</s>")


def _call(name: str, args: dict, call_id: str = "abcDEF123") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def rendered_reply(template: str, assistant: dict, **extra) -> str:
    """The text a model of this family writes for ``assistant``: the conversation rendered with
    the message minus the conversation rendered up to the assistant's turn."""
    t = _template(template)
    history = [{"role": "system", "content": "You are a helpful assistant."},
               {"role": "user", "content": "What's the weather in Zürich? And 2+3?"}]
    prompt = t.render(history, add_generation_prompt=True, tools=TOOLS, **extra)
    full = t.render(history + [assistant], add_generation_prompt=False, tools=TOOLS, **extra)
    # Some generation prompts open an empty reasoning block that the history does not show.
    for opener in ("<|START_THINKING|><|END_THINKING|>", "<think>\n", "<think>"):
        if not full.startswith(prompt) and prompt.endswith(opener):
            prompt = prompt[:-len(opener)]
    if full.startswith(prompt):
        reply = full[len(prompt):]
    else:  # Mistral Nemo moves the system prompt into the last user turn: start after it
        assert prompt.endswith("[/INST]"), f"{template}: the reply does not follow the generation prompt"
        reply = full[full.rindex("[/INST]") + len("[/INST]"):]
    ends = [i for i in (reply.find(eot) for eot in END_OF_TURN) if i >= 0]
    return reply[:min(ends)] if ends else reply


def check_streaming(fmt, text: str, thinking: bool = False, names=NAMES) -> dict:
    """The parse of ``text``; asserts that every 2-way split and a char-by-char stream add up to it."""
    expected = parse_reply(fmt, text, names, thinking, make_id=lambda: "id").to_dict()
    for k in range(len(text) + 1):
        p = StreamParser(fmt, names, thinking, make_id=lambda: "id")
        deltas = p.push(text[:k]) + p.push(text[k:]) + p.finish()
        assert merge_deltas(deltas) == expected, f"split at {k}: {text[:k]!r} | {text[k:]!r}"
    p = StreamParser(fmt, names, thinking, make_id=lambda: "id")
    deltas = [d for ch in text for d in p.push(ch)] + p.finish()
    assert merge_deltas(deltas) == expected
    return expected


def _args(msg: dict, i: int = 0) -> dict:
    return json.loads(msg["tool_calls"][i]["function"]["arguments"])


# (template file, format name, renders content beside calls, renders several calls)
FAMILIES = [
    ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", True, True),
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "hermes", False, True),
    ("ibm-granite-granite-4.0.jinja", "hermes", True, True),
    ("Qwen3-Coder.jinja", "qwen3-coder", True, True),
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3", False, False),
    ("meta-llama-Llama-3.3-70B-Instruct.jinja", "llama3", False, False),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral-nemo", False, True),
    ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral", False, True),
    ("llama-cpp-deepseek-r1.jinja", "deepseek-r1", False, True),
    ("deepseek-ai-DeepSeek-V3.1.jinja", "deepseek-v3.1", True, True),
    ("meetkai-functionary-medium-v3.1.jinja", "functionary-v3.1", True, True),
    ("meetkai-functionary-medium-v3.2.jinja", "functionary-v3.2", True, True),
    ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", "command-r7b", False, True),
    ("moonshotai-Kimi-K2.jinja", "kimi-k2", True, True),
    ("GLM-4.6.jinja", "glm4", True, True),
]


@pytest.mark.parametrize("template,name,with_content,parallel", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_parses_its_own_rendering(template, name, with_content, parallel):
    fmt = detect_format(_template(template).source)
    assert fmt.name == name
    # one call, nested and unicode arguments
    text = rendered_reply(template, {"role": "assistant", "content": "",
                                               "tool_calls": [_call("get_weather", NESTED)]})
    msg = check_streaming(fmt, text)
    assert [c["function"]["name"] for c in msg["tool_calls"]] == ["get_weather"], text
    assert _args(msg) == NESTED and not msg["content"]
    # parallel calls
    if parallel:
        text = rendered_reply(template, {"role": "assistant", "content": "", "tool_calls": [
            _call("get_weather", {"city": "Paris"}, "abcDEF123"), _call("add", {"a": 2, "b": 3.5}, "xyzXYZ789")]})
        msg = check_streaming(fmt, text)
        assert [c["function"]["name"] for c in msg["tool_calls"]] == ["get_weather", "add"], text
        assert _args(msg, 1) == {"a": 2, "b": 3.5}
    # text before the call
    if with_content:
        text = rendered_reply(template, {"role": "assistant", "content": "Let me check that.",
                                                   "tool_calls": [_call("add", {"a": 1, "b": 2})]})
        msg = check_streaming(fmt, text)
        assert msg["content"] == "Let me check that." and _args(msg) == {"a": 1, "b": 2}, text
    # a plain answer stays content
    text = rendered_reply(template, {"role": "assistant", "content": "It is sunny, 21 °C."})
    msg = check_streaming(fmt, text)
    assert "tool_calls" not in msg and "It is sunny, 21 °C." in msg["content"]


@pytest.mark.parametrize("template,name,with_content,parallel", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_truncated_and_malformed_calls_never_raise(template, name, with_content, parallel):
    fmt = get_format(name)
    text = rendered_reply(template, {"role": "assistant", "content": "",
                                               "tool_calls": [_call("get_weather", NESTED)]})
    for k in range(len(text)):
        msg = parse_reply(fmt, text[:k], NAMES).to_dict()  # a reply cut off at any point
        for call in msg.get("tool_calls", []):
            json.loads(call["function"]["arguments"])  # whatever is reported as a call is whole
    broken = text.replace('"city"', '"city', 1) if '"city"' in text else text.replace("city", "", 1)
    msg = check_streaming(fmt, broken)
    assert all(c["function"]["name"] in NAMES for c in msg.get("tool_calls", []))
    unknown = text.replace("get_weather", "launch_rockets")
    msg = check_streaming(fmt, unknown)
    assert "tool_calls" not in msg and msg["content"], "a call of an unknown tool stays visible as text"


REASONING = [("hermes", "<think>The user wants weather.\nCall it.</think>\n\n"),
             ("qwen3-coder", "<think>plan</think>\n"), ("deepseek-r1", "<think>\nplan\n</think>\n\n"),
             ("deepseek-v3.1", "<think>plan</think>"), ("glm4", "\n<think>plan</think>\n"),
             ("kimi-k2", "<think>plan</think>"), ("mistral", "[THINK]plan[/THINK]"),
             ("command-r7b", "<|START_THINKING|>plan<|END_THINKING|>")]


@pytest.mark.parametrize("name,think", REASONING)
def test_reasoning_goes_to_reasoning_content(name, think):
    template = next(t for t, n, *_ in FAMILIES if n == name)
    text = rendered_reply(template, {"role": "assistant", "content": "",
                                        "tool_calls": [_call("add", {"a": 1, "b": 2})]})
    fmt = get_format(name)
    msg = check_streaming(fmt, think + text.lstrip())
    assert msg["reasoning_content"] in ("plan", "The user wants weather.\nCall it.")
    assert "plan" not in (msg["content"] or "") and _args(msg) == {"a": 1, "b": 2}
    # the prompt already opened the block (R1-style generation prompts end with <think>)
    close = fmt.think[1]
    msg = check_streaming(fmt, f"still thinking{close}The answer is 5.", thinking=True)
    assert msg == {"role": "assistant", "content": "The answer is 5.", "reasoning_content": "still thinking"}
    msg = check_streaming(fmt, "cut off while thinking", thinking=True)
    assert msg["reasoning_content"] == "cut off while thinking" and msg["content"] == ""


def test_llama3_builtin_and_python_tag():
    fmt = get_format("llama3")
    text = rendered_reply("meta-llama-Llama-3.1-8B-Instruct.jinja",
                             {"role": "assistant", "tool_calls": [_call("brave_search", {"query": "Zürich weather"})]},
                             builtin_tools=["brave_search"])
    assert text.startswith("<|python_tag|>brave_search.call(")
    msg = check_streaming(fmt, text)
    assert msg["tool_calls"][0]["function"]["name"] == "brave_search" and _args(msg) == {"query": "Zürich weather"}
    msg = check_streaming(fmt, '<|python_tag|>{"name": "add", "parameters": {"a": 1, "b": 2}}')
    assert _args(msg) == {"a": 1, "b": 2}
    msg = check_streaming(fmt, "<|python_tag|>print(1 + 1)")
    assert msg["tool_calls"][0]["function"]["name"] == "python" and _args(msg) == {"code": "print(1 + 1)"}


def test_hermes_bare_json_and_fenced_calls():
    """Small Qwen models often drop the tags: a reply that is only a call object is a call."""
    fmt = get_format("hermes")
    for text in ('{"name": "add", "arguments": {"a": 1, "b": 2}}',
                 '```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```',
                 '{"name": "add", "arguments": {"a": 1, "b": 2}}\n{"name": "get_weather", "arguments": {"city": "x"}}'):
        msg = check_streaming(fmt, text)
        assert _args(msg) == {"a": 1, "b": 2}
    msg = check_streaming(fmt, 'Here is the call:\n\n{\n  "name": "add",\n  "arguments": {"a": 1, "b": 2}\n}')
    assert msg["content"] == "Here is the call:" and _args(msg) == {"a": 1, "b": 2}
    for text in ('{"result": 3}', '```python\nprint("hi")\n```', '{"name": "unknown", "arguments": {}}',
                 '{"name": "add", "arguments": {"a": 1', "int main()\n{\n  return 0;\n}"):
        msg = check_streaming(fmt, text)
        assert "tool_calls" not in msg and msg["content"] == text.strip()


def test_half_written_markers_are_held_back():
    fmt = get_format("hermes")
    p = StreamParser(fmt, NAMES)
    assert p.push("Sure. <tool") == [{"content": "Sure."}]
    assert p.push("_call>\n{\"name\": \"add\", ") == []
    deltas = p.push('"arguments": {"a": 1, "b": 2}}\n</tool_call>') + p.finish()
    assert deltas[0]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1, "b": 2}'}
    p = StreamParser(fmt, NAMES)
    assert p.push("Use <tool") == [{"content": "Use"}]
    assert p.finish() == [{"content": " <tool"}]  # it was text after all


def test_generic_envelope():
    fmt = get_format("generic")
    msg = check_streaming(fmt, '{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}')
    assert _args(msg) == {"a": 1, "b": 2}
    msg = check_streaming(fmt, '{"response": "Hello, how can I help?"}')
    assert msg["content"] == "Hello, how can I help?" and "tool_calls" not in msg
    msg = check_streaming(fmt, "Plain text answer.")
    assert msg["content"] == "Plain text answer."


def test_granite3_list_syntax():
    fmt = detect_format(_template("ibm-granite-granite-3.3-2B-Instruct.jinja").source)
    assert fmt.name == "granite"
    # Granite 3.3's template does not render past calls; this is the syntax its system prompt asks for.
    msg = check_streaming(fmt, '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Rome"}}, '
                               '{"name": "add", "arguments": {"a": 1, "b": 2}}]')
    assert [c["function"]["name"] for c in msg["tool_calls"]] == ["get_weather", "add"]


def test_tool_messages_and_call_history_render():
    """A full tool round trip renders with JSON-text arguments, as OpenAI clients send them."""
    t = _template("Qwen-Qwen2.5-7B-Instruct.jinja")
    msgs = [{"role": "user", "content": "2+3?"},
            {"role": "assistant", "content": None, "tool_calls": [_call("add", {"a": 2, "b": 3})]},
            {"role": "tool", "tool_call_id": "abcDEF123", "content": "5"}]
    text = t.render(msgs, tools=TOOLS)
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>' in text
    assert "<tool_response>\n5\n</tool_response>" in text
    v32 = _template("meetkai-functionary-medium-v3.2.jinja").render(copy.deepcopy(msgs), tools=TOOLS)
    assert '>>>add\n{"a": 2, "b": 3}' in v32  # a template that concatenates the arguments as text


def test_grammars_are_accepted_by_llama_cpp(model):
    """Every family's call grammar, every tool_choice, parses in llama.cpp's grammar engine."""
    from llamapy import Sampler

    vocab = model.vocab
    for _, name, *_ in FAMILIES + [("", "generic", 0, 0), ("", "granite", 0, 0)]:
        fmt = get_format(name)
        for choice in ("auto", "required", "add"):
            if not fmt.grammar:
                assert build_tool_grammar(fmt, TOOLS, "auto") is None
                with pytest.raises(ValueError, match="auto"):
                    build_tool_grammar(fmt, TOOLS, "required")
                break
            g = build_tool_grammar(fmt, TOOLS, choice)
            Sampler.grammar_lazy(vocab, g.gbnf, trigger_patterns=g.trigger_patterns) if g.lazy \
                else Sampler.grammar(vocab, g.gbnf)
    assert build_tool_grammar(get_format("hermes"), TOOLS, "none") is None
    Sampler.grammar(vocab, react_grammar(TOOLS))
    with pytest.raises(ValueError, match="not among the tools"):
        build_tool_grammar(get_format("hermes"), TOOLS, {"type": "function", "function": {"name": "nope"}})

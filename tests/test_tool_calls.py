"""Tool calls end to end on Qwen2.5-Coder-0.5B (Hermes-style template): auto / required / none /
named, streaming, and the lazy grammar leaving free text alone. The full 20 prompts x 5 seeds
measurement is benchmarks/bench_tool_calls.py; this is a smaller sample of it."""
from __future__ import annotations

import json

import pytest

from llamapy import LLM
from llamapy.agent import merge_deltas
from llamapy.agent.chat import prepare
from llamapy.hub.catalog import pull

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "the city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
NEEDS_TOOL = ["What's the weather like in Paris right now?", "Is it raining in London?",
              "How hot is it in Tokyo today, in fahrenheit?", "Tell me the current temperature in Berlin.",
              "Should I take an umbrella in Seattle today?", "Weather report for Madrid, please."]
NO_TOOL = ["hi", "write a haiku about the sea", "What is the capital of Italy?", "Thanks, that's all!"]
SEEDS = [1, 2]


def valid_weather_call(msg: dict) -> bool:
    """The message holds exactly calls of get_weather whose arguments match its schema."""
    calls = msg.get("tool_calls") or []
    if not calls:
        return False
    for call in calls:
        if call["function"]["name"] != "get_weather" or not call["id"]:
            return False
        args = json.loads(call["function"]["arguments"])
        if set(args) - {"city", "unit"} or not isinstance(args.get("city"), str) or not args["city"]:
            return False
        if "unit" in args and args["unit"] not in ("celsius", "fahrenheit"):
            return False
    return True


@pytest.fixture(scope="module")
def llm():
    with LLM(pull("qwen2.5-coder-0.5b-instruct", quiet=True), n_ctx=2048, temperature=0.7,
             max_tokens=96) as model:
        yield model


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_required_always_gives_a_valid_call(llm):
    for prompt in NEEDS_TOOL:
        for seed in SEEDS:
            msg = llm.chat(ask(prompt), tools=[WEATHER], tool_choice="required", seed=seed)
            assert valid_weather_call(msg), (prompt, seed, msg)
            assert llm.last_stats.finish_reason == "tool_calls"


def test_auto_calls_when_the_tool_is_needed(llm):
    """Under "auto" the model decides, checked (this 0.5B model sometimes answers from thin air: the
    full-size rate is measured by benchmarks/bench_tool_calls.py); every call it makes is valid."""
    replies = [llm.chat(ask(p), tools=[WEATHER], tool_choice="auto", seed=s) for p in NEEDS_TOOL for s in SEEDS]
    calls = [m for m in replies if m.get("tool_calls")]
    assert all(valid_weather_call(m) for m in calls), calls
    assert len(calls) >= 10, f"calls: {len(calls)}/{len(replies)}"


def test_lazy_grammar_keeps_the_models_choice(llm):
    """Unchecked, the lazy grammar leaves the model's choice alone: a reply is a call exactly when the
    same prompt and seed without any grammar starts one, and free text comes back unchanged."""
    raw_calls = 0
    for prompt in NO_TOOL:
        setup = prepare(llm, ask(prompt), [WEATHER])
        plain = llm(setup["prompt"], seed=1, parse_special=True)
        calls = setup["format"].parse(plain, True, setup["tool_names"]).tool_calls
        reply = llm.chat(ask(prompt), tools=[WEATHER], tool_choice="auto", seed=1, check_calls=False)
        assert ("tool_calls" in reply) == bool(calls), (prompt, plain, reply)
        raw_calls += bool(calls)
        if "tool_calls" not in reply:
            assert reply["content"] and reply["content"].strip() == plain.strip()
    assert 0 < raw_calls < len(NO_TOOL)  # this model calls the weather tool for some chit-chat...


def test_auto_drops_calls_from_nowhere(llm):
    """... and the check drops those calls (their city is in no message) for a reply without tools."""
    for prompt in NO_TOOL:
        for seed in SEEDS:
            reply = llm.chat(ask(prompt), tools=[WEATHER], tool_choice="auto", seed=seed)
            assert "tool_calls" not in reply and reply["content"].strip(), (prompt, seed, reply)
            assert llm.last_stats.finish_reason in ("stop", "length")


def test_a_reply_that_names_the_tool_gets_its_call(llm):
    """The model writes the call in a syntax of its own (naming the tool): the check adds the real call."""
    prompt = NEEDS_TOOL[3]  # Berlin
    llm.chat(ask(prompt), tools=[WEATHER], seed=1, max_tokens=1)  # both replies below reuse this prefix
    raw = llm.chat(ask(prompt), tools=[WEATHER], seed=1, check_calls=False)
    assert "tool_calls" not in raw and "get_weather" in raw["content"], raw
    checked = llm.chat(ask(prompt), tools=[WEATHER], seed=1)
    assert checked["content"] == raw["content"] and valid_weather_call(checked), checked
    assert json.loads(checked["tool_calls"][0]["function"]["arguments"])["city"] == "Berlin"
    assert llm.last_stats.finish_reason == "tool_calls"
    assert llm.last_stats.completion_tokens > len(llm.vocab.tokenize(raw["content"], add_special=False))


def test_none_and_named_choices(llm):
    msg = llm.chat(ask(NEEDS_TOOL[0]), tools=[WEATHER, TIME], tool_choice="none", seed=1)
    assert "tool_calls" not in msg and isinstance(msg["content"], str) and msg["content"]
    for choice in ("get_time", {"type": "function", "function": {"name": "get_time"}}):
        msg = llm.chat(ask(NEEDS_TOOL[0]), tools=[WEATHER, TIME], tool_choice=choice, seed=1)
        assert [c["function"]["name"] for c in msg["tool_calls"]] == ["get_time"]
        assert isinstance(json.loads(msg["tool_calls"][0]["function"]["arguments"])["city"], str)
    with pytest.raises(ValueError, match="one of the tools .get_weather., got .get_time."):
        llm.chat(ask("hi"), tools=[WEATHER], tool_choice="get_time")
    with pytest.raises(ValueError, match="tool_choice"):
        llm.chat(ask("hi"), tools=[WEATHER], tool_choice="sometimes")


def test_stream_adds_up_to_the_message(llm):
    for prompt, choice in ((NEEDS_TOOL[1], "required"), (NEEDS_TOOL[2], "auto"), (NO_TOOL[1], "auto"),
                           (NO_TOOL[0], "auto"), (NEEDS_TOOL[3], "auto")):
        # both calls below follow a call with the same prompt, so both reuse the same cached prefix (a different
        # split of the prompt's decode moves the logits by rounding, and a sampled reply with them)
        llm.chat(ask(prompt), tools=[WEATHER], tool_choice=choice, seed=3, max_tokens=1)
        whole = llm.chat(ask(prompt), tools=[WEATHER], tool_choice=choice, seed=3)
        deltas = list(llm.chat(ask(prompt), tools=[WEATHER], tool_choice=choice, seed=3, stream=True))
        assert all(set(d) <= {"content", "reasoning_content", "tool_calls"} for d in deltas)
        merged = merge_deltas(deltas)
        for m in (whole, merged):
            for c in m.get("tool_calls", []):
                c["id"] = "x"
        assert merged == whole


def test_lazy_grammar_leaves_free_text_alone(llm):
    """Armed but not triggered, the grammar changes nothing: same text as with no grammar."""
    job = prepare(llm, ask(NO_TOOL[1]), [WEATHER], "auto")
    assert job["settings"]["grammar_triggers"]
    free = llm.generate(job["prompt"], seed=5, parse_special=True)
    msg = llm.chat(ask(NO_TOOL[1]), tools=[WEATHER], tool_choice="auto", seed=5, check_calls=False)
    assert msg["content"] == free.strip()


def test_tools_from_functions_and_plain_chat(llm):
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return "sunny"

    msg = llm.chat(ask(NEEDS_TOOL[0]), tools=[get_weather], tool_choice="required", seed=1, max_tokens=64)
    assert msg["tool_calls"][0]["function"]["name"] == "get_weather"
    assert isinstance(llm.chat(ask("hi"), max_tokens=8), str)  # without tools: text, as before

"""Tool calling through the server: a model with a native call format (Qwen2.5-Coder 0.5B,
Hermes-style <tool_call>) answered through the openai package, streaming and not, and
llama-py's LlamaAgent driving a tool round trip against the server."""
from __future__ import annotations

import json

import openai
import pytest

from llamapy.agent import LlamaAgent
from llamapy.hub.catalog import pull
from llamapy.server import ServerLauncher

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module")
def server():
    with ServerLauncher(pull("qwen2.5-coder-0.5b-instruct", quiet=True), port=0, server_binary="llamapy",
                        n_parallel=1, n_ctx=2048, n_threads=1, extra_args=["--log-level", "warning"]) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


def test_forced_tool_call(client):
    r = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="required",
                                       temperature=0, max_tokens=64)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert "paris" in json.loads(call.function.arguments)["city"].lower()


def test_streamed_tool_call_adds_up(client):
    chunks = list(client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="required",
                                                 temperature=0, max_tokens=64, stream=True))
    calls = [tc for c in chunks if c.choices and c.choices[0].delta.tool_calls for tc in c.choices[0].delta.tool_calls]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments)["city"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_answers_in_text(client):
    r = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="none",
                                       temperature=0, max_tokens=16)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


def test_auto_calls_are_checked(client):
    """Under "auto" this model calls the weather tool for "hi" most of the time: the server drops such
    calls (their city is in no message) for a reply without tools, streamed or not."""
    for seed in (1, 2, 3):
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER],
                                           temperature=0.7, seed=seed, max_tokens=48)
        choice = r.choices[0]
        assert choice.message.tool_calls is None and choice.message.content.strip(), (seed, choice)
        assert choice.finish_reason in ("stop", "length") and r.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                     tools=[WEATHER], temperature=0.7, seed=seed, max_tokens=48,
                                                     stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert not any(d.tool_calls for d in deltas)
        assert "".join(d.content or "" for d in deltas).strip()
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    calls = []
    for seed in (1, 2, 3):  # a question that needs the tool still gets its call
        r = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], temperature=0.7, seed=seed,
                                           max_tokens=64)
        calls += [json.loads(c.function.arguments)["city"] for c in r.choices[0].message.tool_calls or []]
    assert calls and all("paris" in c.lower() for c in calls)


def test_llama_agent_round_trip(server):
    agent = LlamaAgent(base_url=server.url)
    first = agent.chat(ASK[0]["content"], tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=64)
    (call,) = first["choices"][0]["message"]["tool_calls"]
    agent.add_tool_result(call["id"], {"city": "Paris", "temperature_c": 21, "sky": "sunny"}, name="get_weather")
    final = agent.chat(tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=40)  # now answer in words
    message = final["choices"][0]["message"]
    assert final["choices"][0]["finish_reason"] in ("stop", "length") and message["content"]
    assert "21" in message["content"] or "sunny" in message["content"].lower()

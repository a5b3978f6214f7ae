"""The clients people already use, on a local model: OpenAICompatibleClient (the openai package's
own types, in-process) and the LangChain LLM, chat model and embeddings."""
from __future__ import annotations

import json

import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import PromptTemplate

from llamapy import LLM
from llamapy.hub.catalog import pull
from llamapy.integrations import CyllamaLLM, LlamapyChatModel, LlamapyLLM, OpenAICompatibleClient
from llamapy.integrations.openai_protocol import RequestError

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is Python?"}]


@pytest.fixture(scope="module")
def client(model_path):
    with OpenAICompatibleClient(model_path=str(model_path), n_threads=1, n_ctx=2048) as c:
        yield c


@pytest.fixture(scope="module")
def local(model_path):
    with LLM(model_path, n_ctx=2048, n_threads=1, repeat_penalty=1.0, add_bos=None) as llm:
        yield llm


def test_openai_client_returns_openai_types(client, local):
    # the reference's example, as written
    response = client.chat.completions.create(messages=MESSAGES, temperature=0, max_tokens=40)
    assert isinstance(response, openai.types.chat.ChatCompletion)
    assert response.choices[0].message.content == local.chat(MESSAGES, temperature=0, max_tokens=40)
    assert response.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(messages=[{"role": "user", "content": "Count to 5"}], stream=True,
                                                 temperature=0, max_tokens=30))
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == local.chat([{"role": "user", "content": "Count to 5"}], temperature=0, max_tokens=30)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_openai_client_completions_json_and_models(client, local):
    r = client.completions.create(prompt="The capital of France is", max_tokens=8, temperature=0)
    assert isinstance(r, openai.types.Completion)
    assert r.choices[0].text == local("The capital of France is", temperature=0, max_tokens=8)
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 30}}, "required": ["answer"]}
    j = client.chat.completions.create(messages=MESSAGES, max_tokens=40, temperature=0, response_format={
        "type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert set(json.loads(j.choices[0].message.content)) == {"answer"}
    assert client.models.list()[0].id.endswith(".gguf")


def test_openai_client_rejects_what_openai_would(client):
    with pytest.raises(RequestError):
        client.chat.completions.create(messages=MESSAGES, n=3)
    with pytest.raises(TypeError):
        client.chat.completions.create(messages=MESSAGES, frobnicate=1)
    with pytest.raises(RequestError):
        client.chat.completions.create(messages=[])


def test_openai_client_stream_closed_early_cancels(client):
    stream = client.chat.completions.create(messages=MESSAGES, max_tokens=500, stream=True,
                                            extra_body={"ignore_eos": True})
    next(stream)
    next(stream)
    stream.close()
    # the slot is free again at once: the next request runs (one slot in this client)
    r = client.chat.completions.create(messages=MESSAGES, max_tokens=3)
    assert r.usage.completion_tokens == 3


class _Collect(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


@pytest.fixture(scope="module")
def lc_llm(model_path):
    llm = LlamapyLLM(model_path=str(model_path), temperature=0, max_tokens=24, n_threads=1, repeat_penalty=1.0)
    yield llm
    llm.close()


def test_langchain_llm_in_a_chain(lc_llm, local):
    assert CyllamaLLM is LlamapyLLM
    prompt = PromptTemplate(input_variables=["topic"], template="Explain {topic} in simple terms:")
    chain = prompt | lc_llm
    result = chain.invoke({"topic": "quantum computing"})
    assert result == local("Explain quantum computing in simple terms:", temperature=0, max_tokens=24)


def test_langchain_llm_streams_to_callbacks(model_path, local):
    seen = _Collect()
    llm = LlamapyLLM(model_path=str(model_path), streaming=True, callbacks=[seen], temperature=0, max_tokens=16,
                     n_threads=1, repeat_penalty=1.0)
    try:
        text = llm.invoke("The capital of France is")
    finally:
        llm.close()
    assert len(seen.tokens) > 1 and "".join(seen.tokens) == text
    assert text == local("The capital of France is", temperature=0, max_tokens=16)


def test_langchain_chat_model(model_path, local):
    chat = LlamapyChatModel(model_path=str(model_path), temperature=0, max_tokens=24, n_threads=1, repeat_penalty=1.0)
    try:
        messages = [SystemMessage("You are a helpful assistant."), HumanMessage("What is Python?")]
        reply = chat.invoke(messages)
        assert reply.content == local.chat(MESSAGES, temperature=0, max_tokens=24)
        streamed = "".join(str(c.content) for c in chat.stream(messages))
        assert streamed == reply.content
    finally:
        chat.close()


def test_langchain_chat_model_bind_tools():
    from llamapy.hub.catalog import pull

    def get_weather(city: str) -> str:
        """Current weather of a city.

        Args:
            city: the city's name
        """
        return "sunny"

    chat = LlamapyChatModel(model_path=str(pull("qwen2.5-coder-0.5b-instruct", quiet=True)), temperature=0,
                            max_tokens=64, n_threads=1, n_ctx=2048)
    try:
        reply = chat.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    finally:
        chat.close()
    (call,) = reply.tool_calls
    assert call["name"] == "get_weather" and "paris" in call["args"]["city"].lower() and call["id"]


def test_client_checks_auto_tool_calls():
    """The in-process client checks "auto" replies like the server: no call for "hi"."""
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "e.g. Paris"}},
                       "required": ["city"]}}}
    with OpenAICompatibleClient(model_path=str(pull("qwen2.5-coder-0.5b-instruct", quiet=True)), n_threads=1,
                                n_ctx=2048) as c:
        for seed in (1, 2, 3):
            r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], tools=[weather],
                                          temperature=0.7, seed=seed, max_tokens=48)
            assert r.choices[0].message.tool_calls is None and r.choices[0].message.content.strip()
            chunks = list(c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                    tools=[weather], temperature=0.7, seed=seed, max_tokens=48,
                                                    stream=True))
            deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
            assert not any(d.tool_calls for d in deltas) and "".join(d.content or "" for d in deltas).strip()
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Weather in Oslo, please?"}],
                                      tools=[weather], tool_choice="required", seed=1, max_tokens=48)
        assert "oslo" in json.loads(r.choices[0].message.tool_calls[0].function.arguments)["city"].lower()

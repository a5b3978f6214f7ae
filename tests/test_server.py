"""The OpenAI-compatible server, driven over loopback by the real `openai` package and raw HTTP.

The server runs as `llamapy serve` in a subprocess (stopped by pid at the end of the module).
Greedy answers are checked against the same model run in-process by LLM.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest

from llamapy import LLM
from llamapy.server import ServerLauncher

SYSTEM = "You are a concise assistant. Answer in one short sentence."


@pytest.fixture(scope="module")
def server(model_path):
    with ServerLauncher(model_path, port=0, server_binary="llamapy", n_parallel=4, n_ctx=4096, n_threads=1,
                        extra_args=["--log-level", "warning", "--max-request-bytes", "200000"]) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as h:
        yield h


@pytest.fixture(scope="module")
def local(model_path):
    """The same model in-process: what the server must answer for greedy requests."""
    with LLM(model_path, n_ctx=1024, n_threads=1, repeat_penalty=1.0, add_bos=None) as llm:
        yield llm


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def metric(http: httpx.Client, name: str, headers: dict | None = None) -> float:
    for line in http.get("/metrics", headers=headers).text.splitlines():
        if line.startswith(f"llamapy_{name} "):
            return float(line.split()[1])
    raise AssertionError(f"llamapy_{name} missing from /metrics")


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert {"type", "param", "code"} <= set(body["error"])
    return body["error"]


# -- the openai client --------------------------------------------------------------------------
def test_health_and_models(client, http, model_path):
    assert http.get("/health").json() == {"status": "ok"}
    models = client.models.list()
    assert [m.id for m in models.data] == [model_path.name]


def test_chat_greedy_equals_local_generation(client, local):
    messages = ask("What is the capital of France?")
    r = client.chat.completions.create(model="any", messages=messages, temperature=0, max_tokens=24)
    assert isinstance(r, openai.types.chat.ChatCompletion)
    expected, stats = local.chat_with_stats(messages, temperature=0, max_tokens=24)
    assert r.choices[0].message.content == expected
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == stats.finish_reason
    assert r.usage.prompt_tokens == stats.prompt_tokens and r.usage.completion_tokens == stats.completion_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_adds_up_to_the_whole_answer(client):
    messages = ask("Name three colours.")
    whole = client.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=30)
    chunks = list(client.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=30,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_sse_wire_format_ends_with_done(http):
    body = {"messages": ask("Say hi."), "max_tokens": 5, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1
    for e in events[:-1]:
        assert json.loads(e[6:])["object"] == "chat.completion.chunk"


def test_async_client_concurrent_requests(server, local):
    questions = ["What is 2+2?", "Who wrote Hamlet?", "What colour is the sky?", "Name a fruit."]

    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
            replies = await asyncio.gather(*(c.chat.completions.create(
                model="m", messages=ask(q), temperature=0, max_tokens=20) for q in questions))
        return [r.choices[0].message.content for r in replies]

    assert asyncio.run(run()) == [local.chat(ask(q), temperature=0, max_tokens=20) for q in questions]


def test_ngram_speculation_serves_the_same_greedy_text(model_path, local):
    """``llamapy serve --speculative ngram``: slots draft from their own text, replies stay the same."""
    questions = ["Repeat exactly: red, green, blue, red, green, blue, red, green, blue.",
                 "Copy this code: def add(a, b): return a + b", "Count from 1 to 12."]
    with ServerLauncher(model_path, port=0, server_binary="llamapy", n_parallel=2, n_ctx=2048, n_threads=1,
                        extra_args=["--log-level", "warning", "--speculative", "ngram", "--n-draft", "8"]) as s:
        with openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0) as c:
            replies = [c.chat.completions.create(model="m", messages=ask(q), temperature=0, max_tokens=40)
                       for q in questions]
    assert [r.choices[0].message.content for r in replies] == \
        [local.chat(ask(q), temperature=0, max_tokens=40) for q in questions]


def test_json_schema_response_format(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 150}},
              "required": ["name", "age"], "additionalProperties": False}
    r = client.chat.completions.create(
        model="m", messages=ask("Invent a person. Reply in JSON."), max_tokens=60, temperature=0.7, seed=3,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_json_object_response_format(client):
    r = client.chat.completions.create(model="m", messages=ask("Describe a cat as JSON."), max_tokens=80,
                                       temperature=0, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_max_tokens_stop_and_seed(client, local):
    messages = ask("Count from one to twenty in words.")
    r = client.chat.completions.create(model="m", messages=messages, max_completion_tokens=7, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 7
    full = local.chat(messages, temperature=0, max_tokens=40)
    cut = full.split(" ")[2]
    r = client.chat.completions.create(model="m", messages=messages, max_tokens=40, temperature=0, stop=[cut])
    assert r.choices[0].finish_reason == "stop" and cut not in r.choices[0].message.content
    assert r.choices[0].message.content == full[: full.index(cut)]
    sampled = [client.chat.completions.create(model="m", messages=ask("Tell me a story."), max_tokens=16,
                                              temperature=1.0, seed=42).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_logprobs(client):
    r = client.chat.completions.create(model="m", messages=ask("Hi!"), max_tokens=6, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token  # greedy picks the most likely token
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob


def test_streamed_logprobs_match(client):
    kwargs = dict(model="m", messages=ask("Hello there."), max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    whole = client.chat.completions.create(**kwargs)
    streamed = [t for c in client.chat.completions.create(stream=True, **kwargs)
                if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in whole.choices[0].logprobs.content]


def test_completions_several_prompts_echo_and_logprobs(client, local):
    prompts = ["The capital of France is", "1, 2, 3, 4,"]
    r = client.completions.create(model="m", prompt=prompts, max_tokens=12, temperature=0, logprobs=2)
    assert isinstance(r, openai.types.Completion)
    assert [c.index for c in r.choices] == [0, 1]
    for choice, prompt in zip(r.choices, prompts):
        assert choice.text == local(prompt, temperature=0, max_tokens=12)
        assert len(choice.logprobs.tokens) == len(choice.logprobs.token_logprobs) == len(choice.logprobs.top_logprobs)
    echoed = client.completions.create(model="m", prompt=prompts[0], max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith(prompts[0])
    parts = list(client.completions.create(model="m", prompt=prompts[0], max_tokens=12, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in parts if p.choices) == r.choices[0].text


def test_next_turn_reuses_the_cache(client):
    history = ask("Tell me about the river Nile.")
    first = client.chat.completions.create(model="m", messages=history, max_tokens=20, temperature=0)
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "And the Amazon?"}]
    second = client.chat.completions.create(model="m", messages=history, max_tokens=8, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens, (cached, first.usage)


def test_tokenize_detokenize(http, local):
    text = "Hello, world! Ünïcödé"
    tokens = http.post("/tokenize", json={"content": text}).json()["tokens"]
    assert tokens == local.vocab.tokenize(text, add_special=False, parse_special=True)
    assert http.post("/detokenize", json={"tokens": tokens}).json() == {"content": text}
    pieces = http.post("/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == tokens


def test_metrics_count_requests_and_tokens(client, http):
    before = metric(http, "generated_tokens_total")
    r = client.chat.completions.create(model="m", messages=ask("Hi"), max_tokens=5, temperature=0)
    text = http.get("/metrics").text
    assert metric(http, "generated_tokens_total") == before + r.usage.completion_tokens
    assert metric(http, "slots_total") == 4 and metric(http, "slots_busy") == 0
    assert 'llamapy_http_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert "# TYPE llamapy_queue_depth gauge" in text


# -- malformed requests: OpenAI's error JSON, never a 500 --------------------------------------
@pytest.mark.parametrize("body, param", [
    ({"model": "m"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [""]}, "stop"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}, "response_format"),
    ({"messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}},
     "response_format"),
])
def test_bad_chat_requests_get_400(http, body, param):
    error = assert_openai_error(http.post("/v1/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param), error


def test_other_malformed_requests(http):
    assert_openai_error(http.post("/v1/chat/completions", content=b"{not json", headers={"content-type":
                                                                                      "application/json"}), 400)
    assert_openai_error(http.post("/v1/chat/completions", content=b"\xff\xfe", headers={"content-type":
                                                                                     "application/json"}), 400)
    assert_openai_error(http.post("/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "x"}],'
                                  b' "temperature": NaN}', headers={"content-type": "application/json"}), 400)
    bad_grammar = {"messages": ask("x"), "grammar": "root ::= (("}
    assert "grammar" in assert_openai_error(http.post("/v1/chat/completions", json=bad_grammar), 400)["message"]
    too_long = {"prompt": "word " * 5000, "max_tokens": 2}
    assert_openai_error(http.post("/v1/completions", json=too_long), 400)
    assert_openai_error(http.post("/v1/completions", json={"prompt": "x", "suffix": "y"}), 400)
    assert_openai_error(http.post("/v1/completions", json={"prompt": ""}), 400)
    assert_openai_error(http.post("/detokenize", json={"tokens": [-5]}), 400)
    assert_openai_error(http.post("/detokenize", json={"tokens": [10 ** 17]}), 400)
    assert_openai_error(http.post("/detokenize", json={"tokens": [2 ** 31 - 1]}), 400)  # in int32, not in the vocab
    assert_openai_error(http.post("/v1/embeddings", json={"input": "x"}), 400)  # no embedding model loaded
    assert_openai_error(http.get("/v1/nothing-here"), 404)
    assert_openai_error(http.get("/v1/chat/completions"), 405)
    huge = {"messages": [{"role": "user", "content": "x" * 300_000}]}
    assert_openai_error(http.post("/v1/chat/completions", json=huge), 413)
    chunked = (b"x" * 1000 for _ in range(300))  # no Content-Length: counted while read
    assert_openai_error(http.post("/v1/chat/completions", content=chunked,
                                  headers={"content-type": "application/json"}), 413)
    assert http.get("/health").status_code == 200  # still serving


def test_tools_on_a_model_without_a_native_call_format(http):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    r = http.post("/v1/chat/completions", json={"messages": ask("Weather in Paris?"), "tools": [tool],
                                                 "max_tokens": 24, "temperature": 0})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length", "tool_calls")
    bad = {"messages": ask("x"), "tools": [tool], "tool_choice": {"type": "function", "function": {"name": "nope"}}}
    assert assert_openai_error(http.post("/v1/chat/completions", json=bad), 400)["param"] == "tools"


# -- disconnects, limits, keys, loading, shutdown ----------------------------------------------
def test_disconnect_frees_the_slot_within_a_step(server, http):
    cancelled = metric(http, "requests_cancelled_total")
    body = {"messages": ask("Write a very long story."), "max_tokens": 2000, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as other:
        with other.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            for _ in range(5):
                next(lines)
            assert metric(http, "slots_busy") == 1
        # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 10
    while metric(http, "slots_busy") != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert metric(http, "slots_busy") == 0
    assert metric(http, "requests_cancelled_total") == cancelled + 1
    assert metric(http, "tokens_after_cancel_max") <= 1  # at most the decode step already under way


def test_api_key_queue_bound_and_retry_after(model_path):
    with ServerLauncher(model_path, port=0, server_binary="llamapy", n_parallel=1, n_ctx=1024, n_threads=1,
                        api_key="s3cret", extra_args=["--max-queue", "1", "--log-level", "warning"]) as s:
        auth = {"Authorization": "Bearer s3cret"}
        with httpx.Client(base_url=s.url, timeout=60) as h, ThreadPoolExecutor(1) as pool, \
                openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0) as c:
            assert h.get("/health").status_code == 200  # open without a key
            assert_openai_error(h.get("/v1/models"), 401)
            assert_openai_error(h.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
            assert h.get("/v1/models", headers=auth).status_code == 200
            running = c.chat.completions.create(model="m", messages=ask("Write a long story."), max_tokens=400,
                                                extra_body={"ignore_eos": True}, stream=True)
            next(iter(running))  # it holds the only slot
            waiting = pool.submit(c.chat.completions.create, model="m", messages=ask("Hi"), max_tokens=3)
            for _ in range(1000):  # until it waits in the queue
                if metric(h, "queue_depth", auth) == 1:
                    break
                time.sleep(0.01)
            r = h.post("/v1/chat/completions", headers=auth, json={"messages": ask("x"), "max_tokens": 2})
            error = assert_openai_error(r, 503)
            assert error["code"] == "overloaded" and int(r.headers["Retry-After"]) >= 1
            with pytest.raises(openai.InternalServerError):
                c.chat.completions.create(model="m", messages=ask("x"), max_tokens=2)
            running.close()  # frees the slot: the waiting request runs
            assert waiting.result().choices[0].finish_reason in ("stop", "length")
            assert metric(h, "requests_rejected_total", auth) == 2


def test_health_is_503_while_loading(model_path):
    from starlette.testclient import TestClient

    from llamapy.server import ServerSettings, create_app

    app = create_app(ServerSettings(model_path=model_path))
    client = TestClient(app)  # without its lifespan: the model never loads
    assert client.get("/health").status_code == 503 and client.get("/health").json() == {"status": "loading"}
    assert_openai_error(client.post("/v1/chat/completions", json={"messages": ask("x")}), 503)


def test_graceful_shutdown_finishes_in_flight_requests(model_path):
    s = ServerLauncher(model_path, port=0, server_binary="llamapy", n_parallel=2, n_ctx=1024, n_threads=1,
                       extra_args=["--log-level", "warning", "--shutdown-grace", "600"]).start()
    try:
        body = {"messages": ask("Write a story."), "max_tokens": 24, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=s.url, timeout=60) as h, h.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            next(lines)
            os.kill(s.pid, signal.SIGTERM)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        finish = json.loads(rest[-2][6:])["choices"][0]["finish_reason"]
        assert finish == "length"
        s.process.wait(30)
        assert not s.is_running()
    finally:
        s.stop()


def test_cli_reports_a_missing_model_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "llamapy.cli", "serve", "-m", str(tmp_path / "none.gguf")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "model file not found" in r.stderr

"""llama.cpp's own llama-server as the oracle: built from the pinned tree, run by ServerLauncher,
asked the same questions as llamapy's server. Tokens and greedy answers must be the same."""
from __future__ import annotations

import httpx
import openai
import pytest

from llamapy.server import ServerLauncher

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away,"]
QUESTIONS = ["What is the largest planet?", "Give me a word that rhymes with cat."]


@pytest.fixture(scope="module")
def reference(model_path, llama_server_exe):
    launcher = ServerLauncher(model_path, host="127.0.0.1", port=0, server_binary=llama_server_exe, n_parallel=2,
                              n_ctx=2048, n_threads=1, extra_args=["--no-webui"])
    launcher.start()
    assert launcher.is_running()
    yield launcher
    launcher.stop()
    assert not launcher.is_running()


@pytest.fixture(scope="module")
def ours(model_path):
    with ServerLauncher(model_path, port=0, server_binary="llamapy", n_parallel=2, n_ctx=2048, n_threads=1,
                        extra_args=["--log-level", "warning"]) as s:
        yield s


def clients(*servers: ServerLauncher) -> list[openai.OpenAI]:
    return [openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0) for s in servers]


def test_same_tokens(reference, ours):
    texts = ["Hello, world!", "  leading spaces and <|im_start|> special", "naïve café 日本語 🎉"]
    for text in texts:
        body = {"content": text, "add_special": False}
        theirs = httpx.post(reference.url + "/tokenize", json=body).json()["tokens"]
        assert httpx.post(ours.url + "/tokenize", json=body).json()["tokens"] == theirs, text
        assert httpx.post(ours.url + "/detokenize", json={"tokens": theirs}).json()["content"] == \
            httpx.post(reference.url + "/detokenize", json={"tokens": theirs}).json()["content"]


def test_same_greedy_completions(reference, ours):
    theirs, mine = clients(reference, ours)
    for prompt in PROMPTS:
        a = theirs.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0)
        b = mine.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0)
        assert b.choices[0].text == a.choices[0].text, prompt
        assert b.usage.prompt_tokens == a.usage.prompt_tokens


def test_same_greedy_chat(reference, ours):
    theirs, mine = clients(reference, ours)
    for question in QUESTIONS:
        messages = [{"role": "user", "content": question}]
        a = theirs.chat.completions.create(model="m", messages=messages, max_tokens=24, temperature=0)
        b = mine.chat.completions.create(model="m", messages=messages, max_tokens=24, temperature=0)
        assert b.choices[0].message.content == a.choices[0].message.content, question
        assert b.usage.prompt_tokens == a.usage.prompt_tokens
        assert b.choices[0].finish_reason == a.choices[0].finish_reason

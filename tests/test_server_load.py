"""Load: 32 concurrent streaming clients on 8 slots. Every request completes, no stream carries
another's tokens, and each greedy answer equals the same request served alone."""
from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from llamapy.server import ServerLauncher

TOPICS = ["apples", "rivers", "volcanoes", "the moon", "bicycles", "honey bees", "glaciers", "pianos",
          "lighthouses", "tea", "owls", "deserts", "chess", "coral reefs", "trains", "maple trees",
          "penguins", "thunder", "bread", "comets", "violins", "salt", "wolves", "clocks",
          "tulips", "submarines", "cheese", "rainbows", "kites", "whales", "copper", "snow"]
MAX_TOKENS = 16


def messages(topic: str) -> list[dict]:
    return [{"role": "user", "content": f"Write one sentence about {topic}."}]


@pytest.fixture(scope="module")
def server(model_path):
    with ServerLauncher(model_path, port=0, server_binary="llamapy", n_parallel=8, n_ctx=8 * 512, n_threads=1,
                        extra_args=["--log-level", "warning"]) as s:
        yield s


async def _stream_one(client: openai.AsyncOpenAI, topic: str) -> tuple[str, set[str], str | None]:
    stream = await client.chat.completions.create(model="m", messages=messages(topic), temperature=0,
                                                  max_tokens=MAX_TOKENS, stream=True)
    text, ids, finish = [], set(), None
    async for chunk in stream:
        ids.add(chunk.id)
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(text), ids, finish


async def _watch_slots(url: str, stop: asyncio.Event) -> int:
    """The most slots seen busy at once while the clients run."""
    most = 0
    async with httpx.AsyncClient(base_url=url) as h:
        while not stop.is_set():
            for line in (await h.get("/metrics")).text.splitlines():
                if line.startswith("llamapy_slots_busy "):
                    most = max(most, int(float(line.split()[1])))
            await asyncio.sleep(0.02)
    return most


def test_32_streaming_clients_on_8_slots(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as c:
        alone = {t: c.chat.completions.create(model="m", messages=messages(t), temperature=0,
                                              max_tokens=MAX_TOKENS).choices[0].message.content for t in TOPICS}

    async def run() -> tuple[list, int]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_slots(server.url, stop))
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                                      timeout=300) as client:
            results = await asyncio.gather(*(_stream_one(client, t) for t in TOPICS))
        stop.set()
        return results, await watcher

    results, most_busy = asyncio.run(run())
    assert most_busy == 8  # the slots really were shared
    all_ids = set()
    for topic, (text, ids, finish) in zip(TOPICS, results):
        assert finish in ("stop", "length"), topic  # every request completed
        assert len(ids) == 1 and not ids & all_ids  # one stream, its own id
        all_ids |= ids
        assert text == alone[topic], topic  # the same tokens as alone: nothing of another stream

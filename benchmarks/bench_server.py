"""The server under load: llamapy serve against llama.cpp's llama-server and a one-request-at-a-time server.

Work: C clients at once, each one streaming chat completion of G tokens (greedy, end of
generation ignored so every request generates exactly G), over loopback, with raw SSE
clients (httpx) so the client costs the same for every server. Servers, in one run, with the
same model, threads, context per slot and slots:
  * llama-server (built from the pinned tree) --parallel S;
  * llamapy serve --parallel S;
  * llamapy serve --parallel 1 (requests served one after the other: the serialised design).
Reported per server: aggregate generated tokens per second (all tokens / wall time from the
first request to the last token), median and p90 time to first token, and the ratios.

    python benchmarks/bench_server.py [--clients 32] [--tokens 128] [--parallel 8] [--threads 2] [--rounds 1]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llamapy import build_info  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402
from llamapy.server import ServerLauncher  # noqa: E402
from tools.cmake_build import build_server  # noqa: E402

TOPICS = ["the sea", "mountains", "a city at night", "an old library", "a train journey", "winter", "a garden",
          "the desert", "a storm", "a lighthouse", "a market", "the forest"]


async def one_request(client: httpx.AsyncClient, i: int, tokens: int, t0: float) -> tuple[float, int, float]:
    """(time to first token, tokens received, end time) of one streaming chat completion."""
    body = {"model": "m", "messages": [{"role": "user", "content": f"Client {i}: write a long story about "
                                                                   f"{TOPICS[i % len(TOPICS)]}."}],
            "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    start = time.perf_counter()
    ttft, n = None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                n += 1
                if ttft is None:
                    ttft = time.perf_counter() - start
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
    return ttft or 0.0, n, time.perf_counter() - t0


async def load(url: str, clients: int, tokens: int) -> dict:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
        await one_request(client, 0, 4, time.perf_counter())  # warm-up
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one_request(client, i, tokens, t0) for i in range(clients)))
    ttfts = sorted(r[0] for r in results)
    total = sum(r[1] for r in results)
    wall = max(r[2] for r in results)
    return {"tokens": total, "wall_s": wall, "tokens_per_s": total / wall, "ttft_median_s": statistics.median(ttfts),
            "ttft_p90_s": ttfts[int(0.9 * (len(ttfts) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    model = args.model or pull()
    exe = build_server(Path(build_info()["llama_cpp"]["build_dir"]))
    per_slot = 512
    servers = {
        "llama-server": dict(server_binary=exe, n_parallel=args.parallel, n_ctx=per_slot * args.parallel,
                             extra_args=["--no-webui", "-b", "512"]),
        "llamapy": dict(server_binary="llamapy", n_parallel=args.parallel, n_ctx=per_slot * args.parallel,
                        extra_args=["--log-level", "warning", "-b", "512"]),
        "llamapy --parallel 1": dict(server_binary="llamapy", n_parallel=1, n_ctx=per_slot,
                                     extra_args=["--log-level", "warning", "-b", "512"]),
    }
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, options in servers.items():
            with ServerLauncher(model, port=0, n_threads=args.threads, **options) as server:
                runs[name].append(asyncio.run(load(server.url, args.clients, args.tokens)))
            print(f"{name}: {json.dumps(runs[name][-1])}", flush=True)
    best = {name: max(rs, key=lambda r: r["tokens_per_s"]) for name, rs in runs.items()}
    print(f"{args.clients} clients x {args.tokens} tokens, --parallel {args.parallel}, {args.threads} threads, "
          f"{model.name}, best of {args.rounds}")
    print(f"{'server':24} {'tokens/s':>9} {'wall s':>8} {'TTFT median s':>14} {'TTFT p90 s':>11}")
    for name, r in best.items():
        print(f"{name:24} {r['tokens_per_s']:9.1f} {r['wall_s']:8.2f} {r['ttft_median_s']:14.3f} "
              f"{r['ttft_p90_s']:11.3f}")
    ours, ref, serial = best["llamapy"], best["llama-server"], best["llamapy --parallel 1"]
    print(f"llamapy / llama-server: throughput {ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x (goal >= 0.9), "
          f"median TTFT {ours['ttft_median_s'] / ref['ttft_median_s']:.2f}x (goal <= 1.2)")
    print(f"llamapy / one at a time: throughput {ours['tokens_per_s'] / serial['tokens_per_s']:.2f}x (goal >= 1.7)")


if __name__ == "__main__":
    main()

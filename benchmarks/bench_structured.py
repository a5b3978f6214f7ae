"""Structured output speed: generation under a nested JSON schema against free generation
of the same length, with each grammar backend, in one run.

For each model (the test model, 49k-token vocabulary; Qwen2.5-Coder-0.5B, 151k):
  * one LLM, interleaved rounds: a constrained chat reply under a 12-field nested schema
    (greedy, and sampled at temperature 0.8) with each backend, then a free reply of the
    same number of tokens (ignore_eos); tokens/s and the ratio constrained / free;
  * past the end: the same schema with ignore_eos and 64 more tokens than the object
    needs; the mean time of a step after the object is complete against a free step;
  * 16 parallel sequences in BatchGenerator (temperature 0.8): constrained vs the same
    number of free tokens per sequence; total tokens/s and the ratio.

    python benchmarks/bench_structured.py [--rounds 3] [--threads 2] [--models smollm2-135m-instruct ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llamapy import LLM, BatchGenerator, BatchRequest  # noqa: E402
from llamapy.generation.chat_template import ChatTemplate  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402

SCHEMA = {  # 12 fields, two levels of nesting, an array of objects, enums, numbers, booleans
    "type": "object",
    "properties": {
        "order_id": {"type": "integer", "minimum": 0},
        "customer": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 24}, "email": {"type": "string", "maxLength": 32},
            "vip": {"type": "boolean"}}, "required": ["name", "email", "vip"]},
        "items": {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "object", "properties": {
            "sku": {"type": "string", "maxLength": 10}, "quantity": {"type": "integer", "minimum": 1},
            "price": {"type": "number"}}, "required": ["sku", "quantity", "price"]}},
        "status": {"enum": ["new", "paid", "shipped", "delivered"]},
        "express": {"type": "boolean"},
        "note": {"type": "string", "maxLength": 40},
    },
    "required": ["order_id", "customer", "items", "status", "express", "note"],
}
MESSAGES = [{"role": "system", "content": "You answer with JSON only."},
            {"role": "user", "content": "Write an example order for an online shop: the customer, two or three "
                                        "items with prices, the status, and a short note."}]
BACKENDS = ("llguidance", "llama")


def constrained_vs_free(llm: LLM, backend: str, temperature: float, seed: int) -> tuple[float, float, int]:
    """(constrained tokens/s, free tokens/s of the same length, tokens)."""
    text, st = llm.chat_with_stats(MESSAGES, json_schema=SCHEMA, grammar_backend=backend, temperature=temperature,
                                   seed=seed, max_tokens=400)
    json.loads(text)
    n = st.completion_tokens
    _, free = llm.chat_with_stats(MESSAGES, temperature=temperature, seed=seed, max_tokens=n, ignore_eos=True)
    assert free.completion_tokens == n
    return st.tokens_per_second, free.tokens_per_second, n


def past_the_end(llm: LLM, backend: str) -> tuple[float, float]:
    """(ms per step once the object is complete, ms per free step), greedy, from the time that
    64 more tokens add to a generation of the object's length."""
    _, st = llm.chat_with_stats(MESSAGES, json_schema=SCHEMA, grammar_backend=backend, temperature=0, max_tokens=400)
    n = st.completion_tokens

    def seconds(extra: int, **settings) -> float:
        _, s = llm.chat_with_stats(MESSAGES, temperature=0, max_tokens=n + extra, ignore_eos=True, **settings)
        assert s.completion_tokens == n + extra
        return s.generation_seconds

    after = seconds(64, json_schema=SCHEMA, grammar_backend=backend) - seconds(0, json_schema=SCHEMA,
                                                                                grammar_backend=backend)
    free = seconds(64) - seconds(0)
    return after / 64 * 1e3, free / 64 * 1e3


def batched(gen: BatchGenerator, backend: str, n_seq: int) -> tuple[float, float]:
    """(constrained total tokens/s, free total tokens/s with the same tokens per sequence)."""
    text = ChatTemplate.for_model(gen.model).render(MESSAGES, add_generation_prompt=True)
    reqs = [BatchRequest(i, text, seed=i, json_schema=SCHEMA) for i in range(n_seq)]
    t0 = time.perf_counter()
    out = gen.generate_responses(reqs, grammar_backend=backend)
    t_con = time.perf_counter() - t0
    counts = [r.tokens_generated for r in out]
    assert all(r.finish_reason == "stop" for r in out), [r.finish_reason for r in out]
    free_reqs = [BatchRequest(i, text, seed=i, max_tokens=c) for i, c in enumerate(counts)]
    t0 = time.perf_counter()
    free = gen.generate_responses(free_reqs, ignore_eos=True)
    t_free = time.perf_counter() - t0
    assert [r.tokens_generated for r in free] == counts
    return sum(counts) / t_con, sum(counts) / t_free


def bench_model(name: str, threads: int, rounds: int, n_seq: int) -> None:
    path = pull(name)
    print(f"\n== {path.name} ({threads} threads, {rounds} rounds)", flush=True)
    rows: dict[str, list[float]] = {}
    with LLM(path, n_threads=threads, n_ctx=4096, parse_special=True) as llm:
        print(f"vocabulary: {llm.vocab.n_tokens} tokens", flush=True)
        for b in BACKENDS:  # warm up: grammar compilation, tokenizer build
            llm.chat(MESSAGES, json_schema=SCHEMA, grammar_backend=b, temperature=0, max_tokens=8)
        for r in range(rounds):
            for b in BACKENDS:
                for mode, temp in (("greedy", 0.0), ("t=0.8", 0.8)):
                    con, free, n = constrained_vs_free(llm, b, temp, seed=r + 1)
                    rows.setdefault(f"{b} {mode}", []).append(con / free)
                    print(f"round {r + 1} {b:10s} {mode:6s}: {n:3d} tokens, constrained {con:6.1f} t/s, "
                          f"free {free:6.1f} t/s, ratio {con / free:.3f}", flush=True)
                after, free_step = past_the_end(llm, b)
                rows.setdefault(f"{b} past-end", []).append(after / free_step)
                print(f"round {r + 1} {b:10s} past the end: {after:.2f} ms/step vs free {free_step:.2f} ms/step "
                      f"(ratio {after / free_step:.3f})", flush=True)
    with BatchGenerator(path, n_seq_max=n_seq, n_ctx=n_seq * 768, n_batch=512, n_threads=threads,
                        temperature=0.8, parse_special=True) as gen:
        gen.generate_batch([BatchRequest(0, "Hello", max_tokens=4)])
        for r in range(rounds):
            for b in BACKENDS:
                con, free = batched(gen, b, n_seq)
                rows.setdefault(f"{b} batch{n_seq}", []).append(con / free)
                print(f"round {r + 1} {b:10s} {n_seq} sequences: constrained {con:6.1f} t/s, free {free:6.1f} t/s, "
                      f"ratio {con / free:.3f}", flush=True)
    print(f"medians ({path.name}): constrained / free")
    for k, v in rows.items():
        print(f"  {k:24s} {statistics.median(v):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sequences", type=int, default=16)
    args = ap.parse_args()
    for name in args.models:
        bench_model(name, args.threads, args.rounds, args.sequences)


if __name__ == "__main__":
    main()

"""Aggregate throughput of BatchGenerator against llama-batched-bench and a sequential loop.

Work: N prompts of P tokens, G generated tokens each (greedy, end-of-generation ignored so
every request generates exactly G). Measured in one run, rounds interleaved:
  * llama-batched-bench -npp P -ntg G -npl N (same library, same threads, same n_ctx):
    its total time for the whole job;
  * BatchGenerator(n_seq_max=N).generate_responses(prompts): wall time;
  * the sequential LLM loop: one prompt after the other.
Reported: generated tokens per second of wall time (prompt processing included for all
three) and the ratios.

    python benchmarks/bench_batching.py [--n 16] [--pp 32] [--tg 128] [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llamapy import LLM, BatchGenerator, build_info  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402
from tools.cmake_build import build_tools  # noqa: E402


def batched_bench(exe: Path, model: Path, n: int, pp: int, tg: int, n_ctx: int, threads: int) -> float:
    """Total seconds llama-batched-bench takes for n parallel sequences."""
    out = subprocess.run([str(exe), "-m", str(model), "-c", str(n_ctx), "-b", "2048", "-ub", "512", "-npp", str(pp),
                          "-ntg", str(tg), "-npl", str(n), "-t", str(threads), "--output-format", "jsonl"],
                         capture_output=True, text=True, check=True).stdout
    row = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    return float(row["t"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--pp", type=int, default=32)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model_path = args.model or pull()
    exe = build_tools(Path(build_info()["llama_cpp"]["build_dir"]), ["llama-batched-bench"]) / "llama-batched-bench"
    n_ctx = 256 * args.n * -(-(args.pp + args.tg + 1) // 256)
    gen = BatchGenerator(model_path, n_seq_max=args.n, n_ctx=n_ctx // args.n, n_batch=2048, n_threads=args.threads,
                         temperature=0, max_tokens=args.tg, ignore_eos=True)
    llm = LLM(model_path, temperature=0, max_tokens=args.tg, ignore_eos=True, n_threads=args.threads, n_ctx=1024)
    vocab = gen.vocab
    prompts = []
    for i in range(args.n):
        ids = [(i * 131 + k * 7919) % 40000 + 100 for k in range(args.pp)]
        prompts.append(vocab.detokenize(vocab.tokenize(vocab.detokenize(ids), add_special=False)[: args.pp]))
    gen.generate_responses(prompts[:2])  # warm-up
    total_generated = args.n * args.tg
    rows: dict[str, list[float]] = {"bench": [], "batch": [], "sequential": []}
    for r in range(args.rounds):
        rows["bench"].append(total_generated / batched_bench(exe, model_path, args.n, args.pp, args.tg, n_ctx,
                                                             args.threads))
        t0 = time.perf_counter()
        responses = gen.generate_responses(prompts)
        rows["batch"].append(total_generated / (time.perf_counter() - t0))
        assert sum(x.tokens_generated for x in responses) == total_generated, [x.tokens_generated for x in responses]
        t0 = time.perf_counter()
        for p in prompts:
            llm._cached.clear()  # like the batch: no prompt reused from an earlier round
            llm.ctx and llm.ctx.memory.clear()
            llm(p)
        rows["sequential"].append(total_generated / (time.perf_counter() - t0))
        print(f"round {r + 1}: llama-batched-bench {rows['bench'][-1]:6.1f} t/s | BatchGenerator "
              f"{rows['batch'][-1]:6.1f} t/s | sequential LLM {rows['sequential'][-1]:6.1f} t/s", flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\n{args.n} prompts x {args.pp} tokens -> {args.tg} tokens each, {args.threads} threads, n_ctx {n_ctx}; "
          f"generated tokens per second of wall time (medians of {args.rounds})")
    print(f"  llama-batched-bench {med['bench']:.1f}, BatchGenerator {med['batch']:.1f}, sequential {med['sequential']:.1f}")
    print(f"  BatchGenerator / llama-batched-bench = {med['batch'] / med['bench']:.3f}")
    print(f"  BatchGenerator / sequential LLM      = {med['batch'] / med['sequential']:.3f}")


if __name__ == "__main__":
    main()

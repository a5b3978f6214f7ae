"""Core-layer speed against llama.cpp's own llama-bench, on the same library and model.

Measures, interleaved in one run (rounds alternate between the two so machine noise
hits both alike):
  * tg: greedy generation of N tokens through the Python loop (sample + decode per token)
    vs llama-bench's tg N;
  * pp: one decode of a P-token prompt vs llama-bench's pp P.
Prints tokens/s for both and the ratio llamapy / llama-bench (1.0 = same speed).

    python benchmarks/bench_core.py [--model PATH] [--threads 2] [--rounds 5] [--tg 128] [--pp 512]
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

from llamapy import Batch, Context, Model, SamplerChain, build_info  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402
from tools.cmake_build import build_tools  # noqa: E402


def llama_bench(exe: Path, model: Path, threads: int, pp: int, tg: int) -> tuple[float, float]:
    """(pp tokens/s, tg tokens/s) from one llama-bench run (one repetition each)."""
    out = subprocess.run([str(exe), "-m", str(model), "-t", str(threads), "-p", str(pp), "-n", str(tg),
                          "-r", "1", "-o", "json"], capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    pp_ts = next(r["avg_ts"] for r in rows if r["n_prompt"] == pp and r["n_gen"] == 0)
    tg_ts = next(r["avg_ts"] for r in rows if r["n_gen"] == tg and r["n_prompt"] == 0)
    return pp_ts, tg_ts


def ours_tg(model: Model, threads: int, n: int) -> float:
    """Greedy generation through the Python loop, tokens/s."""
    with Context(model, n_ctx=n + 16, n_batch=512, n_threads=threads) as ctx:
        sampler = SamplerChain.greedy()
        ctx.decode(Batch.from_tokens([model.vocab.bos or 1], pos0=0))
        one = Batch(1)
        tok = sampler.sample(ctx, -1)
        t0 = time.perf_counter()
        for pos in range(1, n + 1):
            one.clear()
            one.add(tok, pos, 0, True)
            ctx.decode(one)
            tok = sampler.sample(ctx, -1)
        return n / (time.perf_counter() - t0)


def ours_pp(model: Model, threads: int, n: int) -> float:
    """One decode of an n-token prompt (logits for the last token), tokens/s."""
    tokens = [(i * 7919) % 40000 + 100 for i in range(n)]
    with Context(model, n_ctx=n, n_batch=max(n, 512), n_ubatch=512, n_threads=threads) as ctx:
        batch = Batch.from_tokens(tokens, pos0=0)
        ctx.decode(batch)  # warm-up
        ctx.memory.clear()
        t0 = time.perf_counter()
        ctx.decode(batch)
        ctx.logits()  # waits for the result
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--pp", type=int, default=512)
    args = ap.parse_args()
    model_path = args.model or pull()
    bench = build_tools(Path(build_info()["llama_cpp"]["build_dir"]), ["llama-bench"]) / "llama-bench"
    model = Model.from_file(model_path)
    ours_tg(model, args.threads, 16)  # warm-up
    rows: dict[str, list[float]] = {"bench_pp": [], "bench_tg": [], "ours_pp": [], "ours_tg": []}
    for r in range(args.rounds):
        pp, tg = llama_bench(bench, model_path, args.threads, args.pp, args.tg)
        rows["bench_pp"].append(pp)
        rows["bench_tg"].append(tg)
        rows["ours_tg"].append(ours_tg(model, args.threads, args.tg))
        rows["ours_pp"].append(ours_pp(model, args.threads, args.pp))
        print(f"round {r + 1}: llama-bench pp{args.pp} {pp:7.1f} tg{args.tg} {tg:6.1f} | "
              f"llamapy pp {rows['ours_pp'][-1]:7.1f} tg {rows['ours_tg'][-1]:6.1f}", flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nmedian tokens/s over {args.rounds} interleaved rounds, {args.threads} threads, {model_path.name}")
    print(f"  tg{args.tg}: llama-bench {med['bench_tg']:.1f}  llamapy {med['ours_tg']:.1f}  "
          f"ratio {med['ours_tg'] / med['bench_tg']:.3f}")
    print(f"  pp{args.pp}: llama-bench {med['bench_pp']:.1f}  llamapy {med['ours_pp']:.1f}  "
          f"ratio {med['ours_pp'] / med['bench_pp']:.3f}")


if __name__ == "__main__":
    main()

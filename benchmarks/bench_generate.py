"""LLM streaming speed and time to first token, against llama-bench on the same library.

Interleaved rounds in one run:
  * streaming: ``for chunk in llm.stream(prompt, temperature=0, max_tokens=N)`` tokens/s
    (completion tokens / generation time) vs llama-bench tg N;
  * time to first token for a P-token prompt (prefill + first sample, nothing cached) vs
    the time llama-bench's pp P takes (P / its tokens/s).

    python benchmarks/bench_generate.py [--rounds 5] [--threads 2] [--tg 128] [--pp 512]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_core import llama_bench  # noqa: E402
from llamapy import LLM, build_info  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402
from tools.cmake_build import build_tools  # noqa: E402


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
    llm = LLM(model_path, temperature=0, n_threads=args.threads, n_ctx=2048, n_batch=512)
    vocab = llm.vocab
    words = [vocab.token_to_piece((i * 7919) % 40000 + 100) for i in range(args.pp * 2)]
    long_prompt = "".join(words)
    # trim to exactly pp tokens
    long_prompt = vocab.detokenize(vocab.tokenize(long_prompt, add_special=False)[: args.pp])
    llm("Warm up", max_tokens=8)
    rows: dict[str, list[float]] = {"bench_tg": [], "bench_pp_s": [], "ours_tg": [], "ours_ttft": []}
    for r in range(args.rounds):
        pp_ts, tg_ts = llama_bench(bench, model_path, args.threads, args.pp, args.tg)
        rows["bench_tg"].append(tg_ts)
        rows["bench_pp_s"].append(args.pp / pp_ts)
        n = 0
        for _ in llm.stream("The", max_tokens=args.tg, stop_sequences=(), add_bos=False):
            n += 1
        stream_stats = llm.last_stats
        rows["ours_tg"].append(stream_stats.tokens_per_second)
        llm._cached.clear()  # nothing cached: the whole prompt is decoded
        llm.ctx.memory.clear()
        _, stats = llm.generate_with_stats(long_prompt, max_tokens=1)
        assert stats.prompt_tokens_decoded >= args.pp - 2, stats
        rows["ours_ttft"].append(stats.time_to_first_token)
        print(f"round {r + 1}: llama-bench tg {tg_ts:6.1f} t/s, pp{args.pp} {rows['bench_pp_s'][-1] * 1e3:6.1f} ms | "
              f"llamapy stream {rows['ours_tg'][-1]:6.1f} t/s ({stream_stats.completion_tokens} tok), "
              f"ttft {rows['ours_ttft'][-1] * 1e3:6.1f} ms ({stats.prompt_tokens} prompt tokens)", flush=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nmedians over {args.rounds} interleaved rounds, {args.threads} threads, {model_path.name}")
    print(f"  streaming: llama-bench tg{args.tg} {med['bench_tg']:.1f} t/s, llamapy {med['ours_tg']:.1f} t/s, "
          f"ratio {med['ours_tg'] / med['bench_tg']:.3f}")
    print(f"  time to first token ({args.pp}-token prompt): llama-bench pp {med['bench_pp_s'] * 1e3:.1f} ms, "
          f"llamapy {med['ours_ttft'] * 1e3:.1f} ms, ratio {med['ours_ttft'] / med['bench_pp_s']:.3f}")


if __name__ == "__main__":
    main()

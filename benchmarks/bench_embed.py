"""Embedding throughput: Embedder.embed against llama.cpp's llama-embedding and a one-text-per-decode loop.

Work: N sentences of 4..40 words (deterministic), one GGUF (default: the catalog's
all-MiniLM-L6-v2 f16), the same batch size and threads for all three. Measured in one run, in
steps of --slice texts with the three methods alternating, so a busy machine slows them alike:
  * llama-embedding -f FILE -b B -c B: tokens / the time from its first decode to its
    perf report, from its log (model load and tokenization are not counted, which favours it);
  * Embedder(n_batch=B).embed_with_info(texts): tokens / wall time of the call
    (tokenization, packing, decodes, pooling, normalisation);
  * a loop of Embedder.embed([text]), one text per decode, on the first --loop-per-slice texts
    of each step.
Reported: tokens per second over the whole run and the median of the per-step ratios.

    python benchmarks/bench_embed.py [--n 2000] [--batch 512] [--threads 2] [--slice 250]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llamapy import Embedder, build_info  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402
from tools.cmake_build import build_tools  # noqa: E402

WORDS = ("the a of to and in is it you that he was for on are with as his they be at one have this from or had "
         "by word but what some we can out other were all there when up use your how said an each she which do "
         "their time if will way about many then them write would like so these her long make thing see him two "
         "has look more day could go come did number sound no most people my over know water than call first who "
         "may down side been now find any new work part take get place made live where after back little only "
         "round man year came show every good me give our under name very through just form sentence great think "
         "say help low line differ turn cause much mean before move right boy old too same tell does set three "
         "want air well also play small end put home read hand port large spell add even land here must big high "
         "such follow act why ask men change went light kind off need house picture try us again animal point "
         "mother world near build self earth father embedding vector retrieval search model").split()


def sentences(n: int) -> list[str]:
    rng = np.random.default_rng(2000)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 41)))).capitalize() + "." for _ in range(n)]


def _stamp(line: str) -> float:
    """Seconds of a llama.cpp log timestamp ("M.SS.mmm.uuu" at the start of the line)."""
    m, sec, ms, us = (int(x) for x in line.split()[0].split("."))
    return m * 60 + sec + ms / 1e3 + us / 1e6


def llama_embedding(exe: Path, model: Path, file: Path, n_batch: int, threads: int) -> tuple[int, float]:
    """(tokens, seconds) of llama-embedding's decodes: from its first decode to its perf report (its
    perf counters read 0 ms for this path, so its log timestamps are used; raw output, the cheapest)."""
    proc = subprocess.run([str(exe), "-m", str(model), "-f", str(file), "-b", str(n_batch), "-c", str(n_batch),
                           "-t", str(threads), "--embd-output-format", "raw", "-lv", "4"],
                          capture_output=True, text=True, check=True)
    lines = proc.stderr.splitlines()
    decodes = [ln for ln in lines if " batch_decode: n_tokens = " in ln]
    report = [ln for ln in lines if "llama_perf_context_print:" in ln and "load time" in ln]
    if not decodes or not report:
        raise RuntimeError("llama-embedding's log has no decode or perf lines:\n" + proc.stderr[-2000:])
    n_tokens = sum(int(re.search(r"n_tokens = (\d+)", ln).group(1)) for ln in decodes)
    return n_tokens, _stamp(report[0]) - _stamp(decodes[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--slice", type=int, default=250, help="texts per measured step (the methods alternate)")
    ap.add_argument("--loop-per-slice", type=int, default=25, help="texts of each step for the one-per-decode loop")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    model = args.model or pull("all-minilm-l6-v2")
    exe = build_tools(Path(build_info()["llama_cpp"]["build_dir"]), ["llama-embedding"]) / "llama-embedding"
    texts = sentences(args.n)
    names = ("llama-embedding", "Embedder.embed", "one per decode")
    tokens = dict.fromkeys(names, 0)
    secs = dict.fromkeys(names, 0.0)
    ratios: dict[str, list[float]] = {"vs llama-embedding": [], "vs one per decode": []}
    with tempfile.TemporaryDirectory() as tmp, Embedder(model, n_batch=args.batch, n_threads=args.threads) as emb:
        file = Path(tmp) / "texts.txt"
        emb.embed(texts[:64])  # warm-up
        for _ in range(args.rounds):
            for k in range(0, args.n, args.slice):
                part = texts[k:k + args.slice]
                file.write_text("\n".join(part))
                step = {}
                n_tok, t = llama_embedding(exe, model, file, args.batch, args.threads)
                step["llama-embedding"] = (n_tok, t)
                t0 = time.perf_counter()
                info = emb.embed_with_info(part)
                step["Embedder.embed"] = (int(info.n_tokens.sum()), time.perf_counter() - t0)
                assert n_tok == step["Embedder.embed"][0], (n_tok, step["Embedder.embed"][0])
                t0 = time.perf_counter()
                for text in part[:args.loop_per_slice]:
                    emb.embed([text])
                step["one per decode"] = (int(info.n_tokens[:args.loop_per_slice].sum()), time.perf_counter() - t0)
                rate = {m: n / t for m, (n, t) in step.items()}
                for m, (n, t) in step.items():
                    tokens[m] += n
                    secs[m] += t
                ratios["vs llama-embedding"].append(rate["Embedder.embed"] / rate["llama-embedding"])
                ratios["vs one per decode"].append(rate["Embedder.embed"] / rate["one per decode"])
                print(f"texts {k:5d}+: " + " | ".join(f"{m} {r:8.1f} t/s" for m, r in rate.items()), flush=True)
    total = {m: tokens[m] / secs[m] for m in names}
    print(f"\n{args.n} sentences x {args.rounds} round(s), {model.name}, batch {args.batch}, {args.threads} threads; "
          f"steps of {args.slice} texts, methods alternating:")
    for m in names:
        print(f"  {m:<16} {total[m]:8.1f} tokens/s ({tokens[m]} tokens in {secs[m]:.1f} s)")
    for name, goal in (("vs llama-embedding", 0.95), ("vs one per decode", 3)):
        print(f"  Embedder.embed {name}: {statistics.median(ratios[name]):.3f} median of steps "
              f"(min {min(ratios[name]):.3f}, max {max(ratios[name]):.3f}; goal >= {goal})")


if __name__ == "__main__":
    main()

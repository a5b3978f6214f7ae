"""Speculative decoding against plain decoding and against llama.cpp's ``llama-speculative-simple``.

Interleaved rounds in one run, greedy, same prompt tokens and thread count for everybody:
  * n-gram speculation on an input-grounded task (Qwen2.5-Coder 0.5B renames a function in a
    20-line code block and prints the whole code): llamapy plain, llamapy ``speculative="ngram"``,
    llama.cpp ``--spec-type ngram-simple``;
  * draft-model speculation (Qwen2.5-Coder 1.5B target, 0.5B draft): llamapy plain, llamapy
    ``draft_model=``, llama.cpp ``--spec-type draft-simple``.
Speeds are generation tokens/s (prompt processing excluded, as llama.cpp reports "decoded").

    python benchmarks/bench_speculative.py [--rounds 2] [--threads 2] [--n 256] [--n-draft 8]
        [--only ngram|draft] [--ngl 0]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llamapy import LLM, build_info  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402
from tools.cmake_build import build_tools  # noqa: E402

CODE = '''import statistics


def compute_stats(values):
    """Mean, median and spread of a list of numbers."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    n = len(ordered)
    mean = sum(ordered) / n
    median = statistics.median(ordered)
    spread = ordered[-1] - ordered[0]
    variance = sum((x - mean) ** 2 for x in ordered) / n
    return {
        "mean": mean,
        "median": median,
        "spread": spread,
        "stdev": variance ** 0.5,
    }


print(compute_stats([3, 1, 4, 1, 5, 9, 2, 6]))
'''
RENAME = f"Rename the function compute_stats to summarize_numbers and print the whole code.\n\n```python\n{CODE}```"
WRITE = "Write a Python function that checks whether a string is a palindrome, with a docstring and tests."


def chat_prompt(llm: LLM, text: str) -> str:
    return llm.chat_prompt([{"role": "user", "content": text}])


def llama_cpp(exe: Path, model: Path, prompt: str, n: int, threads: int, ngl: int, spec: list[str]) -> dict:
    """Run llama-speculative-simple once; its decode speed and draft statistics."""
    cmd = [str(exe), "-m", str(model), "-p", prompt, "-n", str(n), "-t", str(threads), "-tb", str(threads),
           "-c", "4096", "--temp", "0", "--top-k", "1", "--seed", "1", "-ngl", str(ngl), *spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"llama-speculative-simple failed:\n{log[-3000:]}")
    speed = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.]+) t/s", log)
    drafted = re.search(r"n_drafted\s*=\s*(\d+)", log)
    accepted = re.search(r"n_accept\s*=\s*(\d+)", log)
    if not (speed and drafted and accepted):
        raise RuntimeError(f"could not read llama-speculative-simple's statistics:\n{log[-3000:]}")
    return {"tps": float(speed.group(3)), "tokens": int(speed.group(1)), "drafted": int(drafted.group(1)),
            "accepted": int(accepted.group(1))}


def ours(llm: LLM, prompt: str, n: int) -> dict:
    llm._cached.clear()  # nothing cached: every round decodes the whole prompt
    if llm.ctx is not None:
        llm.ctx.memory.clear()
    _, st = llm.generate_with_stats(prompt, max_tokens=n, parse_special=True)
    return {"tps": st.tokens_per_second, "tokens": st.completion_tokens, "drafted": st.drafted,
            "accepted": st.accepted}


def rate(rows: list[dict]) -> str:
    d = sum(r["drafted"] for r in rows)
    a = sum(r["accepted"] for r in rows)
    return f"{100 * a / d:5.1f}% of {d} accepted" if d else "no drafts"


def scenario(name: str, rounds: int, runs: dict) -> dict[str, float]:
    results: dict[str, list[dict]] = {k: [] for k in runs}
    for r in range(rounds):
        line = []
        for key, fn in runs.items():
            res = fn()
            results[key].append(res)
            line.append(f"{key} {res['tps']:6.1f} t/s ({res['tokens']} tok)")
        print(f"[{name}] round {r + 1}: " + " | ".join(line), flush=True)
    med = {k: statistics.median(x["tps"] for x in v) for k, v in results.items()}
    print(f"[{name}] medians over {rounds} rounds:")
    for k, v in results.items():
        print(f"  {k:24s} {med[k]:6.1f} t/s   {rate(v)}")
    return med


def ceiling(llm: LLM, k: int) -> None:
    """What speculation could give at best on this machine, from the draft policy's own timings:
    a plain step costs t1 and each drafted token c more, so k drafted tokens accepted whole make
    k + 1 tokens for t1 + k c instead of (k + 1) t1 (the estimates decay: they describe the last
    steps of the last run, on a busy machine they move from run to run)."""
    policy = llm._spec.policy
    t1, c = policy.t_plain, policy.t_per_draft
    if t1 is None or c is None:
        return
    print(f"  policy timings: plain step {1000 * t1:.1f} ms, +{1000 * c:.1f} ms per drafted token "
          f"({c / t1:.2f} of a step): at most {(k + 1) * t1 / (t1 + k * c):.2f}x with every draft of {k} "
          f"accepted whole\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=256, help="tokens to generate")
    ap.add_argument("--n-draft", type=int, default=8, help="draft-model speculation: most tokens per draft")
    ap.add_argument("--n-draft-ngram", type=int, default=16, help="n-gram speculation: most tokens per draft")
    ap.add_argument("--only", choices=["ngram", "draft"])
    ap.add_argument("--ngl", type=int, default=0, help="layers to offload to a GPU (all models)")
    args = ap.parse_args()
    exe = build_tools(Path(build_info()["llama_cpp"]["build_dir"]), ["llama-speculative-simple"])
    exe = exe / "llama-speculative-simple"
    small = pull("qwen2.5-coder-0.5b-instruct")
    common = dict(temperature=0, n_threads=args.threads, n_ctx=4096, n_gpu_layers=args.ngl)

    if args.only in (None, "ngram"):
        plain = LLM(small, **common)
        spec = LLM(small, speculative="ngram", n_draft=args.n_draft_ngram, **common)
        prompt = chat_prompt(plain, RENAME)
        for llm in (plain, spec):
            ours(llm, prompt, 16)  # warm up
        med = scenario("n-gram, 0.5B rename task", args.rounds, {
            "llamapy plain": lambda: ours(plain, prompt, args.n),
            "llamapy ngram": lambda: ours(spec, prompt, args.n),
            "llama.cpp ngram-simple": lambda: llama_cpp(exe, small, prompt, args.n, args.threads, args.ngl,
                                                        ["--spec-type", "ngram-simple"]),
        })
        print(f"  ngram vs plain {med['llamapy ngram'] / med['llamapy plain']:.2f}x (goal >= 1.5), "
              f"vs llama.cpp {med['llamapy ngram'] / med['llama.cpp ngram-simple']:.2f}x (goal >= 0.95)")
        ceiling(spec, args.n_draft_ngram)
        plain.close()
        spec.close()

    if args.only in (None, "draft"):
        big = pull("qwen2.5-coder-1.5b-instruct")
        plain = LLM(big, **common)
        spec = LLM(big, draft_model=small, n_draft=args.n_draft, **common)
        prompt = chat_prompt(plain, WRITE)
        for llm in (plain, spec):
            ours(llm, prompt, 16)
        n = min(args.n, 128)
        med = scenario("draft model, 1.5B + 0.5B", args.rounds, {
            "llamapy plain": lambda: ours(plain, prompt, n),
            "llamapy draft": lambda: ours(spec, prompt, n),
            "llama.cpp draft-simple": lambda: llama_cpp(
                exe, big, prompt, n, args.threads, args.ngl,
                ["--spec-type", "draft-simple", "-md", str(small), "--spec-draft-n-max", str(args.n_draft),
                 "-ngld", str(args.ngl)]),
        })
        print(f"  draft vs plain {med['llamapy draft'] / med['llamapy plain']:.2f}x (goal >= 0.9 on a CPU, > 1 on "
              f"a GPU), vs llama.cpp {med['llamapy draft'] / med['llama.cpp draft-simple']:.2f}x (goal >= 0.95)")


if __name__ == "__main__":
    main()

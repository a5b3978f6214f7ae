"""Tool-call acceptance on Qwen2.5-Coder-0.5B, and the cost of an armed lazy grammar.

  * 20 prompts that need a weather tool x 5 seeds, temperature 0.7: share of replies with a
    valid call (right tool, schema-valid arguments) under tool_choice "auto" and "required";
  * 10 prompts that do not need it: share of replies with no call under "auto";
  * generation speed (tokens/s) of a free-text reply with the lazy tool grammar armed but not
    triggered vs the same prompt with no grammar (ignore_eos, fixed length, interleaved rounds).

    python benchmarks/bench_tool_calls.py [--seeds 5] [--rounds 5] [--tokens 128] [--threads 2]
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

from llamapy import LLM  # noqa: E402
from llamapy.agent.chat import prepare  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "the city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
NEEDS_TOOL = [
    "What's the weather like in Paris right now?", "Is it raining in London?",
    "How hot is it in Tokyo today, in fahrenheit?", "Tell me the current temperature in Berlin.",
    "Should I take an umbrella in Seattle today?", "Weather report for Madrid, please.",
    "Is it sunny in Sydney?", "What's the forecast for New York City right now?",
    "Do I need a coat in Moscow today?", "How cold is it in Oslo at the moment?",
    "Current weather in Cairo?", "Is it windy in Chicago now?", "Tell me if it's snowing in Toronto.",
    "What is the temperature in Mumbai in celsius?", "Check the weather in Rome for me.",
    "How's the weather in Buenos Aires?", "Is it humid in Singapore today?",
    "What's it like outside in Amsterdam right now?", "Give me the weather for Lisbon.",
    "Can you look up the weather in Vienna?"]
NO_TOOL = ["hi", "write a haiku about the sea", "What is the capital of Italy?", "Thanks, that's all!",
           "Write a Python function that reverses a string.", "Tell me a joke about programmers.",
           "Translate 'good morning' into Spanish.", "What does HTTP stand for?",
           "Summarize the plot of Romeo and Juliet in one sentence.", "How are you today?"]


def valid_weather_call(msg: dict) -> bool:
    calls = msg.get("tool_calls") or []
    if not calls:
        return False
    for call in calls:
        args = json.loads(call["function"]["arguments"])
        if call["function"]["name"] != "get_weather" or set(args) - {"city", "unit"}:
            return False
        if not isinstance(args.get("city"), str) or not args["city"]:
            return False
        if "unit" in args and args["unit"] not in ("celsius", "fahrenheit"):
            return False
    return True


def acceptance(llm: LLM, seeds: int) -> None:
    for choice in ("auto", "required"):
        ok = sum(valid_weather_call(llm.chat([{"role": "user", "content": p}], tools=[WEATHER], tool_choice=choice,
                                             seed=s))
                 for p in NEEDS_TOOL for s in range(1, seeds + 1))
        n = len(NEEDS_TOOL) * seeds
        print(f"valid call, tool_choice={choice!r}: {ok}/{n} = {100 * ok / n:.1f}%")
    quiet = sum("tool_calls" not in llm.chat([{"role": "user", "content": p}], tools=[WEATHER], tool_choice="auto",
                                             seed=s)
                for p in NO_TOOL for s in range(1, seeds + 1))
    n = len(NO_TOOL) * seeds
    print(f"no call for no-tool prompts, tool_choice='auto': {quiet}/{n} = {100 * quiet / n:.1f}%")


def lazy_grammar_speed(llm: LLM, rounds: int, tokens: int) -> None:
    job = prepare(llm, [{"role": "user", "content": "Write a long story about a lighthouse keeper."}], [WEATHER])
    prompt, settings = job["prompt"], job["settings"]
    speeds: dict[str, list[float]] = {"plain": [], "lazy grammar": []}
    for r in range(rounds):
        for name, extra in (("plain", {}), ("lazy grammar", {"grammar": settings["grammar"],
                                                             "grammar_triggers": settings["grammar_triggers"]})):
            _, stats = llm.generate_with_stats(prompt, seed=r, max_tokens=tokens, ignore_eos=True,
                                               parse_special=True, **extra)
            speeds[name].append(stats.tokens_per_second)
    plain, lazy = statistics.median(speeds["plain"]), statistics.median(speeds["lazy grammar"])
    print(f"generation, {tokens} tokens, median of {rounds}: plain {plain:.1f} t/s, lazy grammar armed "
          f"{lazy:.1f} t/s, ratio {lazy / plain:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-acceptance", action="store_true")
    args = ap.parse_args()
    path = args.model or pull("qwen2.5-coder-0.5b-instruct")
    with LLM(path, n_ctx=2048, temperature=0.7, max_tokens=96, n_threads=args.threads) as llm:
        t0 = time.perf_counter()
        lazy_grammar_speed(llm, args.rounds, args.tokens)
        if not args.skip_acceptance:
            acceptance(llm, args.seeds)
        print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()

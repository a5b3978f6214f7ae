"""Wall time of quick CLI commands, interpreter start included (median of N runs).

    python benchmarks/bench_cli.py [--runs 10]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llamapy.hub.catalog import pull  # noqa: E402


def wall(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    model = str(pull())
    exe = [sys.executable, "-m", "llamapy.cli"]
    commands = {
        "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
        "llamapy gguf inspect": [*exe, "gguf", "inspect", model],
        "llamapy gguf inspect --json": [*exe, "gguf", "inspect", model, "--json"],
        "llamapy estimate": [*exe, "estimate", "-m", model, "--vram", "8GiB", "--ctx", "8192"],
    }
    for name, cmd in commands.items():
        print(f"{name:<40} {wall(cmd, args.runs) * 1e3:7.0f} ms (median of {args.runs})")


if __name__ == "__main__":
    main()

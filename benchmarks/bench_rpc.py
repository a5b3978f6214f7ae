"""Generation speed over ggml's RPC backend on loopback: local-only, 1 worker, 2 workers.

llamapy (its client, greedy decode loop, with ``llamapy rpc-server`` workers) against
llama.cpp (``llama-bench --rpc`` with its own ``ggml-rpc-server`` workers) on the same
split, in interleaved rounds; then the per-token cost of the network hops (ms per token
over local-only) for each.

    python benchmarks/bench_rpc.py [--rounds 3] [--threads 1] [--tg 64] [--model FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_core import ours_tg  # noqa: E402
from llamapy import Model, build_info, rpc  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402
from tools.cmake_build import build_tools  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(n: int, threads: int, llama_cpp_server: Path | None) -> list[tuple[subprocess.Popen, str]]:
    """n RPC servers on loopback: `llamapy rpc-server`, or llama.cpp's when its path is given."""
    workers = []
    for _ in range(n):
        port = _free_port()
        if llama_cpp_server is None:
            cmd = [sys.executable, "-m", "llamapy.cli", "rpc-server", "--port", str(port), "--threads", str(threads)]
        else:
            cmd = [str(llama_cpp_server), "-H", "127.0.0.1", "-p", str(port), "-t", str(threads)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd="/")
        workers.append((proc, f"127.0.0.1:{port}"))
    deadline = time.monotonic() + 60
    for proc, ep in workers:
        while not rpc.is_alive(ep, timeout=1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_workers(workers)
                raise RuntimeError(f"RPC server {ep} did not start")
            time.sleep(0.1)
    return workers


def stop_workers(workers: list[tuple[subprocess.Popen, str]]) -> None:
    for proc, _ in workers:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc, _ in workers:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def bench_tg(exe: Path, model: Path, threads: int, tg: int, ngl: int, eps: list[str]) -> float:
    """llama-bench's tg tokens/s for one split (one repetition)."""
    cmd = [str(exe), "-m", str(model), "-t", str(threads), "-p", "0", "-n", str(tg), "-r", "1", "-ngl", str(ngl),
           "-o", "json"]
    if eps:
        cmd += ["--rpc", ",".join(eps)]
    if len(eps) > 1:
        cmd += ["-ts", "/".join("1" for _ in eps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
    return next(r["avg_ts"] for r in json.loads(out) if r["n_gen"] == tg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--threads", type=int, default=1, help="client threads, and each worker's")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tg", type=int, default=64)
    args = ap.parse_args()
    model_path = args.model or pull("smollm2-135m-instruct", quiet=True)
    bin_dir = build_tools(Path(build_info()["llama_cpp"]["build_dir"]), ["llama-bench", "ggml-rpc-server"])
    ours_workers = start_workers(2, args.threads, None)
    theirs_workers = start_workers(2, args.threads, bin_dir / "ggml-rpc-server")
    ours_eps = [ep for _, ep in ours_workers]
    theirs_eps = [ep for _, ep in theirs_workers]
    splits = {"local-only": 0, "1 worker": 1, "2 workers": 2}
    rows: dict[tuple[str, str], list[float]] = {}
    try:
        models = {
            name: Model.from_file(model_path, n_gpu_layers=99 if n else 0, rpc_servers=ours_eps[:n] or None,
                                  tensor_split=[1.0] * n if n > 1 else None)
            for name, n in splits.items()
        }
        for m in models.values():
            ours_tg(m, args.threads, 8)  # warm up
        for r in range(args.rounds):
            for name, n in splits.items():
                theirs = bench_tg(bin_dir / "llama-bench", model_path, args.threads, args.tg, 99 if n else 0,
                                  theirs_eps[:n])
                ours = ours_tg(models[name], args.threads, args.tg)
                rows.setdefault((name, "llama.cpp"), []).append(theirs)
                rows.setdefault((name, "llamapy"), []).append(ours)
                print(f"round {r + 1} {name:>10}: llama-bench {theirs:7.1f} t/s | llamapy {ours:7.1f} t/s "
                      f"({ours / theirs:.2f}x)", flush=True)
        for m in models.values():
            m.close()
    finally:
        stop_workers(ours_workers + theirs_workers)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\n{model_path.name}, tg{args.tg}, {args.threads} thread(s) per process, medians of {args.rounds} rounds")
    print(f"{'split':>10}  {'llama.cpp t/s':>13}  {'llamapy t/s':>11}  {'ratio':>5}  "
          f"{'hop ms/tok (llama.cpp)':>22}  {'hop ms/tok (llamapy)':>20}")
    for name in splits:
        theirs, ours = med[(name, "llama.cpp")], med[(name, "llamapy")]
        hop_t = 1e3 / theirs - 1e3 / med[("local-only", "llama.cpp")]
        hop_o = 1e3 / ours - 1e3 / med[("local-only", "llamapy")]
        print(f"{name:>10}  {theirs:13.1f}  {ours:11.1f}  {ours / theirs:5.2f}  {hop_t:22.2f}  {hop_o:20.2f}")


if __name__ == "__main__":
    main()

"""Transcription speed against whisper.cpp's own ``whisper-cli``: same model, file, threads and decoding.

Rounds alternate between the two so machine noise hits both alike. Per round:
  * whisper-cli: the process's wall time (start, model load, transcription), and the
    transcription alone as it reports it (its "total time" less its "load time");
  * llamapy: ``WhisperContext(model)`` + ``transcribe(file)`` in this process, and the
    ``transcribe`` call alone (reading the WAV included).
Prints the medians and the ratios whisper-cli / llamapy (1.0 = same speed, higher = llamapy faster).

whisper-cli is built once, from the same pinned whisper.cpp tree and with the same CMake
flags as llamapy's whisper library (examples switched on), in its own build directory.

    python benchmarks/bench_whisper.py [--whisper-cli PATH] [--threads 2] [--rounds 3] [--beam-size 1]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llamapy import build_info  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402
from llamapy.whisper import WhisperContext, WhisperParams  # noqa: E402
from tools.build_env import cache_dir  # noqa: E402
from tools.cmake_build import _WHISPER_FLAGS, cmake_exe  # noqa: E402


def build_whisper_cli(build_dir: Path) -> Path:
    """whisper-cli from the pinned tree, compiled like llamapy's whisper library."""
    exe = build_dir / "bin" / "whisper-cli"
    if exe.is_file():
        return exe
    tree = build_info()["whisper_cpp"]["tree"]
    flags = [f.replace("WHISPER_BUILD_EXAMPLES=OFF", "WHISPER_BUILD_EXAMPLES=ON") for f in _WHISPER_FLAGS]
    cmake = cmake_exe()
    print(f"building whisper-cli in {build_dir} (once, a few minutes) ...", file=sys.stderr)
    subprocess.run([cmake, "-S", tree, "-B", str(build_dir), *flags], check=True, capture_output=True)
    subprocess.run([cmake, "--build", str(build_dir), "-j", "2", "--target", "whisper-cli"], check=True,
                   capture_output=True)
    return exe


def run_cli(exe: Path, model: Path, audio: Path, threads: int, beam_size: int) -> tuple[float, float, str]:
    """(process wall s, transcription s as whisper-cli reports it, text)."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "-m", str(model), "-f", str(audio), "-t", str(threads), "-bs", str(beam_size),
                           "-nt"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    load = float(re.search(r"load time =\s*([\d.]+) ms", proc.stderr).group(1))
    total = float(re.search(r"total time =\s*([\d.]+) ms", proc.stderr).group(1))
    return wall, (total - load) / 1000, " ".join(proc.stdout.split())


def run_ours(model: Path, audio: Path, threads: int, beam_size: int) -> tuple[float, float, str]:
    """(load + transcribe s, transcribe s, text)."""
    params = WhisperParams("beam_search" if beam_size > 1 else "greedy", n_threads=threads)
    if beam_size > 1:
        params.beam_size = beam_size
    t0 = time.perf_counter()
    with WhisperContext(model) as ctx:
        t1 = time.perf_counter()
        result = ctx.transcribe(audio, params)
        t2 = time.perf_counter()
    return t2 - t0, t2 - t1, result.text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--whisper-cli", type=Path, help="whisper-cli to compare with (default: build it once)")
    ap.add_argument("--model", type=Path, help="whisper ggml model (default: catalog whisper-tiny.en)")
    ap.add_argument("--audio", type=Path, help="audio file (default: whisper.cpp's samples/jfk.wav)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--beam-size", type=int, default=1, help="1 = greedy (best of 5), >1 = beam search")
    args = ap.parse_args()

    exe = args.whisper_cli or build_whisper_cli(cache_dir() / "build" / "whisper-cli")
    model = args.model or pull("whisper-tiny.en")
    audio = args.audio or Path(build_info()["whisper_cpp"]["tree"]) / "samples" / "jfk.wav"
    run_ours(model, audio, args.threads, args.beam_size)  # warm the page cache and the lazy module load
    cli_wall, cli_run, ours_wall, ours_run = [], [], [], []
    for _ in range(args.rounds):
        wall, run, cli_text = run_cli(exe, model, audio, args.threads, args.beam_size)
        cli_wall.append(wall)
        cli_run.append(run)
        wall, run, ours_text = run_ours(model, audio, args.threads, args.beam_size)
        ours_wall.append(wall)
        ours_run.append(run)
    med = statistics.median
    print(f"model {model.name}, audio {audio.name}, {args.threads} threads, "
          f"{'greedy' if args.beam_size <= 1 else f'beam {args.beam_size}'}, {args.rounds} rounds (medians)")
    print(f"  load + transcribe   whisper-cli {med(cli_wall):7.3f} s   llamapy {med(ours_wall):7.3f} s   "
          f"ratio {med(cli_wall) / med(ours_wall):.3f}")
    print(f"  transcribe only     whisper-cli {med(cli_run):7.3f} s   llamapy {med(ours_run):7.3f} s   "
          f"ratio {med(cli_run) / med(ours_run):.3f}")
    print(f"  whisper-cli: {cli_text}\n  llamapy:     {ours_text}")


if __name__ == "__main__":
    main()

"""Shared pieces of the native build: the error type, the cache location, commands."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class BuildError(Exception):
    """A build step failed; the message says what to do about it."""


def cache_dir() -> Path:
    """Where fetched sources, CMake builds and compiled modules are kept between builds."""
    if os.environ.get("LLAMAPY_CACHE_DIR"):
        return Path(os.environ["LLAMAPY_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llamapy"


def log(msg: str) -> None:
    print(f"[llamapy build] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], what: str, cwd: Path | None = None, hint: str = "") -> str:
    """Run a command; on failure raise BuildError with the tail of its output."""
    log(" ".join(str(c) for c in cmd))
    try:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} not found. {hint}".strip()) from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise BuildError(f"{what} failed (exit {proc.returncode}). {hint}\n{tail}".strip())
    return proc.stdout

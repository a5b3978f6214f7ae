"""Shared fixtures: the real test model (fetched, verified, cached) and the build record."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamapy import build_info
from llamapy.catalog import pull

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1. A failed fetch fails the tests; it never skips them."""
    return pull("smollm2-135m-instruct", quiet=True)


@pytest.fixture(scope="session")
def info() -> dict:
    return build_info()


@pytest.fixture(scope="session")
def llama_tools(info) -> Path:
    """llama.cpp's own programs, built once in the cached build directory (the oracle)."""
    sys.path.insert(0, str(REPO))
    from tools.cmake_build import build_tools

    return build_tools(Path(info["llama_cpp"]["build_dir"]),
                       ["llama-simple", "llama-tokenize", "llama-bench", "llama-batched-bench"])


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter (crash isolation), from outside the repo."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd="/", env={**os.environ, **(env or {})})

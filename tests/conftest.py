"""Shared fixtures: the real test model (fetched, verified, cached) and the build record."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamapy import build_info
from llamapy.hub.catalog import pull

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1. A failed fetch fails the tests; it never skips them."""
    return pull("smollm2-135m-instruct", quiet=True)


@pytest.fixture(scope="session")
def model(model_path):
    """The test model, loaded once for the tests that only read from it."""
    from llamapy import Model

    with Model.from_file(model_path) as m:
        yield m


@pytest.fixture(scope="session")
def info() -> dict:
    return build_info()


@pytest.fixture(scope="session")
def llama_tools(info) -> Path:
    """llama.cpp's own programs, built once in the cached build directory (the oracle)."""
    sys.path.insert(0, str(REPO))
    from tools.cmake_build import build_tools

    return build_tools(Path(info["llama_cpp"]["build_dir"]),
                       ["llama-simple", "llama-tokenize", "llama-bench", "llama-batched-bench", "llama-embedding"])


@pytest.fixture(scope="session")
def llama_server_exe(info) -> Path:
    """llama.cpp's own llama-server, built once into the cached build (only its own sources are compiled)."""
    sys.path.insert(0, str(REPO))
    from tools.cmake_build import build_server

    return build_server(Path(info["llama_cpp"]["build_dir"]))


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter (crash isolation), from outside the repo."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd="/", env={**os.environ, **(env or {})})


def copy_gguf_with_strings(src: Path, dst: Path, values: dict[str, str]) -> Path:
    """Copy a GGUF model (tensors included) with some string metadata set, through gguf.h.

    The copy is built in a new gguf context: writing the tensors of a context read from a
    file crashes in gguf.h (its tensor infos carry an uninitialised buffer pointer).
    """
    from llamapy._ffi import ffi, lib

    ggml_ctx = ffi.new("struct ggml_context **")
    params = ffi.new("struct gguf_init_params *", {"no_alloc": False, "ctx": ggml_ctx})
    g = lib.gguf_init_from_file(str(src).encode(), params[0])
    assert g != ffi.NULL, f"gguf.h could not read {src}"
    out = lib.gguf_init_empty()
    try:
        lib.gguf_set_kv(out, g)
        for key, value in values.items():
            lib.gguf_set_val_str(out, key.encode(), value.encode())
        for i in range(lib.gguf_get_n_tensors(g)):
            lib.gguf_add_tensor(out, lib.ggml_get_tensor(ggml_ctx[0], lib.gguf_get_tensor_name(g, i)))
        assert lib.gguf_write_to_file(out, str(dst).encode(), False)
    finally:
        lib.gguf_free(out)
        lib.gguf_free(g)
        lib.ggml_free(ggml_ctx[0])
    return dst

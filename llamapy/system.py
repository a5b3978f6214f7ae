"""What this build of llama.cpp is and what it can do on this machine."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _ffi
from ._ffi import ffi, lib


@dataclass(frozen=True)
class Device:
    """A compute device ggml sees (CPU, GPU, RPC server, ...)."""

    index: int
    name: str
    description: str
    type: str
    memory_free: int
    memory_total: int
    endpoint: str | None = None  # the RPC server of a remote device

    @property
    def is_remote(self) -> bool:
        return self.endpoint is not None


_DEV_TYPES = {
    lib.GGML_BACKEND_DEVICE_TYPE_CPU: "cpu",
    lib.GGML_BACKEND_DEVICE_TYPE_GPU: "gpu",
    lib.GGML_BACKEND_DEVICE_TYPE_IGPU: "igpu",
    lib.GGML_BACKEND_DEVICE_TYPE_ACCEL: "accel",
}


@functools.lru_cache(maxsize=1)
def build_info() -> dict[str, Any]:
    """The record written at build time: sources, backends, CMake flags, API coverage."""
    return json.loads((Path(__file__).parent / "_build_info.json").read_text())


def llama_cpp_version() -> str:
    """Identity of the llama.cpp sources this module was built from."""
    return build_info()["llama_cpp"]["identity"]


def system_info() -> str:
    """llama.cpp's one-line summary of CPU features and compiled backends."""
    return ffi.string(lib.llama_print_system_info()).decode()


def backends() -> list[Device]:
    """Every device ggml sees, with its free and total memory in bytes.

    Remote devices (RPC servers registered with ``llamapy.rpc.add_servers`` or a model's
    ``rpc_servers``) report the memory their server reports; a server that cannot be
    reached is logged and its devices report 0.
    """
    from . import rpc

    devices = []
    free, total = ffi.new("size_t *"), ffi.new("size_t *")
    reachable: dict[str, bool] = {}
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        endpoint = rpc.device_endpoint(dev)
        free[0] = total[0] = 0
        if endpoint is not None and endpoint not in reachable:
            try:
                rpc.check_server(endpoint)
                reachable[endpoint] = True
            except rpc.RPCError as e:
                _ffi.logger.warning("%s", e)
                reachable[endpoint] = False
        if endpoint is None or reachable[endpoint]:  # ggml aborts on an unreachable server
            lib.ggml_backend_dev_memory(dev, free, total)
        devices.append(Device(
            index=i,
            name=ffi.string(lib.ggml_backend_dev_name(dev)).decode(),
            description=ffi.string(lib.ggml_backend_dev_description(dev)).decode(),
            type=_DEV_TYPES.get(lib.ggml_backend_dev_type(dev), "unknown"),
            memory_free=int(free[0]),
            memory_total=int(total[0]),
            endpoint=endpoint,
        ))
    return devices


def supports_gpu_offload() -> bool:
    """True when a GPU (or RPC) backend can hold model layers."""
    return bool(lib.llama_supports_gpu_offload())


def supports_mmap() -> bool:
    return bool(lib.llama_supports_mmap())


def supports_mlock() -> bool:
    return bool(lib.llama_supports_mlock())


def supports_rpc() -> bool:
    """True when this build includes the RPC backend (offload to llama.cpp rpc-servers)."""
    return bool(lib.llama_supports_rpc())


# -- the names users of other bindings call ---------------------------------------------
def ggml_backend_load_all() -> None:
    """Load every dynamically loadable ggml backend (backends built into the library are always there)."""
    lib.ggml_backend_load_all()


def ggml_backend_offload_supported() -> bool:
    """Whether a GPU (or other offload) backend is available: :func:`supports_gpu_offload`."""
    return supports_gpu_offload()


def ggml_backend_metal_set_n_cb(n_cb: int) -> None:
    """Accepted for compatibility and ignored: llama.cpp creates and configures its Metal backends
    itself (on macOS builds with Metal, as everywhere else). ``n_cb`` must still be a positive int."""
    if not isinstance(n_cb, int) or isinstance(n_cb, bool) or n_cb < 1:
        raise ValueError(f"n_cb must be a positive number of command buffers, got {n_cb!r}")

"""llamapy: fast, complete and safe Python bindings for llama.cpp."""
from ._version import __version__
from .errors import LlamaError
from .system import (
    Device,
    backends,
    build_info,
    llama_cpp_version,
    supports_gpu_offload,
    supports_mlock,
    supports_mmap,
    supports_rpc,
    system_info,
)

__all__ = [
    "__version__", "LlamaError", "Device", "backends", "build_info", "llama_cpp_version",
    "supports_gpu_offload", "supports_mlock", "supports_mmap", "supports_rpc", "system_info",
]

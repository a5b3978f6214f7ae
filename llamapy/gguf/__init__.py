"""GGUF files: typed metadata, tensor infos, editing and writing (gguf.h underneath)."""
from .file import GGUFContext, GGUFError, GGUFFile, TensorInfo, human_size, json_ready, summarise

__all__ = ["GGUFContext", "GGUFError", "GGUFFile", "TensorInfo", "human_size", "json_ready", "summarise"]

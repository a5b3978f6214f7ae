"""Python enums mirroring llama.cpp/ggml C enums one for one (built from the compiled module)."""
from __future__ import annotations

from enum import IntEnum, IntFlag

from ._ffi import lib


def _mirror(name: str, prefix: str, base: type = IntEnum):
    members = sorted(((k[len(prefix):], getattr(lib, k)) for k in dir(lib) if k.startswith(prefix)),
                     key=lambda kv: (kv[1], kv[0]))
    return base(name, members, module=__name__)


VocabType = _mirror("VocabType", "LLAMA_VOCAB_TYPE_")
RopeType = _mirror("RopeType", "LLAMA_ROPE_TYPE_")
TokenAttr = _mirror("TokenAttr", "LLAMA_TOKEN_ATTR_", IntFlag)
Ftype = _mirror("Ftype", "LLAMA_FTYPE_")
RopeScalingType = _mirror("RopeScalingType", "LLAMA_ROPE_SCALING_TYPE_")
PoolingType = _mirror("PoolingType", "LLAMA_POOLING_TYPE_")
AttentionType = _mirror("AttentionType", "LLAMA_ATTENTION_TYPE_")
FlashAttnType = _mirror("FlashAttnType", "LLAMA_FLASH_ATTN_TYPE_")
SplitMode = _mirror("SplitMode", "LLAMA_SPLIT_MODE_")
LoadMode = _mirror("LoadMode", "LLAMA_LOAD_MODE_")
GGMLType = _mirror("GGMLType", "GGML_TYPE_")
LogLevel = _mirror("LogLevel", "GGML_LOG_LEVEL_")

__all__ = ["VocabType", "RopeType", "TokenAttr", "Ftype", "RopeScalingType", "PoolingType", "AttentionType",
           "FlashAttnType", "SplitMode", "LoadMode", "GGMLType", "LogLevel"]

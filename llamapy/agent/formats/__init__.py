"""Tool-call formats, one module per model family, and detection from the chat template."""
from __future__ import annotations

from .base import ToolFormat
from .command_r import CommandR7BFormat
from .deepseek import DeepSeekFormat, DeepSeekR1Format
from .functionary import FunctionaryV31Format, FunctionaryV32Format
from .gemma4 import Gemma4Format
from .generic import GenericFormat
from .glm import GlmFormat
from .gpt_oss import GptOssFormat
from .granite import GraniteFormat
from .hermes import HermesFormat
from .kimi import KimiK2Format
from .lfm2 import Lfm2Format
from .llama3 import Llama3Format
from .mistral import MistralFormat, MistralNemoFormat
from .qwen3_coder import Qwen3CoderFormat

# Most specific first: several families share markers (``<tool_call>``, ``<function=``, ``[TOOL_CALLS]``).
FORMATS: list[type[ToolFormat]] = [
    GptOssFormat,
    Gemma4Format,
    Lfm2Format,
    FunctionaryV32Format,
    KimiK2Format,
    DeepSeekR1Format,
    DeepSeekFormat,
    CommandR7BFormat,
    Qwen3CoderFormat,
    GlmFormat,
    GraniteFormat,
    MistralFormat,
    MistralNemoFormat,
    FunctionaryV31Format,
    Llama3Format,
    HermesFormat,
    GenericFormat,
]


def detect_format(template_source: str) -> ToolFormat:
    """The format a chat template's model writes calls in (generic JSON when none is known)."""
    for cls in FORMATS:
        if cls.detect(template_source):
            return cls()
    return GenericFormat()


def get_format(name: str) -> ToolFormat:
    """A format by name (``hermes``, ``llama3``, ...)."""
    for cls in FORMATS:
        if cls.name == name:
            return cls()
    raise ValueError(f"unknown tool-call format {name!r}; known: {', '.join(c.name for c in FORMATS)}")


__all__ = ["ToolFormat", "FORMATS", "detect_format", "get_format"]

"""llamapy: fast, complete and safe Python bindings for llama.cpp."""
from ._ffi import set_verbose
from ._version import __version__
from .adapters import LoraAdapter
from .batch import Batch
from .batching import BatchEvent, BatchGenerator, BatchRequest, BatchResponse, batch_generate
from .chat_template import ChatTemplate
from .context import Context, Memory, PerfData
from .enums import GGMLType, PoolingType, RopeType, TokenAttr, VocabType
from .errors import (
    AdapterError,
    ChatTemplateError,
    ClosedError,
    ContextError,
    DecodeAbortedError,
    DecodeError,
    GrammarError,
    InvalidBatchError,
    LlamaError,
    ModelLoadError,
    NoKvSlotError,
    PromptTooLongError,
    SchemaError,
    StateError,
    TemplateSecurityError,
    TokenizeError,
)
from .config import GenerationConfig, GenerationStats
from .generate import LLM, chat, complete
from .json_schema import schema_to_gbnf
from .memory import EstimateError, estimate_gpu_layers, estimate_memory_usage
from .model import Model
from .sampler import PySampler, Sampler, SamplerChain
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
from .vocab import TokenTextDecoder, Vocab

# Names users of other bindings know.
LlamaModel = Model
LlamaContext = Context
LlamaBatch = Batch
LlamaSampler = Sampler
LlamaVocab = Vocab

__all__ = [
    "__version__", "set_verbose",
    "Model", "Vocab", "Context", "Memory", "PerfData", "Batch", "Sampler", "SamplerChain", "PySampler",
    "LoraAdapter", "TokenTextDecoder",
    "LlamaModel", "LlamaContext", "LlamaBatch", "LlamaSampler", "LlamaVocab",
    "GGMLType", "PoolingType", "RopeType", "TokenAttr", "VocabType",
    "LlamaError", "ModelLoadError", "ContextError", "DecodeError", "NoKvSlotError", "DecodeAbortedError",
    "InvalidBatchError", "TokenizeError", "StateError", "AdapterError", "GrammarError", "ClosedError",
    "PromptTooLongError", "ChatTemplateError", "TemplateSecurityError", "SchemaError",
    "BatchGenerator", "BatchRequest", "BatchResponse", "BatchEvent", "batch_generate",
    "estimate_memory_usage", "estimate_gpu_layers", "EstimateError",
    "LLM", "GenerationConfig", "GenerationStats", "complete", "chat", "ChatTemplate", "schema_to_gbnf",
    "Device", "backends", "build_info", "llama_cpp_version", "supports_gpu_offload", "supports_mlock",
    "supports_mmap", "supports_rpc", "system_info",
]

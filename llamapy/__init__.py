"""llamapy: fast, complete and safe Python bindings for llama.cpp."""
from ._ffi import set_verbose
from ._version import __version__
from .adapters import LoraAdapter
from .batch import Batch, LlamaBatch, llama_batch_get_one
from .generation.batching import BatchEvent, BatchGenerator, BatchRequest, BatchResponse, batch_generate
from .generation.chat_template import ChatTemplate
from .context import Context, LlamaContext, LlamaContextParams, Memory, PerfData
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
from .generation.config import GenerationConfig, GenerationStats
from .generation.llm import LLM, Generator, chat, complete, generate
from .agent import Agent, LlamaAgent
from .generation.ngram_cache import NgramCache
from .generation.speculative import Speculative, SpeculativeParams
from .generation.json_schema import json_schema_to_grammar, schema_to_gbnf
from .gguf import GGUFContext, GGUFFile
from .hub import download_model, list_cached_models
from .memory.estimate import EstimateError, MemoryEstimate, estimate_gpu_layers, estimate_memory_usage
from .model import LlamaModel, LlamaModelParams, Model
from .sampler import LlamaSampler, LlamaSamplerChainParams, PySampler, Sampler, SamplerChain
from .system import (
    Device,
    backends,
    build_info,
    ggml_backend_load_all,
    ggml_backend_metal_set_n_cb,
    ggml_backend_offload_supported,
    llama_cpp_version,
    supports_gpu_offload,
    supports_mlock,
    supports_mmap,
    supports_rpc,
    system_info,
)
from .vocab import LlamaVocab, TokenTextDecoder, Vocab
from . import rpc
from .rpc import RPCError
from .embed import Embedder, Reranker

__all__ = [
    "__version__", "set_verbose",
    "Model", "Vocab", "Context", "Memory", "PerfData", "Batch", "Sampler", "SamplerChain", "PySampler",
    "LoraAdapter", "TokenTextDecoder",
    "LlamaModel", "LlamaModelParams", "LlamaContext", "LlamaContextParams", "LlamaBatch", "llama_batch_get_one",
    "LlamaSampler", "LlamaSamplerChainParams", "LlamaVocab",
    "GGMLType", "PoolingType", "RopeType", "TokenAttr", "VocabType",
    "LlamaError", "ModelLoadError", "ContextError", "DecodeError", "NoKvSlotError", "DecodeAbortedError",
    "InvalidBatchError", "TokenizeError", "StateError", "AdapterError", "GrammarError", "ClosedError",
    "PromptTooLongError", "ChatTemplateError", "TemplateSecurityError", "SchemaError",
    "BatchGenerator", "BatchRequest", "BatchResponse", "BatchEvent", "batch_generate",
    "estimate_memory_usage", "estimate_gpu_layers", "EstimateError", "MemoryEstimate",
    "GGUFFile", "GGUFContext", "download_model", "list_cached_models", "json_schema_to_grammar",
    "ggml_backend_load_all", "ggml_backend_offload_supported", "ggml_backend_metal_set_n_cb",
    "Agent", "LlamaAgent",
    "LLM", "Generator", "generate", "GenerationConfig", "GenerationStats", "complete", "chat", "ChatTemplate", "schema_to_gbnf",
    "NgramCache", "Speculative", "SpeculativeParams",
    "Device", "backends", "build_info", "llama_cpp_version", "supports_gpu_offload", "supports_mlock",
    "supports_mmap", "supports_rpc", "system_info",
    "Embedder", "Reranker",
    "rpc", "RPCError",
]

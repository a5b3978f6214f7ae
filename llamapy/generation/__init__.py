"""Text generation: configuration, the LLM front end, chat templates, JSON schema grammars, batching."""
from .batching import BatchEvent, BatchGenerator, BatchRequest, BatchResponse, batch_generate
from .chat_template import ChatTemplate
from .config import GenerationConfig, GenerationStats, TokenLogprob
from .json_schema import schema_to_gbnf
from .llm import LLM, TokenStream, chat, complete
from .ngram_cache import NgramCache
from .speculative import Speculative, SpeculativeParams

__all__ = ["BatchEvent", "BatchGenerator", "BatchRequest", "BatchResponse", "batch_generate", "ChatTemplate",
           "GenerationConfig", "GenerationStats", "TokenLogprob", "schema_to_gbnf", "LLM", "TokenStream", "chat",
           "complete", "NgramCache", "Speculative", "SpeculativeParams"]

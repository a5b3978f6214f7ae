"""The exception hierarchy: every C failure becomes one of these, with an actionable message."""
from __future__ import annotations


class LlamaError(Exception):
    """Base class of llamapy's errors."""


class BuildMismatchError(LlamaError, ImportError):
    """The compiled module does not belong to this version of the package."""


class ClosedError(LlamaError, ValueError):
    """An object was used after close()."""


class ModelLoadError(LlamaError):
    """llama.cpp could not load a model file."""


class ContextError(LlamaError):
    """llama.cpp could not create a context."""


class DecodeError(LlamaError):
    """llama_decode/llama_encode failed; ``code`` is llama.cpp's return code."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class NoKvSlotError(DecodeError):
    """No free KV-cache slot for the batch: reduce the batch or grow n_ctx."""


class DecodeAbortedError(DecodeError):
    """The decode was aborted (abort callback or cancel); the context stays usable."""


class InvalidBatchError(DecodeError):
    """The batch was rejected (bad token ids, positions or sequence ids)."""


class TokenizeError(LlamaError, ValueError):
    """Text could not be tokenized or a token id is out of range."""


class StateError(LlamaError):
    """Saving or restoring a context state failed."""


class AdapterError(LlamaError):
    """A LoRA adapter or control vector could not be loaded or applied."""


class GrammarError(LlamaError, ValueError):
    """A grammar could not be parsed."""


class PromptTooLongError(LlamaError, ValueError):
    """The prompt does not fit in the context; nothing was decoded."""


class ChatTemplateError(LlamaError):
    """A chat template could not be rendered."""


class TemplateSecurityError(ChatTemplateError):
    """A chat template tried to reach outside its sandbox; nothing was executed."""


class SchemaError(LlamaError, ValueError):
    """A JSON schema uses something that cannot be turned into a grammar."""

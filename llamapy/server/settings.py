"""What a server serves and how: the one settings object the app, the engine and the CLI share."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..generation.batching import draft_length
from ..generation.config import GenerationConfig


# OpenAI's semantics where a request says nothing: no repetition penalty, generate until the
# end of generation or of the slot's context, BOS as the model wants it.
SERVER_DEFAULTS = GenerationConfig(max_tokens=1 << 30, repeat_penalty=1.0, add_bos=None)


@dataclass
class ServerSettings:
    """``n_ctx`` is shared by the ``n_parallel`` slots (each holds n_ctx / n_parallel tokens), as in
    llama-server. ``max_queue`` requests may wait for a slot; past that the server answers 503."""

    model_path: str | os.PathLike
    host: str = "127.0.0.1"
    port: int = 8080
    n_parallel: int = 8
    n_ctx: int = 16384
    n_batch: int = 512
    n_threads: int | None = None
    n_gpu_layers: int | None = None
    rpc_servers: str | tuple[str, ...] | None = None  # RPC servers holding layers (llamapy.rpc)
    tensor_split: tuple[float, ...] | None = None
    model_alias: str | None = None
    chat_template: str | None = None
    api_key: str | None = None
    max_queue: int = 64
    max_tokens_limit: int | None = None  # None: a slot's context
    max_request_bytes: int = 8 * 1024 * 1024
    embedding_model: str | os.PathLike | None = None
    mmproj: str | os.PathLike | None = None  # a multimodal projector: image parts in chat messages
    speculative: str | None = None  # "ngram": each slot drafts from its own text (llamapy.generation.batching)
    draft_model: str | os.PathLike | None = None  # or a smaller model drafts (a context per slot)
    n_draft: int | None = None
    graceful_shutdown_s: float = 10.0
    defaults: GenerationConfig = field(default_factory=lambda: SERVER_DEFAULTS)

    def __post_init__(self) -> None:
        if self.n_parallel < 1:
            raise ValueError("n_parallel must be >= 1")
        if self.n_ctx < self.n_parallel * 16:
            raise ValueError(f"n_ctx {self.n_ctx} is too small for {self.n_parallel} slots")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        draft_length(self.speculative, self.n_draft, self.draft_model)  # fails here, before the model loads

    @property
    def model_name(self) -> str:
        return self.model_alias or Path(self.model_path).name

    @classmethod
    def from_kwargs(cls, model_path: str | os.PathLike, **kwargs: Any) -> ServerSettings:
        """Settings from keyword arguments; the ones that are not server settings are generation defaults."""
        names = set(cls.__dataclass_fields__)
        server = {k: v for k, v in kwargs.items() if k in names}
        generation = {k: v for k, v in kwargs.items() if k not in names}
        if generation:
            server["defaults"] = server.get("defaults", SERVER_DEFAULTS).replace(**generation)
        return cls(model_path=model_path, **server)

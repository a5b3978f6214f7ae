"""InputChunks: a tokenized multimodal prompt, as text and media chunks (``mtmd_input_chunks``)."""
from __future__ import annotations

import enum
from typing import Any, Iterator

from .._ffi import ffi, lib
from .._handle import CObject


class ChunkType(enum.IntEnum):
    """``enum mtmd_input_chunk_type``."""

    TEXT = lib.MTMD_INPUT_CHUNK_TYPE_TEXT
    IMAGE = lib.MTMD_INPUT_CHUNK_TYPE_IMAGE
    AUDIO = lib.MTMD_INPUT_CHUNK_TYPE_AUDIO


class InputChunk(CObject):
    """One chunk of a tokenized prompt: text tokens, or the embeddings slot of one image or clip.

    Borrowed from its :class:`InputChunks`, which it keeps alive.
    """

    def __init__(self) -> None:
        raise TypeError("chunks come from MtmdContext.tokenize()")

    @classmethod
    def _from_c(cls, ptr: Any, parent: InputChunks) -> InputChunk:
        self = cls.__new__(cls)
        self._own(ptr, None, parent)
        self.chunks = parent
        return self

    @property
    def type(self) -> ChunkType:
        return ChunkType(lib.mtmd_input_chunk_get_type(self._ptr))

    n_tokens = property(lambda self: int(lib.mtmd_input_chunk_get_n_tokens(self._ptr)),
                        doc="KV-cache cells the chunk fills")
    n_pos = property(lambda self: int(lib.mtmd_input_chunk_get_n_pos(self._ptr)),
                     doc="positions the chunk advances (differs from n_tokens with M-RoPE)")

    @property
    def id(self) -> str:
        """The media's id (its content hash); '' for text."""
        p = lib.mtmd_input_chunk_get_id(self._ptr)
        return ffi.string(p).decode() if p != ffi.NULL else ""

    @property
    def tokens(self) -> list[int]:
        """The token ids of a text chunk ([] for media)."""
        if self.type != ChunkType.TEXT:
            return []
        n = ffi.new("size_t *")
        p = lib.mtmd_input_chunk_get_tokens_text(self._ptr, n)
        return list(ffi.unpack(p, n[0])) if n[0] else []

    def __repr__(self) -> str:
        if self.closed:
            return "<InputChunk closed>"
        return f"<InputChunk {self.type.name.lower()} n_tokens={self.n_tokens} n_pos={self.n_pos}>"


class InputChunks(CObject):
    """The chunks of one tokenized prompt, in order."""

    def __init__(self) -> None:
        ptr = lib.mtmd_input_chunks_init()
        if ptr == ffi.NULL:
            raise MemoryError("mtmd_input_chunks_init failed")
        self._own(ptr, lib.mtmd_input_chunks_free)
        self._maker: Any = None  # a weak reference to the handle of the MtmdContext that made them

    def __len__(self) -> int:
        return int(lib.mtmd_input_chunks_size(self._ptr))

    def __getitem__(self, i: int) -> InputChunk:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"chunk {i} out of range ({n} chunks)")
        return InputChunk._from_c(lib.mtmd_input_chunks_get(self._ptr, i), self)

    def __iter__(self) -> Iterator[InputChunk]:
        for i in range(len(self)):
            yield self[i]

    @property
    def n_tokens(self) -> int:
        """KV-cache cells the whole prompt fills (text tokens plus media embeddings)."""
        return int(lib.mtmd_helper_get_n_tokens(self._ptr))

    @property
    def n_pos(self) -> int:
        """Positions the whole prompt advances."""
        return int(lib.mtmd_helper_get_n_pos(self._ptr))

    @property
    def n_media_tokens(self) -> int:
        """Tokens of the media chunks only."""
        return sum(c.n_tokens for c in self if c.type != ChunkType.TEXT)

    def __repr__(self) -> str:
        if self.closed:
            return "<InputChunks closed>"
        return f"<InputChunks {len(self)} chunks, n_tokens={self.n_tokens}>"


__all__ = ["ChunkType", "InputChunk", "InputChunks"]

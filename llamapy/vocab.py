"""Vocab: tokenization and token metadata (``llama_vocab_*``, ``llama_tokenize``, ...)."""
from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ._compat import CallableInt
from ._ffi import ffi, lib
from ._handle import CObject
from .enums import VocabType
from .errors import TokenizeError

if TYPE_CHECKING:
    from .model import Model



class Vocab(CObject):
    """The vocabulary of a model. Borrowed from the model, which it keeps alive."""

    def __init__(self, model: Model):
        self._own(lib.llama_model_get_vocab(model._ptr), None, model)
        self.n_tokens: int = lib.llama_vocab_n_tokens(self._ptr)
        self._piece_buf = ffi.new("char[]", 256)

    # -- tokenization --------------------------------------------------------------
    def tokenize(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Text to token ids. ``add_special`` adds BOS/EOS as the model wants;
        ``parse_special`` turns special-token text (``<|im_start|>``) into its token."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        cap = len(data) + 16
        while True:
            buf = ffi.new("llama_token[]", cap)
            n = lib.llama_tokenize(self._ptr, data, len(data), buf, cap, add_special, parse_special)
            if n >= 0:
                return ffi.unpack(buf, n)
            if n == -(2**31):
                raise TokenizeError("the text is too long to tokenize (more than 2^31 tokens)")
            cap = -n

    def tokenize_prompt(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Tokens of a generation prompt: BOS first when the model wants one (or ``add_bos``),
        never twice when the text already starts with it."""
        add = self.add_bos if add_bos is None else add_bos
        tokens = self.tokenize(text, add_special=False, parse_special=parse_special)
        if add and self.bos is not None and (not tokens or tokens[0] != self.bos):
            tokens.insert(0, self.bos)
        return tokens

    def tokenize_array(self, text: str | bytes, add_special: bool = True, parse_special: bool = False) -> np.ndarray:
        """Like :meth:`tokenize`, as an int32 numpy array."""
        return np.asarray(self.tokenize(text, add_special, parse_special), dtype=np.int32)

    def detokenize(self, tokens: Sequence[int] | np.ndarray, remove_special: bool = False,
                   unparse_special: bool = False) -> str:
        """Token ids to text (invalid UTF-8 from partial pieces becomes U+FFFD)."""
        return self.detokenize_bytes(tokens, remove_special, unparse_special).decode("utf-8", "replace")

    def detokenize_bytes(self, tokens: Sequence[int] | np.ndarray, remove_special: bool = False,
                         unparse_special: bool = False) -> bytes:
        arr = self._checked_array(tokens)
        cap = max(64, len(arr) * 8)
        while True:
            buf = ffi.new("char[]", cap)
            n = lib.llama_detokenize(self._ptr, ffi.from_buffer("llama_token[]", arr), len(arr), buf, cap,
                                     remove_special, unparse_special)
            if n >= 0:
                return ffi.unpack(buf, n)
            cap = -n

    def token_to_bytes(self, token: int, special: bool = False, lstrip: int = 0) -> bytes:
        """The raw bytes of one token; may be part of a multi-byte UTF-8 character."""
        self._check(token)
        n = lib.llama_token_to_piece(self._ptr, token, self._piece_buf, 256, lstrip, special)
        if n < 0:
            buf = ffi.new("char[]", -n)
            n = lib.llama_token_to_piece(self._ptr, token, buf, -n, lstrip, special)
            return ffi.unpack(buf, n)
        return ffi.unpack(self._piece_buf, n)

    def token_to_piece(self, token: int, special: bool = False, lstrip: int = 0) -> str:
        """One token as text; a piece that is only part of a UTF-8 character shows as U+FFFD.
        Use :meth:`stream_decoder` to turn a token stream into text exactly."""
        return self.token_to_bytes(token, special, lstrip).decode("utf-8", "replace")

    def stream_decoder(self, special: bool = False) -> TokenTextDecoder:
        """An incremental decoder: feed tokens, get text that never splits a character."""
        return TokenTextDecoder(self, special)

    # -- token metadata ------------------------------------------------------------
    def _check(self, token: int) -> None:
        if not 0 <= token < self.n_tokens:
            raise TokenizeError(f"token id {token} is out of range (vocab has {self.n_tokens} tokens)")

    def _checked_array(self, tokens: Iterable[int] | np.ndarray) -> np.ndarray:
        arr = np.ascontiguousarray(tokens, dtype=np.int32)
        if arr.ndim != 1:
            raise TokenizeError("tokens must be a flat sequence of ids")
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_tokens):
            bad = int(arr[(arr < 0) | (arr >= self.n_tokens)][0])
            raise TokenizeError(f"token id {bad} is out of range (vocab has {self.n_tokens} tokens)")
        return arr

    def text(self, token: int) -> str:
        """The vocabulary entry of a token (as stored, e.g. with 'Ġ' for a space in BPE)."""
        self._check(token)
        return ffi.string(lib.llama_vocab_get_text(self._ptr, token)).decode("utf-8", "replace")

    def score(self, token: int) -> float:
        self._check(token)
        return lib.llama_vocab_get_score(self._ptr, token)

    def attributes(self, token: int) -> int:
        """Bit flags of ``enum llama_token_attr`` (see :class:`llamapy.enums.TokenAttr`)."""
        self._check(token)
        return lib.llama_vocab_get_attr(self._ptr, token)

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, ...)."""
        return 0 <= token < self.n_tokens and bool(lib.llama_vocab_is_eog(self._ptr, token))

    def is_control(self, token: int) -> bool:
        self._check(token)
        return bool(lib.llama_vocab_is_control(self._ptr, token))

    @property
    def type(self) -> VocabType:
        """SPM, BPE, WPM, ... (``str(vocab.type.name).lower()`` for the short name)."""
        return VocabType(lib.llama_vocab_type(self._ptr))

    def __len__(self) -> int:
        return self.n_tokens

    @property
    def add_bos(self) -> bool:
        return bool(lib.llama_vocab_get_add_bos(self._ptr))

    @property
    def add_eos(self) -> bool:
        return bool(lib.llama_vocab_get_add_eos(self._ptr))

    @property
    def add_sep(self) -> bool:
        return bool(lib.llama_vocab_get_add_sep(self._ptr))

    def _special(self, fn) -> int | None:
        t = fn(self._ptr)
        return None if t == lib.LLAMA_TOKEN_NULL else t

    bos = property(lambda self: self._special(lib.llama_vocab_bos), doc="beginning-of-sequence token")
    eos = property(lambda self: self._special(lib.llama_vocab_eos), doc="end-of-sequence token")
    eot = property(lambda self: self._special(lib.llama_vocab_eot), doc="end-of-turn token")
    sep = property(lambda self: self._special(lib.llama_vocab_sep), doc="sentence separator token")
    nl = property(lambda self: self._special(lib.llama_vocab_nl), doc="newline token")
    pad = property(lambda self: self._special(lib.llama_vocab_pad), doc="padding token")
    mask = property(lambda self: self._special(lib.llama_vocab_mask), doc="mask token")
    fim_pre = property(lambda self: self._special(lib.llama_vocab_fim_pre), doc="fill-in-the-middle prefix")
    fim_suf = property(lambda self: self._special(lib.llama_vocab_fim_suf), doc="fill-in-the-middle suffix")
    fim_mid = property(lambda self: self._special(lib.llama_vocab_fim_mid), doc="fill-in-the-middle middle")
    fim_pad = property(lambda self: self._special(lib.llama_vocab_fim_pad), doc="fill-in-the-middle pad")
    fim_rep = property(lambda self: self._special(lib.llama_vocab_fim_rep), doc="fill-in-the-middle repo")
    fim_sep = property(lambda self: self._special(lib.llama_vocab_fim_sep), doc="fill-in-the-middle separator")

    @property
    def n_vocab(self) -> CallableInt:
        """Number of tokens (also callable: ``vocab.n_vocab()``)."""
        return CallableInt(self.n_tokens)

    def special_tokens(self) -> dict[str, int | None]:
        """Every special token by role."""
        names = ["bos", "eos", "eot", "sep", "nl", "pad", "mask",
                 "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep"]
        return {n: getattr(self, n) for n in names}


class TokenTextDecoder:
    """Turns a stream of tokens into text without ever splitting a UTF-8 character."""

    def __init__(self, vocab: Vocab, special: bool = False):
        self._vocab = vocab
        self._special = special
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, token: int) -> str:
        """Text completed by this token ('' while a character is still incomplete)."""
        return self._decoder.decode(self._vocab.token_to_bytes(token, self._special))

    def flush(self) -> str:
        """Whatever is left (an incomplete character at the very end becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)

    @property
    def pending(self) -> bytes:
        """Bytes held back because they do not yet form a whole character."""
        return self._decoder.getstate()[0]


LlamaVocab = Vocab  # the name users of other bindings know

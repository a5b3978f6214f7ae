"""Grammar backends: what constrains generated text, and the two engines that enforce it.

A :class:`Grammar` says what the output must match (GBNF, a JSON schema, Lark, a regex),
optionally only after a trigger (a lazy grammar, as tool calls use). A backend turns it
into a :class:`Constraint`, one sequence's position in the grammar:

- ``"llama"``: llama.cpp's grammar sampler. Always available; it checks candidate
  tokens one by one against a stack machine, so its cost grows with the vocabulary.
- ``"llguidance"``: the llguidance engine (``pip install 'llamapy[grammar]'``). It
  computes the whole token mask at once and also reads Lark and regular expressions.

:class:`ConstrainedSampler` puts a constraint in front of a llama.cpp sampler chain: the
grammar decides which tokens may come next, the chain chooses among them. Only the
allowed tokens are handed to the chain, the logits are read once from the context's
buffer, greedy decoding first checks the model's own choice (one token, not the
vocabulary), and once the grammar is complete only end-of-generation tokens are
considered, without asking the grammar again.
"""
from __future__ import annotations

import functools
import json
import os
import re
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from .._ffi import ffi, lib
from ..enums import TokenAttr
from ..errors import GrammarError, SchemaError
from ..sampler import TOKEN_DATA, Sampler, SamplerChain
from .json_schema import schema_to_gbnf

if TYPE_CHECKING:
    from ..context import Context
    from ..model import Model
    from ..vocab import Vocab

SYNTAXES = ("gbnf", "json_schema", "lark", "regex")
INSTALL_HINT = "grammar_backend='llguidance' needs the llguidance package: pip install 'llamapy[grammar]'"


@dataclass(frozen=True)
class Grammar:
    """What generated text must match, whichever engine enforces it.

    ``source`` is the grammar text (or the schema, for ``json_schema``). A lazy grammar
    (``trigger_patterns`` / ``trigger_tokens``) leaves the text free until a trigger
    appears: a token from ``trigger_tokens`` (constrained from that token on), or a
    regular expression from ``trigger_patterns`` matching the text generated so far
    (constrained from its first non-empty group, else from the start of the match; a
    pattern written ``^...$`` must match the whole text), as llama.cpp's lazy grammars do.
    """

    source: str | Mapping[str, Any]
    syntax: str = "gbnf"
    root: str = "root"
    trigger_patterns: tuple[str, ...] = ()
    trigger_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.syntax not in SYNTAXES:
            raise ValueError(f"unknown grammar syntax {self.syntax!r}; valid: {', '.join(SYNTAXES)}")
        if self.syntax == "json_schema":
            if not isinstance(self.source, Mapping):
                raise SchemaError("a JSON schema must be a mapping (a parsed JSON object)")
        elif not isinstance(self.source, str) or not self.source.strip():
            raise GrammarError(f"a {self.syntax} grammar must be non-empty text")
        for p in self.trigger_patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise GrammarError(f"invalid trigger pattern {p!r}: {e}") from None

    @classmethod
    def gbnf(cls, text: str, root: str = "root") -> Grammar:
        """llama.cpp's GBNF grammar format."""
        return cls(text, "gbnf", root)

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any]) -> Grammar:
        """JSON text valid against ``schema``."""
        return cls(schema, "json_schema")

    @classmethod
    def lark(cls, text: str) -> Grammar:
        """A Lark grammar (llguidance only)."""
        return cls(text, "lark")

    @classmethod
    def regex(cls, pattern: str) -> Grammar:
        """Text matching a regular expression (llguidance only)."""
        return cls(pattern, "regex")

    def lazy(self, patterns: Sequence[str] = (), tokens: Sequence[int] = ()) -> Grammar:
        """The same grammar, applied only from a trigger on (see the class notes)."""
        if not patterns and not tokens:
            raise ValueError("a lazy grammar needs at least one trigger pattern or token")
        return replace(self, trigger_patterns=tuple(patterns), trigger_tokens=tuple(int(t) for t in tokens))

    @property
    def is_lazy(self) -> bool:
        return bool(self.trigger_patterns or self.trigger_tokens)


class Constraint(ABC):
    """One sequence's position in a grammar: which tokens may come next.

    Engines that compute a bit mask of the vocabulary natively set ``bit_mask`` and offer
    :meth:`mask`, which the sampler turns into candidates in one C pass.
    """

    bit_mask: ClassVar[bool] = False

    def mask(self) -> np.ndarray | None:
        """The allowed tokens as uint32 words (token t: bit t % 32 of word t // 32); None while
        any token may. Only for engines with ``bit_mask``."""
        raise NotImplementedError(f"{type(self).__name__} computes no bit mask")

    def prefetch(self) -> None:
        """Start computing the next mask in the background (engines that can: while the model
        decodes the token just accepted); a no-op elsewhere."""

    @abstractmethod
    def allows(self, token: int) -> bool:
        """Whether ``token`` may come next (a check of one token, not of the vocabulary)."""

    @abstractmethod
    def allowed(self) -> np.ndarray | None:
        """The ids that may come next, ascending; None while any token may (a lazy grammar
        not yet triggered)."""

    @abstractmethod
    def accept(self, token: int) -> None:
        """Advance past a chosen token."""

    @abstractmethod
    def reset(self) -> None:
        """Back to the start of the grammar."""

    @property
    def complete(self) -> bool:
        """True when only end of generation may follow (where the engine knows it cheaply)."""
        return False


class GrammarBackend(ABC):
    """An engine that enforces grammars."""

    name: ClassVar[str]
    syntaxes: ClassVar[tuple[str, ...]]

    @abstractmethod
    def constraint(self, model: Model, grammar: Grammar) -> Constraint:
        """A fresh constraint for one sequence; a grammar the engine refuses raises GrammarError
        (SchemaError for a JSON schema), naming what it cannot handle."""

    def _check_syntax(self, grammar: Grammar) -> None:
        if grammar.syntax not in self.syntaxes:
            raise GrammarError(f"the {self.name} grammar backend does not read {grammar.syntax} grammars "
                               f"(it reads {', '.join(self.syntaxes)}); use grammar_backend='llguidance'")


# -- llama.cpp's grammar sampler --------------------------------------------------------
class LlamaConstraint(Constraint):
    """llama.cpp's grammar sampler used as a constraint: it marks rejected candidates -inf."""

    def __init__(self, sampler: Sampler, n_vocab: int):
        self._sampler = sampler
        self._template = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self._template["id"] = np.arange(n_vocab, dtype=np.int32)
        self._work = self._template.copy()
        self._one = np.zeros(1, dtype=TOKEN_DATA)

    def allows(self, token: int) -> bool:
        one = self._one
        one["id"], one["logit"] = token, 0.0
        return bool(self._sampler.apply(one)["logit"][0] == 0.0)

    def allowed(self) -> np.ndarray | None:
        work = self._work
        np.copyto(work, self._template)
        self._sampler.apply(work)
        ok = work["logit"] == 0.0  # the grammar sets rejected tokens to -inf, never reorders
        return None if ok.all() else np.flatnonzero(ok).astype(np.int32)

    def accept(self, token: int) -> None:
        if not self.allows(token):  # llama.cpp aborts the process on a token its grammar rejects
            raise GrammarError(f"the grammar does not allow token {token} here")
        self._sampler.accept(token)

    def reset(self) -> None:
        self._sampler.reset()

    def close(self) -> None:
        self._sampler.close()


class LlamaBackend(GrammarBackend):
    """llama.cpp's grammar sampler (GBNF; JSON schemas through :func:`schema_to_gbnf`)."""

    name = "llama"
    syntaxes = ("gbnf", "json_schema")

    def constraint(self, model: Model, grammar: Grammar) -> LlamaConstraint:
        self._check_syntax(grammar)
        text = schema_to_gbnf(grammar.source) if grammar.syntax == "json_schema" else grammar.source
        vocab = model.vocab
        if grammar.is_lazy:
            sampler = Sampler.grammar_lazy(vocab, text, grammar.root, grammar.trigger_patterns,
                                           grammar.trigger_tokens)
        else:
            sampler = Sampler.grammar(vocab, text, grammar.root)
        return LlamaConstraint(sampler, vocab.n_tokens)


# -- llguidance ---------------------------------------------------------------------------
def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        return None
    return llguidance


class _VocabTokenizer:
    """The model's vocabulary as llguidance's tokenizer wrapper reads it. Holds the model
    only weakly, so that a cached tokenizer never keeps a closed model in memory."""

    def __init__(self, model: Model, eog: list[int]):
        vocab = model.vocab
        self._model = weakref.ref(model)
        self.tokens = [vocab.token_to_bytes(t, special=True) for t in range(vocab.n_tokens)]
        self.special_token_ids = [t for t in range(vocab.n_tokens)
                                  if vocab.attributes(t) & TokenAttr.CONTROL and self.tokens[t]]
        self.eos_token_id = eog[0] if eog else vocab.eos
        self.bos_token_id = vocab.bos

    def __call__(self, text: bytes | str) -> list[int]:
        model = self._model()
        if model is None:
            raise GrammarError("the model of this grammar was freed")
        return model.vocab.tokenize(text, add_special=False, parse_special=False)


class _ModelGrammars:
    """What grammars need of one model, computed once: its end-of-generation tokens, the
    llguidance tokenizer (built on first use: it reads every token) and the compiled
    llguidance grammars most recently used (copied for each new sequence)."""

    MAX_GRAMMARS = 32

    def __init__(self, model: Model):
        self._model = weakref.ref(model)
        vocab = model.vocab
        self.n_vocab = vocab.n_tokens
        self.eog = np.asarray([t for t in range(vocab.n_tokens) if vocab.is_eog(t)], dtype=np.int32)
        self._tokenizer: Any = None
        self.matchers: dict[str, Any] = {}

    def tokenizer(self, llg: Any) -> Any:
        if self._tokenizer is None:
            model = self._model()
            assert model is not None  # the cache entry goes with the model
            eog = [int(t) for t in self.eog]
            wrapper = llg.TokenizerWrapper(_VocabTokenizer(model, eog))
            self._tokenizer = llg.LLTokenizer(wrapper, n_vocab=self.n_vocab, eos_token=eog)
        return self._tokenizer

    def matcher(self, llg: Any, compiled: str, what: str, error: type[GrammarError]) -> Any:
        """A fresh matcher at the start of ``compiled``; a grammar llguidance refuses raises ``error``."""
        m = self.matchers.pop(compiled, None)
        if m is None:
            tokenizer = self.tokenizer(llg)
            is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(compiled, tokenizer)
            if is_error:
                raise error(f"llguidance cannot use this {what}: {messages[0] if messages else 'invalid'}")
            m = llg.LLMatcher(tokenizer, compiled, log_level=0)
            if m.is_error():
                raise error(f"llguidance cannot use this {what}: {m.get_error()}")
            if len(self.matchers) >= self.MAX_GRAMMARS:
                self.matchers.pop(next(iter(self.matchers)))
        self.matchers[compiled] = m  # most recently used last
        return m.deep_copy()


_per_model: weakref.WeakKeyDictionary[Model, _ModelGrammars] = weakref.WeakKeyDictionary()


def _grammars_of(model: Model) -> _ModelGrammars:
    entry = _per_model.get(model)
    if entry is None:
        entry = _per_model[model] = _ModelGrammars(model)
    return entry


def eog_tokens(model: Model) -> np.ndarray:
    """Every end-of-generation token of a model (EOS, EOT, <|im_end|>, ...), ascending."""
    return _grammars_of(model).eog


def llguidance_tokenizer(model: Model) -> Any:
    """The llguidance tokenizer of a model (built from its vocabulary once, then cached)."""
    llg = _llguidance()
    if llg is None:
        raise GrammarError(INSTALL_HINT)
    return _grammars_of(model).tokenizer(llg)


# JSON text as schema_to_gbnf writes it: no newlines, at most one space after separators,
# oneOf read as anyOf.
_JSON_OPTIONS = {"whitespace_flexible": False, "whitespace_pattern": " ?", "item_separator": ",",
                 "key_separator": ":", "coerce_one_of": True}


_SUBSCHEMA = ("additionalProperties", "items", "not", "if", "then", "else", "contains", "propertyNames",
              "unevaluatedItems", "unevaluatedProperties")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


_MAX_INTEGER = 10**16 - 1  # schema_to_gbnf's integers have at most 16 digits
_MAX_STRING = 256  # ... and its free strings at most 256 characters


def _bounded(schema: Any) -> Any:
    """The schema with the limits schema_to_gbnf's grammars have where it sets none: objects
    that list properties hold only those keys, free strings have at most 256 characters,
    integers at most 16 digits. Both backends then accept the same kind of output, and a
    sampled string or number cannot run on until max_tokens."""
    if not isinstance(schema, Mapping):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA:
        if isinstance(out.get(key), Mapping):
            out[key] = _bounded(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_bounded(s) for s in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), Mapping):
            out[key] = {name: _bounded(s) for name, s in out[key].items()}
    if out.get("properties") and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    types = out.get("type") if isinstance(out.get("type"), list) else [out.get("type")]
    free = not any(k in out for k in ("enum", "const", "format", "pattern"))
    if "string" in types and free and "maxLength" not in out:
        out["maxLength"] = _MAX_STRING
    if "integer" in types and free:
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = _MAX_INTEGER
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -_MAX_INTEGER
    return out


def _compile(llg: Any, grammar: Grammar) -> tuple[str, str, type]:
    """The llguidance grammar for ``grammar``, what to call it in errors, and the error class."""
    if grammar.syntax == "json_schema":
        try:
            schema = json.dumps(_bounded(grammar.source))
            text = llg.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)
        except (ValueError, TypeError) as e:
            raise SchemaError(f"llguidance cannot use this JSON schema: {e}") from None
        return text, "JSON schema", SchemaError
    if grammar.syntax == "gbnf":
        lark = grammar.source
        if grammar.root != "root":
            lark = f"root ::= {grammar.root}\n{lark}"
        try:
            return llg.grammar_from("gbnf", lark), "GBNF grammar", GrammarError
        except ValueError as e:
            raise GrammarError(f"llguidance cannot use this GBNF grammar: {e}") from None
    if grammar.syntax == "lark":
        return llg.LLMatcher.grammar_from_lark(grammar.source), "Lark grammar", GrammarError
    return llg.LLMatcher.grammar_from_regex(grammar.source), "regular expression", GrammarError


def _spare_core(ctx: Context) -> bool:
    """Whether a core is left over while the model decodes (the context does not use them all):
    only then does computing the next mask meanwhile save time rather than slow the decode."""
    return (os.cpu_count() or 1) > max(ctx.n_threads, ctx.n_threads_batch)


@functools.cache
def _mask_worker() -> ThreadPoolExecutor:
    """The thread that computes prefetched masks (llguidance releases the GIL meanwhile)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamapy-mask")


class LLGuidanceConstraint(Constraint):
    """An llguidance matcher: one call computes the bit mask of the whole vocabulary."""

    bit_mask = True

    def __init__(self, matcher: Any, n_vocab: int, triggers: _Triggers | None = None):
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._mask = np.full((n_vocab + 31) // 32, 0xFFFFFFFF, dtype=np.uint32)
        self._mask_ptr = self._mask.ctypes.data
        self._triggers = triggers
        self._waiting = triggers is not None
        self._pending: Future | None = None  # a mask being computed in the background
        self._fresh = False  # the mask buffer holds the mask of the current position

    def _settle(self) -> None:
        """Wait for a background mask: the matcher serves one caller at a time."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
            self._fresh = True

    def _compute(self) -> None:
        self._matcher.unsafe_compute_mask_ptr(self._mask_ptr, self._mask.nbytes)  # drops the GIL

    def prefetch(self) -> None:
        if not self._waiting and self._pending is None and not self._fresh:
            self._pending = _mask_worker().submit(self._compute)

    def allows(self, token: int) -> bool:
        self._settle()
        return self._waiting or self._matcher.validate_tokens([token]) == 1

    def mask(self) -> np.ndarray | None:
        self._settle()
        if self._waiting:
            return None
        m = self._matcher
        if not self._fresh:
            self._compute()
            self._fresh = True
        if m.is_error():
            raise GrammarError(f"grammar error: {m.get_error()}")
        return self._mask

    def allowed(self) -> np.ndarray | None:
        mask = self.mask()
        if mask is None:
            return None
        bits = np.unpackbits(mask.view(np.uint8), count=self._n_vocab, bitorder="little")
        return np.flatnonzero(bits).astype(np.int32)

    def accept(self, token: int) -> None:
        self._settle()
        self._fresh = False
        if self._triggers is not None and self._waiting:
            tokens = self._triggers.push(token)
            if tokens is None:
                return
            self._waiting = False
            ok = self._matcher.consume_tokens(tokens)
        else:
            ok = self._matcher.consume_token(token)
        if not ok:
            raise GrammarError(f"the grammar rejected the generated text: {self._matcher.get_error()}")

    def reset(self) -> None:
        self._settle()
        self._fresh = False
        self._matcher.reset()
        if self._triggers is not None:
            self._triggers.reset()
            self._waiting = True

    @property
    def complete(self) -> bool:
        self._settle()
        return not self._waiting and self._matcher.is_stopped()


class _Triggers:
    """Watches the free text before a lazy grammar starts; once a trigger appears, gives the
    tokens the grammar must read first (same rules as llama.cpp's lazy grammars)."""

    def __init__(self, grammar: Grammar, vocab: Vocab):
        self._vocab = vocab
        self._tokens = frozenset(grammar.trigger_tokens)
        self._patterns = [(re.compile(p.encode()), p.startswith("^") and p.endswith("$"))
                          for p in grammar.trigger_patterns]
        self._text = b""

    def push(self, token: int) -> list[int] | None:
        """Note a generated token; the tokens to feed the grammar once triggered, else None."""
        if token in self._tokens:
            return [token]
        self._text += self._vocab.token_to_bytes(token, special=True)
        for pattern, whole in self._patterns:
            m = pattern.fullmatch(self._text) if whole else pattern.search(self._text)
            if m is not None:
                start = next((m.start(g) for g in range(1, pattern.groups + 1) if m.group(g)), m.start())
                return self._vocab.tokenize(self._text[start:], add_special=False, parse_special=True)
        return None

    def reset(self) -> None:
        self._text = b""


class LLGuidanceBackend(GrammarBackend):
    """The llguidance engine: JSON schema, GBNF, Lark and regular expressions."""

    name = "llguidance"
    syntaxes = SYNTAXES

    def __init__(self) -> None:
        self._llg = _llguidance()
        if self._llg is None:
            raise GrammarError(INSTALL_HINT)

    def constraint(self, model: Model, grammar: Grammar) -> LLGuidanceConstraint:
        self._check_syntax(grammar)
        grammars = _grammars_of(model)
        compiled, what, error = _compile(self._llg, grammar)
        matcher = grammars.matcher(self._llg, compiled, what, error)
        triggers = _Triggers(grammar, model.vocab) if grammar.is_lazy else None
        return LLGuidanceConstraint(matcher, grammars.n_vocab, triggers)


# -- choosing a backend -------------------------------------------------------------------
BACKENDS: dict[str, type[GrammarBackend]] = {"llama": LlamaBackend, "llguidance": LLGuidanceBackend}


def available_backends() -> list[str]:
    """The grammar backends usable here, fastest first."""
    return (["llguidance"] if _llguidance() is not None else []) + ["llama"]


def default_backend() -> str:
    """The fastest backend installed: llguidance when it is, else llama.cpp's."""
    return available_backends()[0]


def backend(name: str | None = None) -> GrammarBackend:
    """The backend called ``name`` ("llama" or "llguidance"; None: the default)."""
    key = default_backend() if name is None else name
    if key not in BACKENDS:
        raise ValueError(f"unknown grammar_backend {name!r}; valid: {', '.join(BACKENDS)}")
    return BACKENDS[key]()


def make_constraint(model: Model, grammar: Grammar, backend_name: str | None = None) -> Constraint:
    """The constraint for ``grammar``. With no backend named, a GBNF grammar that llguidance
    refuses goes to llama.cpp's, whose format it is. (A JSON schema does not: llguidance
    implements more of JSON schema, so what it refuses is refused, not weakened.)"""
    if backend_name is not None or default_backend() == "llama":
        return backend(backend_name).constraint(model, grammar)
    try:
        return LLGuidanceBackend().constraint(model, grammar)
    except GrammarError as first:
        if grammar.syntax != "gbnf":
            raise
        try:
            return LlamaBackend().constraint(model, grammar)
        except GrammarError as second:
            raise type(second)(f"{second} (llguidance: {first})") from None


# -- sampling through a grammar -----------------------------------------------------------
class ConstrainedSampler:
    """A grammar in front of a llama.cpp sampler chain.

    ``sample(ctx, idx)`` chooses the next token of a sequence the way ``SamplerChain.sample``
    does, among the tokens the grammar allows, and advances both. The chain sees only the
    allowed tokens (filtering first and sampling among the rest is what a grammar sampler at
    the head of the chain does). A chain ending in greedy is deterministic: its choice over
    the whole vocabulary, when the grammar allows it, is its choice over the allowed tokens,
    so that one token is checked first and the grammar's mask is computed only when it fails.
    """

    def __init__(self, constraint: Constraint, chain: SamplerChain, model: Model):
        if not chain.selects:
            raise GrammarError("the sampler chain behind a grammar must end with one that picks the token")
        self.constraint = constraint
        self.chain = chain
        self._eog = eog_tokens(model)
        self._greedy = chain._greedy_flags[-1]
        self._full: np.ndarray | None = None  # all candidates, for a greedy chain with penalties
        self._cand: np.ndarray | None = None  # candidates of a bit mask, reused
        self._n_vocab = model.vocab.n_tokens
        self._complete = False

    @property
    def complete(self) -> bool:
        """Whether the grammar is known to allow only end of generation now."""
        return self._complete

    def sample(self, ctx: Context, idx: int = -1) -> int:
        """Choose a token allowed by the grammar from output ``idx`` of the last decode, and accept it."""
        chain, c = self.chain, self.constraint
        if not self._complete and c.complete:
            self._complete = True
        if self._complete:  # nothing but end of generation: the grammar need not be asked again
            return self._pick(ctx, idx, self._eog)
        if self._greedy:
            tok = self._unconstrained_greedy(ctx, idx)
            if c.allows(tok):
                chain.accept(tok)
                c.accept(tok)
                return tok
        if c.bit_mask:
            mask = c.mask()
            cand = None if mask is None else self._masked(ctx, idx, mask)
            ids = None if cand is None else cand["id"]
        else:
            ids = c.allowed()
            cand = None
        if ids is None:  # a lazy grammar still waiting for its trigger
            tok = chain.sample(ctx, idx)
            c.accept(tok)
            return tok
        if ids.size == 0:
            raise GrammarError("the grammar allows no token here (and not end of generation either)")
        if ids.size <= self._eog.size and np.isin(ids, self._eog).all():
            self._complete = True
            return self._pick(ctx, idx, ids)
        tok = self._pick(ctx, idx, ids) if cand is None else self._choose(cand)
        c.accept(tok)
        if not self._greedy and _spare_core(ctx):  # (greedy checks the model's own choice first)
            c.prefetch()  # the next mask, computed while the model decodes this token
        return tok

    def _masked(self, ctx: Context, idx: int, mask: np.ndarray) -> np.ndarray:
        """The candidates ``mask`` allows, with their logits from output ``idx`` (a view of a buffer
        reused at every step, filled by one C pass over the mask)."""
        buf = self._cand
        if buf is None:
            buf = self._cand = np.empty(self._n_vocab, dtype=TOKEN_DATA)
        n = lib.llamapy_masked_candidates(ctx._ptr, idx, ffi.from_buffer("uint32_t[]", mask), self._n_vocab,
                                          ffi.from_buffer("llama_token_data[]", buf))
        if n < 0:
            raise IndexError(f"no logits for output {idx} of the last decode (request them in the batch)")
        return buf[:n]

    def _choose(self, cand: np.ndarray) -> int:
        """Let the chain choose among candidates that hold their logits, and accept it."""
        chain = self.chain
        if chain._only_greedy:
            return int(cand["id"][int(np.argmax(cand["logit"]))])  # the first largest, as greedy picks
        chain.apply(cand)
        tok = int(cand["id"][chain.selected])
        chain.accept(tok)
        return tok

    def _unconstrained_greedy(self, ctx: Context, idx: int) -> int:
        """What a greedy chain picks over the whole vocabulary, without accepting it."""
        chain = self.chain
        if chain._only_greedy:
            return chain.sample(ctx, idx)  # a C argmax over the logits
        logits = ctx.logits(idx)
        full = self._full
        if full is None:
            full = self._full = np.zeros(logits.size, dtype=TOKEN_DATA)
        full["id"] = np.arange(logits.size, dtype=np.int32)  # a sampler may have reordered them
        full["logit"], full["p"] = logits, 0.0
        chain.apply(full)
        return int(full["id"][chain.selected])

    def _pick(self, ctx: Context, idx: int, ids: np.ndarray) -> int:
        """Let the chain choose among ``ids`` (reading their logits from the context) and accept it."""
        chain = self.chain
        logits = ctx.logits(idx)[ids]
        if chain._only_greedy:
            return int(ids[int(np.argmax(logits))])  # the first largest, as llama.cpp's greedy picks
        cand = np.empty(ids.size, dtype=TOKEN_DATA)
        cand["id"], cand["logit"], cand["p"] = ids, logits, 0.0
        chain.apply(cand)
        tok = int(cand["id"][chain.selected])
        chain.accept(tok)
        return tok

    def accept(self, token: int) -> None:
        """Advance past a token chosen elsewhere."""
        self.chain.accept(token)
        if not self._complete:
            self.constraint.accept(token)

    def reset(self) -> None:
        self.chain.reset()
        self.constraint.reset()
        self._complete = False

    def close(self) -> None:
        self.chain.close()
        if isinstance(self.constraint, LlamaConstraint):
            self.constraint.close()


def constrain(model: Model, grammar: Grammar, chain: SamplerChain, backend_name: str | None = None
              ) -> ConstrainedSampler:
    """``chain`` behind ``grammar``, enforced by the named backend (None: the fastest installed)."""
    return ConstrainedSampler(make_constraint(model, grammar, backend_name), chain, model)


__all__ = ["Grammar", "GrammarBackend", "Constraint", "LlamaBackend", "LLGuidanceBackend", "ConstrainedSampler",
           "constrain", "make_constraint", "backend", "available_backends", "default_backend",
           "llguidance_tokenizer", "eog_tokens", "BACKENDS"]

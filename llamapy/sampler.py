"""Samplers: every built-in llama.cpp sampler, chains of them, and samplers written in Python."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from . import _ffi
from ._ffi import ffi, lib
from ._handle import CObject, Handle
from ._params import StructParams
from .errors import GrammarError, LlamaError

if TYPE_CHECKING:
    from .context import Context
    from .vocab import Vocab

TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
_PYTHON_SAMPLER = object()  # marks handles that depend on a sampler written in Python


def _check_clonable(parents: Any) -> None:
    if _PYTHON_SAMPLER in parents:
        raise LlamaError("a sampler written in Python (or a chain containing one) cannot be cloned")


class Sampler(CObject):
    """One llama.cpp sampler. It owns its C object until added to a :class:`SamplerChain`."""

    def __init__(self) -> None:
        raise TypeError("use a factory such as Sampler.top_k(40), or SamplerChain")

    selects = False  # whether this sampler picks the token (greedy, dist, mirostat, ...)
    _only_greedy = False  # plain greedy: sampled by a C argmax, token-identical and faster

    @classmethod
    def _make(cls, ptr: Any, *parents: CObject, keep: tuple = (), selects: bool = False) -> Sampler:
        if ptr == ffi.NULL:
            raise ValueError("llama.cpp refused to create the sampler (check its arguments)")
        self = object.__new__(cls)
        self._own(ptr, lib.llama_sampler_free, *parents, keep=keep)
        self.selects = selects
        return self

    # -- factories: one per llama_sampler_init_* ----------------------------------------
    @classmethod
    def greedy(cls) -> Sampler:
        """Always the most probable token."""
        s = cls._make(lib.llama_sampler_init_greedy(), selects=True)
        s._only_greedy = True
        return s

    @classmethod
    def dist(cls, seed: int | None = None) -> Sampler:
        """Draw from the distribution (seed None: random)."""
        return cls._make(lib.llama_sampler_init_dist(_seed(seed)), selects=True)

    @classmethod
    def top_k(cls, k: int) -> Sampler:
        return cls._make(lib.llama_sampler_init_top_k(k))

    @classmethod
    def top_p(cls, p: float, min_keep: int = 1) -> Sampler:
        return cls._make(lib.llama_sampler_init_top_p(p, min_keep))

    @classmethod
    def min_p(cls, p: float, min_keep: int = 1) -> Sampler:
        return cls._make(lib.llama_sampler_init_min_p(p, min_keep))

    @classmethod
    def typical(cls, p: float, min_keep: int = 1) -> Sampler:
        return cls._make(lib.llama_sampler_init_typical(p, min_keep))

    @classmethod
    def temp(cls, t: float) -> Sampler:
        return cls._make(lib.llama_sampler_init_temp(t))

    @classmethod
    def temp_ext(cls, t: float, delta: float, exponent: float = 1.0) -> Sampler:
        """Dynamic temperature."""
        return cls._make(lib.llama_sampler_init_temp_ext(t, delta, exponent))

    @classmethod
    def xtc(cls, p: float, t: float, min_keep: int = 1, seed: int | None = None) -> Sampler:
        return cls._make(lib.llama_sampler_init_xtc(p, t, min_keep, _seed(seed)))

    @classmethod
    def top_n_sigma(cls, n: float) -> Sampler:
        return cls._make(lib.llama_sampler_init_top_n_sigma(n))

    @classmethod
    def mirostat(cls, n_vocab: int, seed: int | None = None, tau: float = 5.0, eta: float = 0.1,
                 m: int = 100) -> Sampler:
        return cls._make(lib.llama_sampler_init_mirostat(n_vocab, _seed(seed), tau, eta, m), selects=True)

    @classmethod
    def mirostat_v2(cls, seed: int | None = None, tau: float = 5.0, eta: float = 0.1) -> Sampler:
        return cls._make(lib.llama_sampler_init_mirostat_v2(_seed(seed), tau, eta), selects=True)

    @classmethod
    def grammar(cls, vocab: Vocab, grammar: str, root: str = "root") -> Sampler:
        """Constrain output to a GBNF grammar; a grammar that does not parse raises GrammarError."""
        _ffi.last_error_reset()
        ptr = lib.llama_sampler_init_grammar(vocab._ptr, grammar.encode(), root.encode())
        return cls._grammar_result(ptr, vocab)

    @classmethod
    def grammar_lazy(cls, vocab: Vocab, grammar: str, root: str = "root", trigger_patterns: Sequence[str] = (),
                     trigger_tokens: Sequence[int] = ()) -> Sampler:
        """A grammar that only starts constraining once a trigger pattern or token appears."""
        pats = [ffi.new("char[]", p.encode()) for p in trigger_patterns]
        pat_arr = ffi.new("const char *[]", pats) if pats else ffi.NULL
        toks = ffi.new("llama_token[]", list(trigger_tokens)) if trigger_tokens else ffi.NULL
        _ffi.last_error_reset()
        ptr = lib.llama_sampler_init_grammar_lazy_patterns(vocab._ptr, grammar.encode(), root.encode(), pat_arr,
                                                           len(pats), toks, len(trigger_tokens))
        return cls._grammar_result(ptr, vocab)

    @classmethod
    def _grammar_result(cls, ptr: Any, vocab: Vocab) -> Sampler:
        if ptr == ffi.NULL:
            detail = _ffi.last_error or "see llamapy.set_verbose() for llama.cpp's message"
            raise GrammarError(f"invalid grammar: {detail}")
        return cls._make(ptr, vocab)

    @classmethod
    def penalties(cls, last_n: int = 64, repeat: float = 1.0, frequency: float = 0.0,
                  presence: float = 0.0, n_vocab: int = 0) -> Sampler:
        """Repetition, frequency and presence penalties over the last ``last_n`` tokens."""
        return cls._make(lib.llama_sampler_init_penalties(n_vocab, last_n, repeat, frequency, presence))

    @classmethod
    def dry(cls, vocab: Vocab, multiplier: float = 0.8, base: float = 1.75, allowed_length: int = 2,
            penalty_last_n: int = 1024, seq_breakers: Sequence[str] = ("\n", ":", '"', "*")) -> Sampler:
        """DRY ("don't repeat yourself") penalty over the last ``penalty_last_n`` tokens.

        A multiplier of 0 (or a window of 0) gives a disabled placeholder named "?dry"."""
        if penalty_last_n < 0:
            raise ValueError("dry: penalty_last_n is a window in tokens (>= 0); pass e.g. the context size")
        brk = [ffi.new("char[]", s.encode()) for s in seq_breakers]
        arr = ffi.new("const char *[]", brk) if brk else ffi.NULL
        return cls._make(lib.llama_sampler_init_dry(vocab._ptr, multiplier, base, allowed_length, penalty_last_n,
                                                    arr, len(brk)), vocab)

    @classmethod
    def logit_bias(cls, n_vocab: int, biases: Mapping[int, float]) -> Sampler:
        """Add a bias to the logits of given tokens (-inf forbids a token)."""
        arr = ffi.new("llama_logit_bias[]", [(int(t), float(b)) for t, b in biases.items()] or 1)
        return cls._make(lib.llama_sampler_init_logit_bias(n_vocab, len(biases), arr))

    @classmethod
    def infill(cls, vocab: Vocab) -> Sampler:
        """For fill-in-the-middle: prefers ending or continuing the infill sensibly."""
        return cls._make(lib.llama_sampler_init_infill(vocab._ptr), vocab)

    @classmethod
    def adaptive_p(cls, target: float, decay: float = 0.9, seed: int | None = None) -> Sampler:
        return cls._make(lib.llama_sampler_init_adaptive_p(target, decay, _seed(seed)), selects=True)

    @classmethod
    def custom(cls, impl: PySampler) -> Sampler:
        """A sampler written in Python (see :class:`PySampler`)."""
        return impl._to_sampler()

    # -- use ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return ffi.string(lib.llama_sampler_name(self._ptr)).decode()

    @property
    def seed(self) -> int:
        return lib.llama_sampler_get_seed(self._ptr)

    def sample(self, ctx: Context, idx: int = -1) -> int:
        """Choose a token from output ``idx`` of the last decode, and accept it."""
        ptr, cptr = self._ptr, ctx._ptr
        if self._only_greedy:
            tok = lib.llamapy_greedy(cptr, idx)
            if tok < 0:
                raise IndexError(f"no logits for output {idx} of the last decode (request them in the batch)")
            return tok
        if not self.selects:
            raise LlamaError(f"{self.name!r} does not choose a token: end the chain with greedy, dist, "
                             f"mirostat or adaptive_p")
        if lib.llama_get_logits_ith(cptr, idx) == ffi.NULL:
            raise IndexError(f"no logits for output {idx} of the last decode (request them in the batch)")
        return lib.llama_sampler_sample(ptr, cptr, idx)

    def accept(self, token: int) -> None:
        """Tell the sampler a token was chosen (updates penalties, grammar state, ...)."""
        lib.llama_sampler_accept(self._ptr, token)

    def apply(self, candidates: np.ndarray) -> np.ndarray:
        """Apply the sampler to candidates (a TOKEN_DATA array), in place; returns the kept ones
        in order (after ``selected`` is set, ``candidates[selected]`` is the choice)."""
        cand = np.ascontiguousarray(candidates, dtype=TOKEN_DATA)
        arr = ffi.new("llama_token_data_array *", {"data": ffi.from_buffer("llama_token_data[]", cand),
                                                   "size": len(cand), "selected": -1, "sorted": False})
        lib.llama_sampler_apply(self._ptr, arr)
        self.selected = arr.selected
        return cand[: arr.size]

    def reset(self) -> None:
        lib.llama_sampler_reset(self._ptr)

    def clone(self) -> Sampler:
        """An independent copy with the same state."""
        h = self._h
        _check_clonable(h.parents)
        ptr = lib.llama_sampler_clone(h.ptr)
        other = object.__new__(type(self))
        other._handle = Handle(ptr, lib.llama_sampler_free, h.parents)
        other.selects = self.selects
        other._only_greedy = self._only_greedy
        return other

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'(closed)' if self.closed else self.name}>"


def _seed(seed: int | None) -> int:
    return lib.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF


class SamplerChain(Sampler):
    """Samplers applied in order; the last one picks the token (greedy, dist, mirostat)."""

    def __init__(self, samplers: Sequence[Sampler] = (), no_perf: bool = True):
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = no_perf
        self._no_perf = no_perf
        self._deps: list[Any] = []
        self._selecting: list[bool] = []
        self._greedy_flags: list[bool] = []
        self._handle = Handle(lib.llama_sampler_chain_init(params), lib.llama_sampler_free, (self._deps,))
        for s in samplers:
            self.add(s)

    @classmethod
    def greedy(cls) -> SamplerChain:
        """A chain that always takes the most probable token."""
        return cls([Sampler.greedy()])

    def add(self, sampler: Sampler) -> SamplerChain:
        """Append a sampler; the chain takes it over (the sampler object is then closed)."""
        if sampler is self:
            raise ValueError("a chain cannot contain itself")
        h = sampler._h
        lib.llama_sampler_chain_add(self._ptr, h.ptr)
        self._deps.extend(h.parents)
        self._selecting.append(sampler.selects)
        self._greedy_flags.append(sampler._only_greedy)
        self._update_fast_path()
        h.release()
        sampler._handle = None
        return self

    def _update_fast_path(self) -> None:
        self._only_greedy = self._no_perf and self._greedy_flags == [True]

    @property
    def selects(self) -> bool:  # type: ignore[override]
        """A chain chooses a token when its last sampler does."""
        return bool(self._selecting) and self._selecting[-1]

    def remove(self, i: int) -> Sampler:
        """Take sampler ``i`` out of the chain; it becomes a standalone sampler again."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sampler index {i} out of range for a chain of {n}")
        ptr = lib.llama_sampler_chain_remove(self._ptr, i % n)
        s = object.__new__(Sampler)
        s._handle = Handle(ptr, lib.llama_sampler_free, tuple(self._deps))
        s.selects = self._selecting.pop(i % n)
        s._only_greedy = self._greedy_flags.pop(i % n)
        self._update_fast_path()
        return s

    def __len__(self) -> int:
        return lib.llama_sampler_chain_n(self._ptr)

    @property
    def names(self) -> list[str]:
        """The names of the samplers in order."""
        ptr = self._ptr
        return [ffi.string(lib.llama_sampler_name(lib.llama_sampler_chain_get(ptr, i))).decode()
                for i in range(lib.llama_sampler_chain_n(ptr))]

    def clone(self) -> SamplerChain:
        h = self._h
        _check_clonable(self._deps)
        other = object.__new__(SamplerChain)
        other._deps = list(self._deps)
        other._selecting = list(self._selecting)
        other._greedy_flags = list(self._greedy_flags)
        other._no_perf = self._no_perf
        other._only_greedy = self._only_greedy
        other._handle = Handle(lib.llama_sampler_clone(h.ptr), lib.llama_sampler_free, (other._deps,))
        return other

    def perf(self) -> tuple[float, int]:
        """(milliseconds spent sampling, number of samples), when created with no_perf=False."""
        d = lib.llama_perf_sampler(self._ptr)
        return d.t_sample_ms, d.n_sample

    def perf_reset(self) -> None:
        lib.llama_perf_sampler_reset(self._ptr)


def _adder(factory_name: str):
    factory = getattr(Sampler, factory_name)

    def add(self: SamplerChain, *args: Any, **kwargs: Any) -> SamplerChain:
        return self.add(factory(*args, **kwargs))

    add.__name__ = f"add_{factory_name}"
    add.__doc__ = f"Append :meth:`Sampler.{factory_name}` (same arguments); returns the chain."
    return add


for _name in ("greedy", "dist", "top_k", "top_p", "min_p", "typical", "temp", "temp_ext", "xtc", "top_n_sigma",
              "mirostat", "mirostat_v2", "grammar", "grammar_lazy", "penalties", "dry", "logit_bias", "infill",
              "adaptive_p", "custom"):
    setattr(SamplerChain, f"add_{_name}", _adder(_name))


class LlamaSamplerChainParams(StructParams):
    """``llama_sampler_chain_params`` with attribute access and llama.cpp's defaults."""

    _struct = "struct llama_sampler_chain_params"

    @staticmethod
    def _defaults() -> Any:
        return lib.llama_sampler_chain_default_params()


class LlamaSampler(SamplerChain):
    """The sampler class as other bindings spell it: a chain built with ``add_*`` calls.

    ``add_grammar(grammar)`` without a vocabulary is completed on the first ``sample(ctx, i)``,
    from the context's model. ``LlamaSampler.greedy(lib)`` accepts the library argument some
    APIs pass.
    """

    def __init__(self, params: LlamaSamplerChainParams | None = None):
        super().__init__(no_perf=bool(params.no_perf) if params is not None else True)
        self._pending_grammars: list[tuple[int, str, str]] = []

    @classmethod
    def greedy(cls, lib: Any = None) -> LlamaSampler:  # type: ignore[override]
        return cls().add_greedy()

    def add_grammar(self, *args: Any, **kwargs: Any) -> LlamaSampler:  # type: ignore[override]
        """``add_grammar(vocab, grammar, root="root")``, or ``add_grammar(grammar, root="root")``."""
        if args and not isinstance(args[0], str):
            return self.add(Sampler.grammar(*args, **kwargs))
        grammar = kwargs.pop("grammar", None) or args[0]
        root = kwargs.pop("root", None) or (args[1] if len(args) > 1 else "root")
        self._pending_grammars.append((len(self), grammar, root))
        return self

    def sample(self, ctx: Context, idx: int = -1) -> int:
        if self._pending_grammars:
            self._insert_grammars(ctx.model.vocab)
        return super().sample(ctx, idx)

    def _insert_grammars(self, vocab: Vocab) -> None:
        for position, grammar, root in reversed(self._pending_grammars):
            tail = [self.remove(position) for _ in range(len(self) - position)]
            self.add(Sampler.grammar(vocab, grammar, root))
            for sampler in tail:
                self.add(sampler)
        self._pending_grammars.clear()


# -- samplers written in Python ----------------------------------------------------------
_live_py_samplers: dict[int, Any] = {}


class PySampler:
    """Base class of samplers written in Python.

    Override :meth:`apply` (edit ``candidates["logit"]`` in place, or set ``self.selected``
    to choose a token index); optionally :meth:`accept` and :meth:`reset`. Only chains
    containing a Python sampler call into Python per token.
    """

    name = "python"
    selects = False  # set True if apply() always sets ``self.selected``
    selected: int | None = None

    def apply(self, candidates: np.ndarray) -> None:
        raise NotImplementedError

    def accept(self, token: int) -> None:
        pass

    def reset(self) -> None:
        pass

    def _to_sampler(self) -> Sampler:
        iface = ffi.new("struct llama_sampler_i *")
        iface.name = lib.llamapy_py_sampler_name
        iface.accept = lib.llamapy_py_sampler_accept
        iface.apply = lib.llamapy_py_sampler_apply
        iface.reset = lib.llamapy_py_sampler_reset
        iface.free = lib.llamapy_py_sampler_free
        handle = ffi.new_handle(self)
        name = ffi.new("char[]", self.name.encode())
        ptr = lib.llama_sampler_init(iface, handle)
        _live_py_samplers[int(ffi.cast("uintptr_t", ptr))] = (self, handle, iface, name)
        return Sampler._make(ptr, keep=(iface, _PYTHON_SAMPLER), selects=self.selects)


def _py(smpl: Any) -> PySampler:
    return ffi.from_handle(smpl.ctx)


@ffi.def_extern()
def llamapy_py_sampler_name(smpl: Any) -> Any:
    entry = _live_py_samplers.get(int(ffi.cast("uintptr_t", smpl)))
    return entry[3] if entry else ffi.NULL


@ffi.def_extern()
def llamapy_py_sampler_accept(smpl: Any, token: int) -> None:
    _py(smpl).accept(token)


@ffi.def_extern()
def llamapy_py_sampler_apply(smpl: Any, cur_p: Any) -> None:
    impl = _py(smpl)
    view = np.frombuffer(ffi.buffer(cur_p.data, cur_p.size * TOKEN_DATA.itemsize), dtype=TOKEN_DATA)
    impl.selected = None
    impl.apply(view)
    if impl.selected is not None and 0 <= int(impl.selected) < cur_p.size:
        cur_p.selected = int(impl.selected)
    elif impl.selects and cur_p.size:
        cur_p.selected = int(np.argmax(view["logit"]))  # promised a choice but made none: take the best
    cur_p.sorted = False


@ffi.def_extern()
def llamapy_py_sampler_reset(smpl: Any) -> None:
    _py(smpl).reset()


@ffi.def_extern()
def llamapy_py_sampler_free(smpl: Any) -> None:
    _live_py_samplers.pop(int(ffi.cast("uintptr_t", smpl)), None)


__all__ = ["Sampler", "SamplerChain", "PySampler", "TOKEN_DATA"]

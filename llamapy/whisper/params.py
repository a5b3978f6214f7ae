"""WhisperParams: every field of whisper.cpp's ``whisper_full_params``, by name.

The fields are read from the compiled struct itself, so a field whisper.cpp adds appears
here without a code change. Strings (``language``, ``initial_prompt``, ...) are kept alive
by the params object; ``prompt_tokens`` takes a list of token ids; nested structs
(``greedy``, ``beam_search``, ``vad_params``) are live views (``params.greedy.best_of = 3``),
with ``best_of``, ``beam_size`` and ``patience`` as shortcuts. The callback fields take
Python callables (see :class:`~llamapy.whisper.WhisperContext` for what each receives);
the ``*_user_data`` pointers are managed.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Any, Callable

from .._ffi import whisper

wffi, wlib = whisper()

STRUCT = "struct whisper_full_params"
FIELDS: tuple[str, ...] = tuple(name for name, _ in wffi.typeof(STRUCT).fields)
CALLBACKS = tuple(f for f in FIELDS if f.endswith("_callback"))
_STRINGS = {name for name, field in wffi.typeof(STRUCT).fields
            if field.type.kind == "pointer" and field.type.item.cname == "char"}
_MANAGED = {f for f in FIELDS if f.endswith("_user_data")} | {"prompt_n_tokens"}
_UNSUPPORTED = {"grammar_rules": "whisper grammars are not supported yet",
                "n_grammar_rules": "whisper grammars are not supported yet",
                "i_start_rule": "whisper grammars are not supported yet"}
_SHORTCUTS = {"best_of": ("greedy", "best_of"), "beam_size": ("beam_search", "beam_size"),
              "patience": ("beam_search", "patience")}


class SamplingStrategy(IntEnum):
    """whisper.cpp's decoding strategies (``enum whisper_sampling_strategy``)."""

    GREEDY = wlib.WHISPER_SAMPLING_GREEDY
    BEAM_SEARCH = wlib.WHISPER_SAMPLING_BEAM_SEARCH


def _strategy(value: Any) -> SamplingStrategy:
    if isinstance(value, str):
        try:
            return SamplingStrategy[value.upper().replace("-", "_").replace(" ", "_")]
        except KeyError:
            raise ValueError(f"unknown strategy {value!r}; use 'greedy' or 'beam_search'") from None
    return SamplingStrategy(value)


class WhisperParams:
    """Settings of one transcription (``whisper_full_params``), starting from whisper.cpp's defaults.

    ``WhisperParams("beam_search", language="auto", n_threads=4)`` sets fields at once;
    unknown names raise AttributeError, so a typo never goes unnoticed. Progress printing
    by whisper.cpp itself is off (use ``progress_callback``).
    """

    def __init__(self, strategy: str | int = SamplingStrategy.GREEDY, **fields: Any):
        strategy = _strategy(strategy)
        object.__setattr__(self, "_c", wffi.new(f"{STRUCT} *", wlib.whisper_full_default_params(strategy)))
        object.__setattr__(self, "_keep", {})
        object.__setattr__(self, "_callbacks", {})
        # each strategy's defaults leave the other's size at -1: keep both usable after a strategy change
        self._c.greedy.best_of = wlib.whisper_full_default_params(SamplingStrategy.GREEDY).greedy.best_of
        self._c.beam_search.beam_size = \
            wlib.whisper_full_default_params(SamplingStrategy.BEAM_SEARCH).beam_search.beam_size
        self._c.print_progress = False
        for name, value in fields.items():
            setattr(self, name, value)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The names of whisper_full_params' fields, in the struct's order."""
        return FIELDS

    def __getattr__(self, name: str) -> Any:
        if name in _SHORTCUTS:
            outer, inner = _SHORTCUTS[name]
            return getattr(getattr(self._c, outer), inner)
        if name in CALLBACKS:
            return self._callbacks.get(name)
        if name not in FIELDS:
            raise AttributeError(f"WhisperParams has no field {name!r}")
        value = getattr(self._c, name)
        if name in _STRINGS:
            return None if value == wffi.NULL else wffi.string(value).decode("utf-8", "replace")
        if name == "strategy":
            return SamplingStrategy(value)
        if name == "prompt_tokens":
            return [] if value == wffi.NULL else list(wffi.unpack(value, self._c.prompt_n_tokens))
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHORTCUTS:
            outer, inner = _SHORTCUTS[name]
            setattr(getattr(self._c, outer), inner, value)
        elif name in CALLBACKS:
            if value is not None and not callable(value):
                raise TypeError(f"{name} takes a Python callable or None")
            self._callbacks[name] = value
        elif name in _MANAGED:
            raise AttributeError(f"{name} is managed by llamapy (set the matching callable or prompt_tokens)")
        elif name in _UNSUPPORTED:
            raise AttributeError(f"{name}: {_UNSUPPORTED[name]}")
        elif name in _STRINGS:
            self._set_string(name, value)
        elif name == "strategy":
            self._c.strategy = _strategy(value)
        elif name == "prompt_tokens":
            tokens = wffi.new("whisper_token[]", list(value or ()))
            self._keep[name] = tokens
            self._c.prompt_tokens = tokens if value else wffi.NULL
            self._c.prompt_n_tokens = len(value or ())
        elif name in FIELDS:
            setattr(self._c, name, value)
        else:
            raise AttributeError(f"WhisperParams has no field {name!r}; fields: {', '.join(FIELDS)}")

    def _set_string(self, name: str, value: str | None) -> None:
        if value is None:
            self._keep.pop(name, None)
            setattr(self._c, name, wffi.NULL)
            return
        if not isinstance(value, str):
            raise TypeError(f"{name} takes a string or None")
        buf = wffi.new("char[]", value.encode("utf-8"))
        self._keep[name] = buf
        setattr(self._c, name, buf)

    def callback(self, name: str) -> Callable | None:
        return self._callbacks.get(name)

    def copy(self) -> WhisperParams:
        """An independent copy (strings, prompt tokens and callables included)."""
        other = WhisperParams(self.strategy)
        other._c[0] = self._c[0]
        for name in _STRINGS:
            setattr(other, name, getattr(self, name))
        other.prompt_tokens = self.prompt_tokens
        other._callbacks.update(self._callbacks)
        return other

    def to_dict(self) -> dict[str, Any]:
        """Plain values of the fields (nested structs as dicts, callbacks by presence)."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            if name in _MANAGED or name in _UNSUPPORTED:
                continue
            value = getattr(self, name)
            if isinstance(value, wffi.CData):
                value = {f: getattr(value, f) for f, _ in wffi.typeof(value).fields}
            elif name in CALLBACKS:
                value = value is not None
            out[name] = value
        return out

    def __repr__(self) -> str:
        d = self.to_dict()
        shown = ", ".join(f"{k}={d[k]!r}" for k in ("strategy", "language", "n_threads", "translate",
                                                      "temperature", "token_timestamps"))
        return f"WhisperParams({shown}, ...)"

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(FIELDS) | set(_SHORTCUTS))

    @property
    def c_struct(self) -> Any:
        """The underlying ``struct whisper_full_params *`` (for advanced use)."""
        return self._c

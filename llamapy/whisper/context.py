"""WhisperContext: a whisper.cpp model loaded for speech-to-text.

``transcribe`` runs ``whisper_full`` (cffi releases the GIL for the whole call, so other
Python threads keep running) and returns a :class:`TranscriptionResult`; ``stream`` runs
it in a worker thread and yields each segment as whisper.cpp finishes it. whisper.cpp
calls back into Python between encoder/decoder steps: that is where a Ctrl-C, a
``cancel()`` from another thread, or a Python abort callback stops the work cleanly (the
context stays usable). An exception raised by a Python callback is re-raised once
``whisper_full`` has returned.

Callables set on :class:`WhisperParams` receive: ``new_segment_callback(segment)``,
``progress_callback(percent)``, ``encoder_begin_callback() -> bool`` (False stops),
``abort_callback() -> bool`` (True stops), ``logits_filter_callback(tokens, logits)``
with ``logits`` a writable float32 numpy view of the next token's logits.
"""
from __future__ import annotations

import functools
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .._ffi import whisper
from .._handle import CObject
from ..errors import ClosedError, ModelLoadError
from .audio import SAMPLE_RATE, AudioSource, check_length, load_audio
from .errors import TranscriptionAborted, WhisperError
from .params import WhisperParams
from .result import Segment, Token, TranscriptionResult, group_words

wffi, wlib = whisper()

GGML_MAGIC = b"lmgg"  # 0x67676d6c, little-endian
ALL_F32 = 0  # ggml_ftype of a model whose matrices are float32
_FULL_ERRORS = {
    -1: "voice activity detection failed (check vad_model_path)",
    -2: "the log-mel spectrogram could not be computed",
    -3: "the language could not be detected",
    -4: "too many decoders requested (lower best_of / beam_size)",
    -5: "audio_ctx is larger than the model's audio context",
    -6: "the encoder failed",
    -7: "the decoder's KV cache could not be allocated (out of memory)",
    -8: "the decoder failed",
    -9: "the decoder failed",
}


# -- callbacks (created once; each call finds its transcription through user_data) ------
_escaped = threading.local()  # an exception that hit a callback before its own handler


def _escaped_error(exc_type: type, exc: BaseException, tb: Any) -> None:
    _escaped.exc = exc


def _escaped_abort(exc_type: type, exc: BaseException, tb: Any) -> bool:
    _escaped.exc = exc
    return True


def _escaped_stop(exc_type: type, exc: BaseException, tb: Any) -> bool:
    _escaped.exc = exc
    return False


_TYPES = {name: field.type for name, field in wffi.typeof("struct whisper_full_params").fields}


def _c_callback(name: str, onerror: Callable) -> Callable:
    return lambda fn: wffi.callback(_TYPES[name], fn, onerror=onerror)


@_c_callback("abort_callback", _escaped_abort)
def _on_abort(user_data: Any) -> bool:
    try:
        return wffi.from_handle(user_data).should_abort()
    except BaseException as e:  # noqa: BLE001 - Ctrl-C arrives here; stored and re-raised after the call
        return _fail(user_data, e, True)


@_c_callback("encoder_begin_callback", _escaped_stop)
def _on_encoder_begin(ctx: Any, state: Any, user_data: Any) -> bool:
    try:
        return wffi.from_handle(user_data).encoder_begin()
    except BaseException as e:  # noqa: BLE001
        return not _fail(user_data, e, True)


@_c_callback("new_segment_callback", _escaped_error)
def _on_new_segment(ctx: Any, state: Any, n_new: int, user_data: Any) -> None:
    try:
        wffi.from_handle(user_data).new_segments(state, n_new)
    except BaseException as e:  # noqa: BLE001
        _fail(user_data, e, None)


@_c_callback("progress_callback", _escaped_error)
def _on_progress(ctx: Any, state: Any, progress: int, user_data: Any) -> None:
    try:
        wffi.from_handle(user_data).progress(progress)
    except BaseException as e:  # noqa: BLE001
        _fail(user_data, e, None)


@_c_callback("logits_filter_callback", _escaped_error)
def _on_logits(ctx: Any, state: Any, tokens: Any, n_tokens: int, logits: Any, user_data: Any) -> None:
    try:
        wffi.from_handle(user_data).filter_logits(tokens, n_tokens, logits)
    except BaseException as e:  # noqa: BLE001
        _fail(user_data, e, None)


def _fail(user_data: Any, exc: BaseException, result: Any) -> Any:
    run = wffi.from_handle(user_data)
    if run.error is None:
        run.error = exc
    return result


class _Reader:
    """Reads whisper.cpp's results, from a callback's state or from the context's own.

    Times are clamped to the audio's duration: whisper.cpp ends a segment that has no
    closing timestamp at the end of its 30 s window, even past the end of the audio.
    """

    def __init__(self, wctx: WhisperContext, duration: float, state: Any = None):
        ctx = wctx._ptr
        self.duration = duration
        suffix, target = ("_from_state", state) if state is not None else ("", ctx)
        get = functools.partial
        self.n_segments = get(getattr(wlib, f"whisper_full_n_segments{suffix}"), target)
        self.t0 = get(getattr(wlib, f"whisper_full_get_segment_t0{suffix}"), target)
        self.t1 = get(getattr(wlib, f"whisper_full_get_segment_t1{suffix}"), target)
        self.text = get(getattr(wlib, f"whisper_full_get_segment_text{suffix}"), target)
        self.no_speech = get(getattr(wlib, f"whisper_full_get_segment_no_speech_prob{suffix}"), target)
        self.turn = get(getattr(wlib, f"whisper_full_get_segment_speaker_turn_next{suffix}"), target)
        self.n_tokens = get(getattr(wlib, f"whisper_full_n_tokens{suffix}"), target)
        self.token_data = get(getattr(wlib, f"whisper_full_get_token_data{suffix}"), target)
        self.token_text = get(wlib.whisper_full_get_token_text_from_state, ctx, state) if state is not None \
            else get(wlib.whisper_full_get_token_text, ctx)
        self.eot = wlib.whisper_token_eot(ctx)

    def seconds(self, centiseconds: int) -> float:
        return min(centiseconds / 100, self.duration)

    def segment(self, i: int, timed_tokens: bool) -> Segment:
        tokens, raw = [], []
        for j in range(self.n_tokens(i)):
            d = self.token_data(i, j)
            data = wffi.string(self.token_text(i, j))
            timed = timed_tokens and d.t0 >= 0
            tokens.append(Token(d.id, data.decode("utf-8", "replace"), d.p, d.plog,
                                self.seconds(d.t0) if timed else None, self.seconds(d.t1) if timed else None,
                                d.id >= self.eot))
            raw.append(data)
        tokens_t = tuple(tokens)
        return Segment(i, self.seconds(self.t0(i)), self.seconds(self.t1(i)),
                       wffi.string(self.text(i)).decode("utf-8", "replace"), tokens_t,
                       group_words(tokens_t, raw) if timed_tokens else (), self.no_speech(i), bool(self.turn(i)))


class _Run:
    """One transcription in flight: what whisper.cpp's callbacks call into."""

    def __init__(self, wctx: WhisperContext, params: WhisperParams, duration: float,
                 sink: Callable[[Segment], Any] | None = None):
        self.wctx = wctx
        self.params = params
        self.duration = duration
        self.sink = sink
        self.cancelled = False  # set by the consumer of a stream that stopped early
        self.stopped = False  # whisper.cpp was told to stop
        self.error: BaseException | None = None
        self.n_vocab = wctx.n_vocab

    def should_abort(self) -> bool:
        if not self.stopped:
            user = self.params.callback("abort_callback")
            self.stopped = self.cancelled or self.error is not None or self.wctx._cancel_requested or \
                (user is not None and bool(user()))
        return self.stopped

    def encoder_begin(self) -> bool:
        if not self.should_abort():
            user = self.params.callback("encoder_begin_callback")
            self.stopped = user is not None and user() is False
        return not self.stopped

    def new_segments(self, state: Any, n_new: int) -> None:
        reader = _Reader(self.wctx, self.duration, state)
        n = reader.n_segments()
        user = self.params.callback("new_segment_callback")
        for i in range(max(0, n - n_new), n):
            segment = reader.segment(i, bool(self.params.token_timestamps))
            if user is not None:
                user(segment)
            if self.sink is not None:
                self.sink(segment)

    def progress(self, percent: int) -> None:
        user = self.params.callback("progress_callback")
        if user is not None:
            user(int(percent))

    def filter_logits(self, tokens: Any, n_tokens: int, logits: Any) -> None:
        user = self.params.callback("logits_filter_callback")
        if user is not None:
            history = [Token(t.id, "", t.p, t.plog) for t in wffi.unpack(tokens, n_tokens)] if n_tokens else []
            user(history, np.frombuffer(wffi.buffer(logits, 4 * self.n_vocab), np.float32))


class WhisperContext(CObject):
    """A whisper.cpp model (ggml format) ready to transcribe.

    ``WhisperContext("ggml-tiny.en.bin")``; context settings of ``whisper_context_params``
    (``use_gpu``, ``flash_attn``, ``gpu_device``, ``dtw_token_timestamps``,
    ``dtw_aheads_preset``, ``dtw_n_top``) are keyword arguments. One transcription runs at
    a time per context (calls from other threads wait their turn).
    """

    def __init__(self, model_path: str | os.PathLike, **context_params: Any):
        path = Path(model_path).expanduser()
        _check_model_file(path)
        cparams = wlib.whisper_context_default_params()
        fields = {name for name, _ in wffi.typeof("struct whisper_context_params").fields}
        for name, value in context_params.items():
            if name not in fields or name in ("dtw_aheads", "dtw_mem_size"):
                raise TypeError(f"unknown whisper context setting {name!r}; "
                                f"known: {', '.join(sorted(fields - {'dtw_aheads', 'dtw_mem_size'}))}")
            if value is not None:
                setattr(cparams, name, value)
        ptr = wlib.whisper_init_from_file_with_params(str(path).encode(), cparams)
        if ptr == wffi.NULL:
            raise ModelLoadError(f"whisper.cpp could not load {path}: truncated, or not a whisper model "
                                 f"(llamapy.set_verbose() shows whisper.cpp's reason)")
        self._own(ptr, wlib.whisper_free)
        if wlib.whisper_model_ftype(ptr) == ALL_F32:
            self.close()
            raise ModelLoadError(f"{path} is a float32 whisper model, which whisper.cpp 1.8.5 cannot run (its "
                                 f"encoder's convolution needs float16 weights): convert it to float16, e.g. "
                                 f"`llamapy convert whisper-ct2 --out-type f16`")
        self.path = path
        self._lock = threading.Lock()
        self._cancel_requested = False

    # -- the model ------------------------------------------------------------------------
    n_vocab = property(lambda self: wlib.whisper_n_vocab(self._ptr))
    n_text_ctx = property(lambda self: wlib.whisper_n_text_ctx(self._ptr))
    n_audio_ctx = property(lambda self: wlib.whisper_n_audio_ctx(self._ptr))
    n_mels = property(lambda self: wlib.whisper_model_n_mels(self._ptr))
    n_audio_layer = property(lambda self: wlib.whisper_model_n_audio_layer(self._ptr))
    n_text_layer = property(lambda self: wlib.whisper_model_n_text_layer(self._ptr))
    ftype = property(lambda self: wlib.whisper_model_ftype(self._ptr))
    is_multilingual = property(lambda self: bool(wlib.whisper_is_multilingual(self._ptr)))

    @property
    def model_type(self) -> str:
        """"tiny", "base", "small", "medium" or "large"."""
        return wffi.string(wlib.whisper_model_type_readable(self._ptr)).decode()

    def token_to_str(self, token: int) -> str:
        if not 0 <= token < self.n_vocab:
            raise ValueError(f"token id {token} is out of range (0..{self.n_vocab - 1})")
        return wffi.string(wlib.whisper_token_to_str(self._ptr, token)).decode("utf-8", "replace")

    def tokenize(self, text: str) -> list[int]:
        """whisper.cpp's tokenizer (e.g. for ``WhisperParams.prompt_tokens``)."""
        data = text.encode()
        capacity = len(data) + 8
        out = wffi.new("whisper_token[]", capacity)
        n = wlib.whisper_tokenize(self._ptr, data, out, capacity)
        if n < 0:
            raise WhisperError(f"text too long to tokenize ({-n} tokens)")
        return list(out[0:n])

    # -- transcription ----------------------------------------------------------------------
    def transcribe(self, audio: AudioSource, params: WhisperParams | None = None,
                   sample_rate: int | None = None) -> TranscriptionResult:
        """Transcribe a file (WAV, or mp3/flac/ogg with a decoder) or an array of samples.

        ``sample_rate`` applies to arrays (default 16 kHz). Raises KeyboardInterrupt after a
        Ctrl-C, TranscriptionAborted after cancel() or an abort callback.
        """
        samples = self._samples(audio, sample_rate)
        params = params if params is not None else WhisperParams()
        return self._run(samples, _Run(self, params, samples.size / SAMPLE_RATE))

    def stream(self, audio: AudioSource, params: WhisperParams | None = None,
               sample_rate: int | None = None) -> Iterator[Segment]:
        """Yield segments as whisper.cpp decodes them (the work runs in a worker thread).

        Leaving the loop early (or Ctrl-C) stops the transcription; an error is raised at
        the end of the iteration.
        """
        samples = self._samples(audio, sample_rate)  # bad input fails here, not at the first next()
        return self._stream(samples, params if params is not None else WhisperParams())

    def _stream(self, samples: np.ndarray, params: WhisperParams) -> Iterator[Segment]:
        segments: queue.Queue = queue.Queue()
        done = object()
        run = _Run(self, params, samples.size / SAMPLE_RATE, sink=segments.put)
        outcome: dict[str, BaseException] = {}

        def work() -> None:
            try:
                self._run(samples, run)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer below
                outcome["error"] = e
            finally:
                segments.put(done)

        worker = threading.Thread(target=work, name="llamapy-whisper-stream", daemon=True)
        worker.start()
        try:
            while (item := segments.get()) is not done:
                yield item
        finally:
            if worker.is_alive():
                run.cancelled = True
            worker.join()
        if "error" in outcome:
            raise outcome["error"]

    def cancel(self) -> None:
        """Stop the transcription running in another thread (it raises TranscriptionAborted)."""
        self._cancel_requested = True

    def detect_language(self, audio: AudioSource, offset_s: float = 0.0, n_threads: int | None = None,
                        sample_rate: int | None = None) -> tuple[str, dict[str, float]]:
        """The most likely spoken language and every language's probability (multilingual models)."""
        if not self.is_multilingual:
            raise WhisperError(f"{self.path.name} is an English-only model: language detection needs a "
                               f"multilingual one")
        samples = self._samples(audio, sample_rate)
        threads = n_threads or WhisperParams().n_threads
        probs = wffi.new("float[]", wlib.whisper_lang_max_id() + 1)
        with self._lock:
            if wlib.whisper_pcm_to_mel(self._ptr, wffi.from_buffer("float[]", samples), samples.size, threads):
                raise WhisperError("the log-mel spectrogram could not be computed")
            best = wlib.whisper_lang_auto_detect(self._ptr, int(offset_s * 1000), threads, probs)
        if best < 0:
            raise WhisperError(f"language detection failed (offset {offset_s} s past the end of the audio?)")
        return language_code(best), {language_code(i): probs[i] for i in range(len(probs))}

    # -- internals --------------------------------------------------------------------------
    def _samples(self, audio: AudioSource, sample_rate: int | None) -> np.ndarray:
        if self.closed:  # fail before reading the audio
            raise ClosedError("this WhisperContext is closed")
        samples = load_audio(audio, sample_rate)
        check_length(samples, "the audio array" if isinstance(audio, np.ndarray) else str(audio))
        return samples

    def _run(self, samples: np.ndarray, run: _Run) -> TranscriptionResult:
        params = run.params
        c = wffi.new("struct whisper_full_params *", params.c_struct[0])
        for name, value in (("n_threads", c.n_threads), ("best_of", c.greedy.best_of),
                            ("beam_size", c.beam_search.beam_size)):
            if value < 1:  # whisper.cpp does not check these; 0 would break its thread pool or decoders
                raise ValueError(f"WhisperParams.{name} must be at least 1 (got {value})")
        handle = wffi.new_handle(run)
        c.abort_callback, c.abort_callback_user_data = _on_abort, handle
        c.encoder_begin_callback, c.encoder_begin_callback_user_data = _on_encoder_begin, handle
        if run.sink is not None or params.callback("new_segment_callback"):
            c.new_segment_callback, c.new_segment_callback_user_data = _on_new_segment, handle
        if params.callback("progress_callback"):
            c.progress_callback, c.progress_callback_user_data = _on_progress, handle
        if params.callback("logits_filter_callback"):
            c.logits_filter_callback, c.logits_filter_callback_user_data = _on_logits, handle
        buf = wffi.from_buffer("float[]", samples)
        with self._lock:
            self._cancel_requested = False
            _escaped.exc = None
            rc = wlib.whisper_full(self._ptr, c[0], buf, samples.size)
            error = run.error or _escaped.exc
            _escaped.exc = None
            if error is not None:
                raise error
            if run.stopped or self._cancel_requested:
                raise TranscriptionAborted("the transcription was stopped (cancel() or a callback)")
            if rc != 0:
                raise WhisperError(f"whisper.cpp could not transcribe: {_FULL_ERRORS.get(rc, f'error {rc}')}")
            reader = _Reader(self, run.duration)
            segments = [reader.segment(i, bool(params.token_timestamps)) for i in range(reader.n_segments())]
            language = language_code(wlib.whisper_full_lang_id(self._ptr))
        return TranscriptionResult(segments, language, run.duration, params.to_dict())

    def __repr__(self) -> str:
        if self.closed:
            return "WhisperContext(closed)"
        return f"WhisperContext({str(self.path)!r}, type={self.model_type!r}, multilingual={self.is_multilingual})"


def language_code(lang_id: int) -> str:
    """whisper.cpp's short code ("en", "de", ...) for a language id ("" if unknown)."""
    if not 0 <= lang_id <= wlib.whisper_lang_max_id():
        return ""
    return wffi.string(wlib.whisper_lang_str(lang_id)).decode()


def language_name(code: str) -> str:
    """The full name of a language code ("en" -> "english")."""
    lang_id = wlib.whisper_lang_id(code.encode())
    if lang_id < 0:
        raise ValueError(f"unknown language code {code!r}")
    return wffi.string(wlib.whisper_lang_str_full(lang_id)).decode()


def _check_model_file(path: Path) -> None:
    """A missing file is FileNotFoundError; a file of another format gets a message saying what it is."""
    if not path.exists():
        raise FileNotFoundError(f"whisper model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"{path} is not a file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == GGML_MAGIC:
        return
    if magic == b"GGUF":
        raise ModelLoadError(f"{path} is a GGUF file (a llama.cpp model); whisper needs a whisper.cpp ggml model: "
                             f"`llamapy pull whisper-tiny.en`, or convert one with `llamapy convert whisper-ct2`")
    raise ModelLoadError(f"{path} is not a whisper.cpp ggml model (it does not start with the ggml magic); "
                         f"convert a faster-whisper/CTranslate2 model with `llamapy convert whisper-ct2`")


"""The one import point of the compiled modules.

Gives ``ffi`` and ``lib`` of ``llamapy._cffi``, checks that they were compiled for this
package version, initialises the llama.cpp backend once, bridges llama.cpp/ggml logs
into the ``logging`` logger ``llamapy`` (quiet by default), and defines the
``extern "Python"`` callbacks the package uses. The whisper module is loaded lazily by
:func:`whisper`.
"""
from __future__ import annotations

import atexit
import logging
import threading
from typing import Any, Callable

from ._version import __version__
from .errors import BuildMismatchError

try:
    from ._cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise BuildMismatchError(
        f"llamapy's compiled module could not be loaded ({exc}); rebuild it with: pip install -e ."
    ) from exc



def check_module_version(module_version: str) -> None:
    """Refuse a compiled module that was built for another version of the package."""
    if module_version != __version__:
        raise BuildMismatchError(
            f"llamapy {__version__} found a compiled module built for {module_version}; "
            f"rebuild it with: pip install -e ."
        )


check_module_version(ffi.string(lib.llamapy_module_version()).decode())

logger = logging.getLogger("llamapy")
logger.addHandler(logging.NullHandler())

_GGML_TO_PY = {
    lib.GGML_LOG_LEVEL_DEBUG: logging.DEBUG,
    lib.GGML_LOG_LEVEL_INFO: logging.INFO,
    lib.GGML_LOG_LEVEL_WARN: logging.WARNING,
    lib.GGML_LOG_LEVEL_ERROR: logging.ERROR,
}
_log_buffer = threading.local()
last_error: str = ""  # the first error line llama.cpp logged since the last reset (for error messages)


@ffi.def_extern()
def llamapy_py_log(level: int, text: Any) -> None:
    """Collects log fragments into lines and hands each line to the ``llamapy`` logger."""
    pending = getattr(_log_buffer, "text", "") + ffi.string(text).decode("utf-8", "replace")
    *lines, rest = pending.split("\n")
    _log_buffer.text = rest
    global last_error
    for line in lines:
        if line.strip():
            if level == lib.GGML_LOG_LEVEL_ERROR and not last_error:
                last_error = line.strip()  # the first error explains best; later ones say "failed"
            logger.log(_GGML_TO_PY.get(level, logging.INFO), line)


def last_error_reset() -> None:
    global last_error
    last_error = ""


def set_log_level(level: int) -> None:
    """Forward llama.cpp messages at ``level`` (a ``logging`` level) and above."""
    if level <= logging.DEBUG:
        threshold = lib.GGML_LOG_LEVEL_DEBUG
    elif level <= logging.INFO:
        threshold = lib.GGML_LOG_LEVEL_INFO
    elif level <= logging.WARNING:
        threshold = lib.GGML_LOG_LEVEL_WARN
    else:
        threshold = lib.GGML_LOG_LEVEL_ERROR
    lib.llamapy_log_set_threshold(threshold)


def set_verbose(on: bool = True) -> None:
    """Show llama.cpp's own log (everything from DEBUG up) on stderr, or hide it again."""
    if on:
        if not any(getattr(h, "_llamapy_verbose", False) for h in logger.handlers):
            handler = logging.StreamHandler()
            handler._llamapy_verbose = True  # type: ignore[attr-defined]
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        set_log_level(logging.DEBUG)
    else:
        for h in [h for h in logger.handlers if getattr(h, "_llamapy_verbose", False)]:
            logger.removeHandler(h)
        set_log_level(logging.WARNING)


_interrupted = threading.local()


def _poll_error(exc_type: type, exc: BaseException, tb: Any) -> bool:
    """A signal handler raised during a C call (Ctrl-C): remember it and abort the call."""
    _interrupted.exc = exc
    return True


@ffi.def_extern(onerror=_poll_error)
def llamapy_py_poll() -> bool:
    """Called from long C work every few tens of ms: lets Python run pending signal handlers."""
    return False


def interrupt_pending() -> bool:
    return getattr(_interrupted, "exc", None) is not None


def take_interrupt() -> BaseException | None:
    """The exception (KeyboardInterrupt, ...) raised while C work polled, if any."""
    exc = getattr(_interrupted, "exc", None)
    _interrupted.exc = None
    return exc


def _progress_error(exc_type: type, exc: BaseException, tb: Any) -> bool:
    _interrupted.exc = exc
    return False


@ffi.def_extern(onerror=_progress_error)
def llamapy_py_progress(progress: float, user_data: Any) -> bool:
    """Model-load progress: the Python callable returns False (or raises) to cancel."""
    callback: Callable[[float], Any] = ffi.from_handle(user_data)
    result = callback(progress)
    return True if result is None else bool(result)


_init_lock = threading.Lock()
_initialized = False


def _initialize() -> None:
    global _initialized
    with _init_lock:
        if _initialized:
            return
        lib.llamapy_log_install(lib.GGML_LOG_LEVEL_WARN)
        lib.llama_backend_init()
        atexit.register(lib.llamapy_log_detach)
        _initialized = True


_initialize()

_whisper_lock = threading.Lock()
_whisper: tuple[Any, Any] | None = None


def whisper() -> tuple[Any, Any]:
    """``(ffi, lib)`` of the whisper.cpp module, loaded on first use."""
    global _whisper
    with _whisper_lock:
        if _whisper is None:
            from ._whisper_cffi import ffi as wffi, lib as wlib

            @wffi.def_extern()
            def llamapy_whisper_py_log(level: int, text: Any, user_data: Any) -> None:
                message = wffi.string(text).decode("utf-8", "replace").rstrip()
                if message:
                    loud = level in (wlib.GGML_LOG_LEVEL_WARN, wlib.GGML_LOG_LEVEL_ERROR)
                    logger.log(logging.WARNING if loud else logging.DEBUG, "whisper: %s", message)

            wlib.whisper_log_set(wlib.llamapy_whisper_py_log, wffi.NULL)
            _whisper = (wffi, wlib)
        return _whisper

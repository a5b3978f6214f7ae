"""Model: a loaded GGUF model (``llama_model_*``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import _ffi
from ._ffi import ffi, lib
from ._handle import CObject
from ._compat import CallableBool, CallableInt
from ._params import StructParams, enum_value, fill
from .enums import LoadMode, RopeType
from .errors import ModelLoadError
from .system import Device
from .vocab import Vocab

ProgressCallback = Callable[[float], Any]


def check_model_file(path: str | os.PathLike) -> Path:
    """Raise FileNotFoundError / IsADirectoryError / ModelLoadError before C sees a bad path."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"model file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"expected a GGUF model file, got a directory: {p}")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"{p} is not a GGUF model file (it starts with {magic!r}, not b'GGUF')")
    return p


def _kv_overrides(overrides: Mapping[str, Any]) -> Any:
    arr = ffi.new("struct llama_model_kv_override[]", len(overrides) + 1)
    for item, (key, value) in zip(arr, overrides.items()):
        k = key.encode()
        if len(k) >= 128:
            raise ValueError(f"kv_overrides key too long (max 127 bytes): {key!r}")
        item.key = k
        if isinstance(value, bool):
            item.tag, item.val_bool = lib.LLAMA_KV_OVERRIDE_TYPE_BOOL, value
        elif isinstance(value, int):
            item.tag, item.val_i64 = lib.LLAMA_KV_OVERRIDE_TYPE_INT, value
        elif isinstance(value, float):
            item.tag, item.val_f64 = lib.LLAMA_KV_OVERRIDE_TYPE_FLOAT, value
        elif isinstance(value, str):
            v = value.encode()
            if len(v) >= 128:
                raise ValueError(f"kv_overrides string value too long (max 127 bytes) for {key!r}")
            item.tag, item.val_str = lib.LLAMA_KV_OVERRIDE_TYPE_STR, v
        else:
            raise TypeError(f"kv_overrides[{key!r}]: expected bool, int, float or str, got {type(value).__name__}")
    return arr


def _devices(devices: Sequence[Device | str]) -> Any:
    arr = ffi.new("ggml_backend_dev_t[]", len(devices) + 1)
    for i, d in enumerate(devices):
        name = d.name if isinstance(d, Device) else str(d)
        dev = lib.ggml_backend_dev_by_name(name.encode())
        if dev == ffi.NULL:
            raise ValueError(f"unknown device {name!r}; see llamapy.backends()")
        arr[i] = dev
    return arr


def _placement(devices: Sequence[Device | str] | None,
               rpc_servers: str | Sequence[str] | None) -> tuple[Sequence[Device | str] | None, list[str]]:
    """The device list to load on and the RPC servers it involves.

    Servers in ``rpc_servers`` are checked and registered; their devices go first (as
    llama.cpp orders them), then the local GPUs. Without ``rpc_servers`` and with servers
    registered in this process for other models, the local devices are named so that
    this model stays local.
    """
    from . import rpc

    if rpc_servers:
        names = rpc.add_servers(rpc_servers)
        if devices is None:
            devices = names + rpc.local_offload_devices()
    elif devices is None and rpc.registered_servers():
        devices = rpc.local_offload_devices()
    if devices is None:
        return None, []
    endpoints = rpc.endpoints_of([d.name if isinstance(d, Device) else str(d) for d in devices])
    if endpoints and not rpc_servers:
        rpc.check_servers(endpoints)
    return devices, endpoints


def _load_mode(use_mmap: bool | None, use_mlock: bool | None, default: int) -> int:
    if use_mmap is None and use_mlock is None:
        return default
    mmap = use_mmap if use_mmap is not None else default in (lib.LLAMA_LOAD_MODE_MMAP, lib.LLAMA_LOAD_MODE_MMAP_MLOCK,
                                                             lib.LLAMA_LOAD_MODE_AUTO)
    mlock = bool(use_mlock)
    return {(True, True): LoadMode.MMAP_MLOCK, (True, False): LoadMode.MMAP,
            (False, True): LoadMode.MLOCK, (False, False): LoadMode.NONE}[(bool(mmap), mlock)]


class _ProgressBar:
    """A one-line progress bar on stderr for model loading."""

    def __init__(self, name: str):
        self.name = name
        self.last = -1

    def __call__(self, progress: float) -> bool:
        pct = int(progress * 100)
        if pct != self.last:
            self.last = pct
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\rloading {self.name} [{bar:<25}] {pct:3d}%")
            if pct >= 100:
                sys.stderr.write("\n")
            sys.stderr.flush()
        return True


def _poll_only(progress: float) -> bool:
    return True


class _Tracked:
    """Wraps the user's progress callback to know whether it asked to cancel."""

    def __init__(self, callback: ProgressCallback):
        self.callback = callback
        self.cancelled = False

    def __call__(self, progress: float) -> bool:
        result = self.callback(progress)
        if result is not None and not result:
            self.cancelled = True
            return False
        return True


class Model(CObject):
    """A GGUF model loaded by llama.cpp.

    Use :meth:`from_file`. A model stays alive while any context, vocab, sampler or
    adapter made from it does, even after ``close()``.
    """

    path: Path
    rpc_servers: tuple[str, ...] = ()  # the RPC servers holding part of the model

    def __init__(self) -> None:
        raise TypeError("use Model.from_file(path, ...)")

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        n_gpu_layers: int | None = None,
        split_mode: str | int | None = None,
        main_gpu: int | None = None,
        tensor_split: Sequence[float] | None = None,
        devices: Sequence[Device | str] | None = None,
        rpc_servers: str | Sequence[str] | None = None,
        use_mmap: bool | None = None,
        use_mlock: bool | None = None,
        load_mode: str | int | None = None,
        vocab_only: bool | None = None,
        check_tensors: bool | None = None,
        kv_overrides: Mapping[str, Any] | None = None,
        no_alloc: bool | None = None,
        progress: bool | ProgressCallback = False,
        validate: bool = True,
        **more_params: Any,
    ) -> Model:
        """Load a model. Every ``llama_model_params`` field is accepted by name.

        ``progress=True`` draws a progress bar on stderr; a callable gets the fraction
        loaded and returns False to cancel the load. Ctrl-C cancels it too. Raises
        FileNotFoundError for a missing file and ModelLoadError when llama.cpp refuses it.
        ``validate=False`` skips the pre-flight checks of the file's metadata (see
        llamapy.gguf.validate), which stop malformed files that would abort llama.cpp.

        ``rpc_servers`` (``["host:port", ...]`` or ``"h1:p,h2:p"``) offloads layers to RPC
        servers (see llamapy.rpc): their devices come first, then local GPUs, and
        ``n_gpu_layers``/``tensor_split`` split the layers across them in that order. Each
        server is checked first; one that cannot be reached raises RPCError naming it.
        """
        p = check_model_file(path)
        if validate:
            from .gguf.validate import validate_model_file

            validate_model_file(p, kv_overrides, bool(vocab_only))
        devices, endpoints = _placement(devices, rpc_servers)
        params = lib.llama_model_default_params()
        keep: list[Any] = []
        conv: dict[str, Callable[[Any], Any]] = {
            "split_mode": lambda v: enum_value("LLAMA_SPLIT_MODE_", v, "split_mode"),
            "load_mode": lambda v: enum_value("LLAMA_LOAD_MODE_", v, "load_mode"),
            "lazy_mode": lambda v: enum_value("LLAMA_LAZY_MODE_", v, "lazy_mode"),
        }
        values: dict[str, Any] = dict(n_gpu_layers=n_gpu_layers, split_mode=split_mode, main_gpu=main_gpu,
                                      vocab_only=vocab_only, check_tensors=check_tensors, no_alloc=no_alloc,
                                      load_mode=load_mode, **more_params)
        if load_mode is None:
            values["load_mode"] = int(_load_mode(use_mmap, use_mlock, params.load_mode))
        if tensor_split is not None:
            n_max = lib.llama_max_devices()
            if len(tensor_split) > n_max:
                raise ValueError(f"tensor_split has {len(tensor_split)} entries; this build supports {n_max} devices")
            arr = ffi.new("float[]", [float(x) for x in tensor_split] + [0.0] * (n_max - len(tensor_split)))
            keep.append(arr)
            values["tensor_split"] = arr
        if devices is not None:
            values["devices"] = _devices(devices)
            keep.append(values["devices"])
        if kv_overrides:
            values["kv_overrides"] = _kv_overrides(kv_overrides)
            keep.append(values["kv_overrides"])
        fill(params, values, conv, "llama_model_params")

        callback = _Tracked(_ProgressBar(p.name) if progress is True else (progress or _poll_only))
        handle = ffi.new_handle(callback)
        params.progress_callback = lib.llamapy_py_progress
        params.progress_callback_user_data = handle
        _ffi.take_interrupt()
        ptr = lib.llama_model_load_from_file(os.fsencode(p), params)
        interrupt = _ffi.take_interrupt()
        if ptr == ffi.NULL:
            if interrupt is not None:
                raise interrupt
            if callback.cancelled:
                raise ModelLoadError(f"loading {p.name} was cancelled by the progress callback")
            raise ModelLoadError(f"llama.cpp could not load {p} (unsupported architecture, corrupt or truncated "
                                 f"file, or not enough memory; enable logging with llamapy.set_verbose() for details)")
        self = object.__new__(cls)
        self.rpc_servers = tuple(endpoints)
        self._own(ptr, self.guard_free(lib.llama_model_free, "model"))
        self.path = p
        self.vocab_only = bool(params.vocab_only)
        self._vocab: Vocab | None = None
        if interrupt is not None:  # the load finished before the signal was seen
            raise interrupt
        return self

    def close(self) -> None:
        """Free the model now (or when its last context goes). A model on RPC servers closes
        its vocab too, so that the servers' memory and connections are released at once
        rather than whenever the garbage collector finds the last reference."""
        if self.rpc_servers and getattr(self, "_vocab", None) is not None:
            self._vocab.close()
            self._vocab = None
        super().close()

    # -- RPC servers -------------------------------------------------------------------
    def check_servers(self) -> None:
        """Raise RPCError if an RPC server holding part of the model went away (no-op without)."""
        if self.rpc_servers:
            from .rpc import ensure_alive

            ensure_alive(self.rpc_servers)

    def guard_free(self, free: Callable[[Any], None], what: str) -> Callable[[Any], None]:
        """``free`` for an object holding memory on this model's RPC servers: it leaks
        instead of freeing when a server went away (ggml would abort the process)."""
        if not self.rpc_servers:
            return free
        from .rpc import guarded_free

        return guarded_free(free, self.rpc_servers, what)

    # -- parts -----------------------------------------------------------------------
    @property
    def vocab(self) -> Vocab:
        """The model's vocabulary (tokenizer)."""
        if self._vocab is None or self._vocab.closed:
            self._vocab = Vocab(self)
        return self._vocab

    # -- properties ------------------------------------------------------------------
    @property
    def description(self) -> str:
        buf = ffi.new("char[]", 256)
        n = lib.llama_model_desc(self._ptr, buf, 256)
        return ffi.unpack(buf, min(n, 255)).decode("utf-8", "replace")

    n_params = property(lambda self: int(lib.llama_model_n_params(self._ptr)), doc="number of parameters")
    size = property(lambda self: int(lib.llama_model_size(self._ptr)), doc="total size of the weights in bytes")
    n_layer = property(lambda self: lib.llama_model_n_layer(self._ptr))
    n_embd = property(lambda self: lib.llama_model_n_embd(self._ptr))
    n_embd_inp = property(lambda self: lib.llama_model_n_embd_inp(self._ptr))
    n_embd_out = property(lambda self: lib.llama_model_n_embd_out(self._ptr))
    n_head = property(lambda self: lib.llama_model_n_head(self._ptr))
    n_head_kv = property(lambda self: lib.llama_model_n_head_kv(self._ptr))
    n_swa = property(lambda self: lib.llama_model_n_swa(self._ptr), doc="sliding-window size (0 = none)")
    n_ctx_train = property(lambda self: lib.llama_model_n_ctx_train(self._ptr), doc="context length in training")
    n_cls_out = property(lambda self: lib.llama_model_n_cls_out(self._ptr))
    rope_freq_scale_train = property(lambda self: lib.llama_model_rope_freq_scale_train(self._ptr))
    has_encoder = property(lambda self: CallableBool(lib.llama_model_has_encoder(self._ptr)),
                           doc="an encoder-decoder model (also callable: ``model.has_encoder()``)")
    has_decoder = property(lambda self: bool(lib.llama_model_has_decoder(self._ptr)))
    is_recurrent = property(lambda self: bool(lib.llama_model_is_recurrent(self._ptr)))
    is_hybrid = property(lambda self: bool(lib.llama_model_is_hybrid(self._ptr)))
    is_diffusion = property(lambda self: bool(lib.llama_model_is_diffusion(self._ptr)))

    @property
    def rope_type(self) -> RopeType:
        return RopeType(lib.llama_model_rope_type(self._ptr))

    @property
    def decoder_start_token(self) -> int | None:
        t = lib.llama_model_decoder_start_token(self._ptr)
        return None if t == lib.LLAMA_TOKEN_NULL else t

    # -- metadata ----------------------------------------------------------------------
    @staticmethod
    def _read_string(fn: Callable[..., int], *args: Any) -> str | None:
        size = 256
        while True:
            buf = ffi.new("char[]", size)
            n = fn(*args, buf, size)
            if n < 0:
                return None
            if n < size:
                return ffi.unpack(buf, n).decode("utf-8", "replace")
            size = n + 1

    @property
    def metadata(self) -> dict[str, str]:
        """Every GGUF metadata entry as a string (arrays are summarised by llama.cpp)."""
        ptr = self._ptr
        out = {}
        for i in range(lib.llama_model_meta_count(ptr)):
            key = self._read_string(lib.llama_model_meta_key_by_index, ptr, i)
            val = self._read_string(lib.llama_model_meta_val_str_by_index, ptr, i)
            if key is not None:
                out[key] = val if val is not None else ""
        return out

    def meta(self, key: str) -> str | None:
        """One metadata value as a string, or None."""
        return self._read_string(lib.llama_model_meta_val_str, self._ptr, key.encode())

    def chat_template(self, name: str | None = None) -> str | None:
        """The model's chat template (or the named one), or None if it has none."""
        t = lib.llama_model_chat_template(self._ptr, name.encode() if name else ffi.NULL)
        return None if t == ffi.NULL else ffi.string(t).decode("utf-8", "replace")

    def chat_templates(self) -> dict[str, str]:
        """All templates: the default under "default", named ones under their names."""
        out = {}
        default = self.chat_template()
        if default is not None:
            out["default"] = default
        prefix = "tokenizer.chat_template."
        for key in self.metadata:
            if key.startswith(prefix):
                tmpl = self.chat_template(key[len(prefix):])
                if tmpl is not None:
                    out[key[len(prefix):]] = tmpl
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to a GGUF file."""
        lib.llama_model_save_to_file(self._ptr, os.fsencode(Path(path)))

    def __repr__(self) -> str:
        if self.closed:
            return "<Model (closed)>"
        return f"<Model {self.path.name}: {self.description}>"


class LlamaModelParams(StructParams):
    """``llama_model_params`` with attribute access (``params.n_gpu_layers = 99``) and llama.cpp's
    defaults; ``use_mmap`` / ``use_mlock`` set the load mode."""

    _struct = "struct llama_model_params"
    _prefixes = {"split_mode": "LLAMA_SPLIT_MODE_", "load_mode": "LLAMA_LOAD_MODE_", "lazy_mode": "LLAMA_LAZY_MODE_"}

    @staticmethod
    def _defaults() -> Any:
        return lib.llama_model_default_params()

    @property
    def use_mmap(self) -> bool:
        return self.load_mode in (lib.LLAMA_LOAD_MODE_MMAP, lib.LLAMA_LOAD_MODE_MMAP_MLOCK, lib.LLAMA_LOAD_MODE_AUTO)

    @use_mmap.setter
    def use_mmap(self, on: bool) -> None:
        self.load_mode = int(_load_mode(on, self.use_mlock, self.load_mode))

    @property
    def use_mlock(self) -> bool:
        return self.load_mode in (lib.LLAMA_LOAD_MODE_MLOCK, lib.LLAMA_LOAD_MODE_MMAP_MLOCK)

    @use_mlock.setter
    def use_mlock(self, on: bool) -> None:
        self.load_mode = int(_load_mode(self.use_mmap, on, self.load_mode))


class LlamaModel(Model):
    """The model class as other bindings spell it: ``LlamaModel(path, LlamaModelParams())`` or
    ``LlamaModel.from_file(path, n_gpu_layers=..., use_mmap=...)``, with their helper names."""

    def __new__(cls, path: str | os.PathLike, params: LlamaModelParams | None = None, **load: Any) -> LlamaModel:
        return cls.from_file(path, **(params.changed() if params is not None else {}), **load)

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # built by __new__
        pass

    @property
    def n_layers(self) -> int:
        return self.n_layer

    @property
    def n_vocab(self) -> CallableInt:
        """Number of tokens (also callable: ``model.n_vocab()``)."""
        return self.vocab.n_vocab

    @property
    def _lib(self) -> Any:
        """The compiled library (some APIs take it as an argument; llamapy never needs it)."""
        return lib

    def get_vocab(self) -> Vocab:
        return self.vocab

    def free(self) -> None:
        self.close()

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.vocab.tokenize(text, add_special, parse_special)

    def token_to_piece(self, token: int, special: bool = False) -> str:
        return self.vocab.token_to_piece(token, special)

"""GGUF files through gguf.h: typed metadata, tensor info, editing and writing.

Opening reads the header, the metadata and the tensor infos, never the tensor data.
Writing builds a new gguf context (so offsets follow the alignment in force), writes its
metadata with gguf.h and then copies each tensor's bytes from the source file in chunks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _ffi
from .._ffi import ffi, lib
from .._handle import CObject, Handle
from ..enums import GGMLType
from ..errors import LlamaError


class GGUFError(LlamaError, ValueError):
    """A GGUF file could not be read or written, or a value does not fit its key."""


_SCALAR = {
    lib.GGUF_TYPE_UINT8: ("u8", np.uint8), lib.GGUF_TYPE_INT8: ("i8", np.int8),
    lib.GGUF_TYPE_UINT16: ("u16", np.uint16), lib.GGUF_TYPE_INT16: ("i16", np.int16),
    lib.GGUF_TYPE_UINT32: ("u32", np.uint32), lib.GGUF_TYPE_INT32: ("i32", np.int32),
    lib.GGUF_TYPE_FLOAT32: ("f32", np.float32), lib.GGUF_TYPE_UINT64: ("u64", np.uint64),
    lib.GGUF_TYPE_INT64: ("i64", np.int64), lib.GGUF_TYPE_FLOAT64: ("f64", np.float64),
    lib.GGUF_TYPE_BOOL: ("bool", np.bool_),
}
TYPE_NAMES = {name: t for t, (name, _) in _SCALAR.items()} | {"str": lib.GGUF_TYPE_STRING}
_NUMPY_TO_GGUF = {np.dtype(dt): t for t, (_, dt) in _SCALAR.items()}
_COPY_CHUNK = 16 << 20
ALIGNMENT_KEY = "general.alignment"


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives in the file and what it holds (no data)."""

    name: str
    type: GGMLType
    shape: tuple[int, ...]  # GGUF order: shape[0] is the fastest-varying dimension
    n_bytes: int
    offset: int  # from the start of the data section

    @property
    def type_name(self) -> str:
        return ffi.string(lib.ggml_type_name(self.type)).decode()

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    if path.is_dir():
        raise GGUFError(f"{path} is a directory, not a GGUF file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise GGUFError(f"{path} is too short to be a GGUF file ({len(head)} bytes)")
    if head[:4] != b"GGUF":
        raise GGUFError(f"{path} is not a GGUF file (it starts with {head[:4]!r}, not b'GGUF')")


class GGUFFile(CObject):
    """A GGUF file's metadata and tensor infos, editable and writable.

    ``metadata`` maps keys to Python values (int, float, bool, str; arrays as numpy arrays
    for numbers and lists for strings). ``set``/``remove`` edit; ``write`` saves.
    """

    def __init__(self) -> None:
        raise TypeError("use GGUFFile.open(path) or GGUFFile.empty()")

    @classmethod
    def open(cls, path: str | os.PathLike) -> GGUFFile:
        p = Path(path).expanduser()
        _check_readable(p)
        ggml_ctx = ffi.new("struct ggml_context **")
        params = ffi.new("struct gguf_init_params *", {"no_alloc": True, "ctx": ggml_ctx})
        _ffi.last_error_reset()
        ptr = lib.gguf_init_from_file(os.fsencode(p), params[0])
        if ptr == ffi.NULL:
            detail = _ffi.last_error.split(": ", 1)[-1] if _ffi.last_error else "unreadable header"
            raise GGUFError(f"{p} is not a valid GGUF file: {detail}")
        self = object.__new__(cls)
        meta = Handle(ggml_ctx[0], lib.ggml_free)
        self._own(ptr, lib.gguf_free, keep=(meta,))
        self._ggml = ggml_ctx[0]
        self.path: Path | None = p
        self._new_tensors: dict[str, np.ndarray] = {}
        self._metadata: dict[str, Any] | None = None
        return self

    @classmethod
    def empty(cls) -> GGUFFile:
        """A new file with no metadata and no tensors."""
        self = object.__new__(cls)
        self._own(lib.gguf_init_empty(), lib.gguf_free)
        self._ggml = ffi.NULL
        self.path = None
        self._new_tensors = {}
        self._metadata = None
        return self

    # -- reading -----------------------------------------------------------------------
    version = property(lambda self: lib.gguf_get_version(self._ptr))
    alignment = property(lambda self: lib.gguf_get_alignment(self._ptr))
    data_offset = property(lambda self: lib.gguf_get_data_offset(self._ptr), doc="start of the tensor data")

    def keys(self) -> list[str]:
        ptr = self._ptr
        return [ffi.string(lib.gguf_get_key(ptr, i)).decode("utf-8", "replace") for i in range(lib.gguf_get_n_kv(ptr))]

    def type_of(self, key: str) -> str:
        """The GGUF type of a key: "u32", "str", "arr[str]", ... """
        i = self._key_id(key)
        t = lib.gguf_get_kv_type(self._ptr, i)
        if t == lib.GGUF_TYPE_ARRAY:
            return f"arr[{self._type_name(lib.gguf_get_arr_type(self._ptr, i))}]"
        return self._type_name(t)

    @staticmethod
    def _type_name(t: int) -> str:
        return "str" if t == lib.GGUF_TYPE_STRING else _SCALAR[t][0]

    def _key_id(self, key: str) -> int:
        i = lib.gguf_find_key(self._ptr, key.encode())
        if i < 0:
            raise KeyError(key)
        return i

    def _value(self, i: int) -> Any:
        ptr = self._ptr
        t = lib.gguf_get_kv_type(ptr, i)
        if t == lib.GGUF_TYPE_STRING:
            return ffi.string(lib.gguf_get_val_str(ptr, i)).decode("utf-8", "replace")
        if t == lib.GGUF_TYPE_ARRAY:
            at = lib.gguf_get_arr_type(ptr, i)
            n = lib.gguf_get_arr_n(ptr, i)
            if at == lib.GGUF_TYPE_STRING:
                return [ffi.string(lib.gguf_get_arr_str(ptr, i, k)).decode("utf-8", "replace") for k in range(n)]
            dtype = np.dtype(_SCALAR[at][1])
            if n == 0:
                return np.empty(0, dtype=dtype)
            return np.frombuffer(ffi.buffer(lib.gguf_get_arr_data(ptr, i), n * dtype.itemsize), dtype=dtype).copy()
        name, dtype = _SCALAR[t]
        value = getattr(lib, f"gguf_get_val_{name}")(ptr, i)
        return bool(value) if t == lib.GGUF_TYPE_BOOL else value

    @property
    def metadata(self) -> dict[str, Any]:
        """Every key with its typed value (a snapshot; edit with set/remove)."""
        if self._metadata is None:
            self._metadata = {self.keys()[i]: self._value(i) for i in range(lib.gguf_get_n_kv(self._ptr))}
        return dict(self._metadata)

    def __getitem__(self, key: str) -> Any:
        return self._value(self._key_id(key))

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and lib.gguf_find_key(self._ptr, key.encode()) >= 0

    @property
    def tensors(self) -> list[TensorInfo]:
        ptr = self._ptr
        out = []
        for i in range(lib.gguf_get_n_tensors(ptr)):
            ne = lib.gguf_get_tensor_ne(ptr, i)
            shape = [int(ne[d]) for d in range(lib.GGML_MAX_DIMS)]
            while len(shape) > 1 and shape[-1] == 1:
                shape.pop()
            out.append(TensorInfo(
                name=ffi.string(lib.gguf_get_tensor_name(ptr, i)).decode("utf-8", "replace"),
                type=GGMLType(lib.gguf_get_tensor_type(ptr, i)),
                shape=tuple(shape),
                n_bytes=int(lib.gguf_get_tensor_size(ptr, i)),
                offset=int(lib.gguf_get_tensor_offset(ptr, i)),
            ))
        return out

    def tensor_data(self, name: str) -> np.ndarray:
        """A tensor's bytes from the file (memory-mapped, read-only): uint8, or typed for
        F32/F16/I8/I16/I32/I64/F64 tensors, in numpy (C) order of the GGUF shape reversed."""
        if name in self._new_tensors:
            return self._new_tensors[name]
        info = next((t for t in self.tensors if t.name == name), None)
        if info is None:
            raise KeyError(name)
        if self.path is None:
            raise GGUFError("this file has no data on disk yet")
        start = self.data_offset + info.offset
        typed = {GGMLType.F32: np.float32, GGMLType.F16: np.float16, GGMLType.I8: np.int8, GGMLType.I16: np.int16,
                 GGMLType.I32: np.int32, GGMLType.I64: np.int64, GGMLType.F64: np.float64}.get(info.type)
        if typed is None:
            return np.memmap(self.path, dtype=np.uint8, mode="r", offset=start, shape=(info.n_bytes,))
        return np.memmap(self.path, dtype=typed, mode="r", offset=start, shape=tuple(reversed(info.shape)))

    # -- editing -----------------------------------------------------------------------
    def set(self, key: str, value: Any, type: str | None = None) -> GGUFFile:
        """Set a key. The type follows ``type`` ("u32", "f32", "str", "arr[i32]", ...), else
        the key's current type, else the value (bool, int -> i32/i64, float -> f32, str,
        lists and numpy arrays)."""
        if type is None and key in self:
            type = self.type_of(key)
        if key == ALIGNMENT_KEY:
            if type not in (None, "u32") or isinstance(value, bool) or not isinstance(value, int) \
                    or value <= 0 or value & (value - 1):
                raise GGUFError(f"{ALIGNMENT_KEY} must be a u32 power of two, got {value!r}")
            type = "u32"
        k = key.encode()
        ptr = self._ptr
        try:
            if type is not None and type.startswith("arr[") or (type is None and isinstance(value, (list, tuple, np.ndarray))):
                self._set_array(k, value, type[4:-1] if type else None)
            elif type == "str" or (type is None and isinstance(value, str)):
                if not isinstance(value, str):
                    raise TypeError(f"{key} is a string key; got {value!r}")
                lib.gguf_set_val_str(ptr, k, value.encode())
            elif type == "bool" or (type is None and isinstance(value, bool)):
                lib.gguf_set_val_bool(ptr, k, bool(value))
            else:
                if type is None:
                    type = "f32" if isinstance(value, float) else ("i32" if -2**31 <= value < 2**31 else "i64")
                if type not in TYPE_NAMES or type == "str":
                    raise GGUFError(f"unknown GGUF type {type!r}; choose from {', '.join(sorted(TYPE_NAMES))}")
                self._check_range(key, value, type)
                getattr(lib, f"gguf_set_val_{type}")(ptr, k, value)
        except (TypeError, OverflowError) as e:
            raise GGUFError(f"cannot store {value!r} in {key} ({type or 'auto'}): {e}") from None
        self._metadata = None
        return self

    @staticmethod
    def _check_range(key: str, value: Any, type: str) -> None:
        if type in ("f32", "f64"):
            float(value)
            return
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"expected an integer for {type}")
        info = np.iinfo(_SCALAR[TYPE_NAMES[type]][1])
        if not info.min <= int(value) <= info.max:
            raise OverflowError(f"{value} is out of range for {type} ({info.min}..{info.max})")

    def _set_array(self, k: bytes, value: Any, elem: str | None) -> None:
        items = list(value) if not isinstance(value, np.ndarray) else value
        if np.ndim(items) > 1 or any(isinstance(v, (list, tuple, np.ndarray)) for v in items):
            raise GGUFError("GGUF arrays are flat: nested arrays are not supported by gguf.h")
        if elem == "str" or (elem is None and len(items) and all(isinstance(v, str) for v in items)):
            bufs = [ffi.new("char[]", str(v).encode()) for v in items]
            lib.gguf_set_arr_str(self._ptr, k, ffi.new("const char *[]", bufs), len(bufs))
            return
        if elem is not None:
            if elem not in TYPE_NAMES:
                raise GGUFError(f"unknown GGUF array type {elem!r}")
            arr = np.ascontiguousarray(items, dtype=_SCALAR[TYPE_NAMES[elem]][1])
        else:
            arr = np.ascontiguousarray(items)
            if not isinstance(value, np.ndarray):  # plain Python numbers: i32 / f32 like scalars
                if arr.dtype == np.float64:
                    arr = arr.astype(np.float32)
                elif arr.dtype == np.int64 and (not arr.size or (arr.min() >= -2**31 and arr.max() < 2**31)):
                    arr = arr.astype(np.int32)
            if arr.dtype not in _NUMPY_TO_GGUF:
                raise GGUFError(f"cannot store an array of {arr.dtype} in GGUF (nested arrays are not supported)")
        lib.gguf_set_arr_data(self._ptr, k, _NUMPY_TO_GGUF[arr.dtype], ffi.from_buffer(arr), len(arr))

    def remove(self, key: str) -> GGUFFile:
        if lib.gguf_remove_key(self._ptr, key.encode()) < 0:
            raise KeyError(key)
        self._metadata = None
        return self

    def add_tensor(self, name: str, data: np.ndarray) -> GGUFFile:
        """Add a tensor (F32, F16, I8/16/32/64 or F64 numpy data) to be written with the file."""
        arr = np.ascontiguousarray(data)
        types = {np.dtype(np.float32): lib.GGML_TYPE_F32, np.dtype(np.float16): lib.GGML_TYPE_F16,
                 np.dtype(np.int8): lib.GGML_TYPE_I8, np.dtype(np.int16): lib.GGML_TYPE_I16,
                 np.dtype(np.int32): lib.GGML_TYPE_I32, np.dtype(np.int64): lib.GGML_TYPE_I64,
                 np.dtype(np.float64): lib.GGML_TYPE_F64}
        if arr.dtype not in types:
            raise GGUFError(f"tensor {name}: unsupported dtype {arr.dtype}")
        if not 1 <= arr.ndim <= lib.GGML_MAX_DIMS:
            raise GGUFError(f"tensor {name}: 1 to {lib.GGML_MAX_DIMS} dimensions, got {arr.ndim}")
        if len(name.encode()) >= lib.GGML_MAX_NAME or name in [t.name for t in self.tensors]:
            raise GGUFError(f"tensor name {name!r} is too long or already present")
        ctx = self._tensor_context()
        ne = ffi.new("int64_t[]", list(reversed(arr.shape)))
        t = lib.ggml_new_tensor(ctx, types[arr.dtype], arr.ndim, ne)
        lib.ggml_set_name(t, name.encode())
        lib.gguf_add_tensor(self._ptr, t)
        self._new_tensors[name] = arr
        return self

    def _tensor_context(self) -> Any:
        if self._ggml == ffi.NULL:
            params = ffi.new("struct ggml_init_params *", {"mem_size": 1 << 20, "mem_buffer": ffi.NULL,
                                                           "no_alloc": True})
            self._ggml = lib.ggml_init(params[0])
            self._h.parents += (Handle(self._ggml, lib.ggml_free),)
        return self._ggml

    # -- writing -----------------------------------------------------------------------
    def write(self, path: str | os.PathLike, write_tensors: bool = True) -> Path:
        """Save to ``path`` (metadata only with write_tensors=False). Writing over the file
        this one was opened from is done through a temporary file."""
        dst = Path(path).expanduser()
        if write_tensors and self.tensors and self.get(ALIGNMENT_KEY, lib.GGUF_DEFAULT_ALIGNMENT) \
                != lib.GGUF_DEFAULT_ALIGNMENT:
            raise GGUFError(f"gguf.h writes tensor data aligned to {lib.GGUF_DEFAULT_ALIGNMENT} bytes only; "
                            f"remove {ALIGNMENT_KEY} or write metadata only")
        out = lib.gguf_init_empty()
        try:
            lib.gguf_set_kv(out, self._ptr)
            infos = self.tensors if write_tensors else []
            if write_tensors:
                for info in infos:
                    lib.gguf_add_tensor(out, self._tensor_struct(info.name))
            tmp = dst.with_name(dst.name + ".llamapy-tmp")
            if not lib.gguf_write_to_file(out, os.fsencode(tmp), True):
                raise GGUFError(f"could not write {dst}")
            if write_tensors and infos:
                self._append_data(tmp, out, infos)
            os.replace(tmp, dst)
        finally:
            lib.gguf_free(out)
        return dst

    def _tensor_struct(self, name: str) -> Any:
        t = lib.ggml_get_tensor(self._ggml, name.encode()) if self._ggml != ffi.NULL else ffi.NULL
        if t == ffi.NULL:
            raise GGUFError(f"tensor {name} has no description")
        return t

    def _append_data(self, tmp: Path, out: Any, infos: Sequence[TensorInfo]) -> None:
        data_start = lib.gguf_get_meta_size(out)
        src = open(self.path, "rb") if self.path is not None else None
        try:
            with open(tmp, "r+b") as f:
                for i, info in enumerate(infos):
                    f.seek(data_start + lib.gguf_get_tensor_offset(out, i))
                    if info.name in self._new_tensors:
                        f.write(self._new_tensors[info.name].tobytes())
                    else:
                        assert src is not None
                        src.seek(self.data_offset + info.offset)
                        _copy(src, f, info.n_bytes, info.name)
                end = data_start + (lib.gguf_get_tensor_offset(out, len(infos) - 1) + infos[-1].n_bytes)
                padded = -(-end // lib.GGUF_DEFAULT_ALIGNMENT) * lib.GGUF_DEFAULT_ALIGNMENT
                f.truncate(padded)
        finally:
            if src is not None:
                src.close()

    # -- names used by other bindings -------------------------------------------------------
    def __repr__(self) -> str:
        where = self.path.name if self.path else "(new)"
        return f"<GGUFFile {where}: {lib.gguf_get_n_kv(self._ptr)} keys, {lib.gguf_get_n_tensors(self._ptr)} tensors>"


def _copy(src: Any, dst: Any, n: int, name: str) -> None:
    while n:
        block = src.read(min(n, _COPY_CHUNK))
        if not block:
            raise GGUFError(f"the source file ends inside tensor {name}")
        dst.write(block)
        n -= len(block)


class GGUFContext(GGUFFile):
    """GGUFFile under the names other bindings use."""

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> GGUFContext:
        return cls.open(path)  # type: ignore[return-value]

    def get_all_metadata(self) -> dict[str, Any]:
        return self.metadata

    def get_val_str(self, key: str) -> str | None:
        value = self.get(key)
        return value if isinstance(value, str) else None

    def set_val_str(self, key: str, value: str) -> None:
        self.set(key, value, "str")

    def set_val_u32(self, key: str, value: int) -> None:
        self.set(key, value, "u32")

    def write_to_file(self, path: str | os.PathLike, write_tensors: bool = True) -> None:
        self.write(path, write_tensors)


def summarise(value: Any, max_items: int = 6, max_chars: int = 80) -> str:
    """A short human form of a metadata value: long arrays and strings are cut."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        shown = ", ".join(summarise(v, max_items, 24) for v in value[:max_items])
        more = f", ... ({len(value)} items)" if len(value) > max_items else ""
        return f"[{shown}{more}]"
    if isinstance(value, str):
        flat = value.replace("\n", "\\n")
        return repr(flat if len(flat) <= max_chars else flat[: max_chars - 1] + "…")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def json_ready(value: Any) -> Any:
    """Metadata values as plain JSON types."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


__all__ = ["GGUFFile", "GGUFContext", "GGUFError", "TensorInfo", "summarise", "human_size", "json_ready"]

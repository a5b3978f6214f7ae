"""Pre-flight checks of a GGUF model file: what llama.cpp's loader asserts instead of reporting.

llama.cpp validates most of a model file and reports what is wrong, but a few malformed
files reach a ``GGML_ASSERT`` and kill the whole process, e.g. a vocabulary that lists one
token string twice. A GGUF downloaded from a hub is untrusted input, so
:meth:`llamapy.Model.from_file` runs :func:`validate_model_file` first.

The checks read the header, the metadata and the tensor infos straight from the
memory-mapped file (never the tensor data) and raise :class:`~llamapy.errors.ModelLoadError`
naming the key or tensor at fault. Long string arrays (a 150k-token vocabulary) are walked
and compared with numpy, so validating a small model costs a few milliseconds.
"""
from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from .._ffi import ffi, lib
from ..errors import ModelLoadError

STRING, ARRAY = lib.GGUF_TYPE_STRING, lib.GGUF_TYPE_ARRAY
_SCALAR_FORMAT = {
    lib.GGUF_TYPE_UINT8: "<B", lib.GGUF_TYPE_INT8: "<b", lib.GGUF_TYPE_UINT16: "<H", lib.GGUF_TYPE_INT16: "<h",
    lib.GGUF_TYPE_UINT32: "<I", lib.GGUF_TYPE_INT32: "<i", lib.GGUF_TYPE_FLOAT32: "<f", lib.GGUF_TYPE_BOOL: "<b",
    lib.GGUF_TYPE_UINT64: "<Q", lib.GGUF_TYPE_INT64: "<q", lib.GGUF_TYPE_FLOAT64: "<d",
}
_SCALAR = {t: struct.Struct(f) for t, f in _SCALAR_FORMAT.items()}
_DTYPE = {t: np.dtype(f) for t, f in _SCALAR_FORMAT.items()}
TYPE_NAMES = {
    lib.GGUF_TYPE_UINT8: "u8", lib.GGUF_TYPE_INT8: "i8", lib.GGUF_TYPE_UINT16: "u16", lib.GGUF_TYPE_INT16: "i16",
    lib.GGUF_TYPE_UINT32: "u32", lib.GGUF_TYPE_INT32: "i32", lib.GGUF_TYPE_FLOAT32: "f32",
    lib.GGUF_TYPE_BOOL: "bool", lib.GGUF_TYPE_UINT64: "u64", lib.GGUF_TYPE_INT64: "i64",
    lib.GGUF_TYPE_FLOAT64: "f64", STRING: "str", ARRAY: "array",
}
_HEADER = struct.Struct("<4sIqq")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ARRAY_HEAD = struct.Struct("<IQ")
_MAX_DIMS, _MAX_NAME = lib.GGML_MAX_DIMS, lib.GGML_MAX_NAME
_TENSOR_TAIL = [struct.Struct(f"<{n}qiQ") for n in range(_MAX_DIMS + 1)]  # dims, type, data offset
_ONES = (1,) * _MAX_DIMS
_BLOCKS = {t: (lib.ggml_blck_size(t), lib.ggml_type_size(t)) for t in range(lib.GGML_TYPE_COUNT)}
_INT64_MAX = 2**63 - 1
_SIZE_MAX = 2**64 - 1
_SLOW_WALK = 256  # string arrays shorter than this are walked one string at a time
_BYTE_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)


class Field(NamedTuple):
    """One structural field of the file (a length, a count, a type tag, ...): where it is and what it holds.

    ``kind`` is one of "header", "key_length", "type", "item_type", "count", "string_length",
    "value", "name_length", "n_dims", "dim", "tensor_type", "tensor_offset".
    """

    offset: int
    size: int
    kind: str


class KeyValue(NamedTuple):
    """A metadata entry as it lies in the file."""

    key: str
    type: int  # GGUF_TYPE_*; GGUF_TYPE_ARRAY for arrays
    item_type: int  # the element type of an array, else the same as ``type``
    count: int  # number of elements of an array, 1 for a scalar
    offset: int  # file offset of the value (of its first element, for arrays)

    @property
    def type_name(self) -> str:
        if self.type == ARRAY:
            return f"array of {TYPE_NAMES.get(self.item_type, '?')}"
        return TYPE_NAMES.get(self.type, "?")


class TensorRecord(NamedTuple):
    """A tensor info as it lies in the file."""

    name: str
    ne: tuple[int, ...]  # elements per dimension (4 of them), ne[0] fastest: ggml's order
    n_dims: int
    type: int  # GGML_TYPE_*
    offset: int  # from the start of the data section
    n_bytes: int
    info_offset: int  # file offset of the tensor info (its name's length)


class GGUFLayout:
    """Where the header, metadata and tensor infos of a GGUF file lie, read through a memory map.

    Reading checks what gguf.h checks while parsing, with a message that names the key or
    tensor; :meth:`fields` lists the structural fields (lengths, counts, type tags,
    dimensions, offsets) for tools that edit or mutate files.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.size = self.path.stat().st_size
        if self.size < _HEADER.size:
            raise self._error(f"the file is too short for a GGUF header ({self.size} bytes)")
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.bytes = np.frombuffer(self._map, dtype=np.uint8)
        self.kv: dict[str, KeyValue] = {}
        self.tensors: list[TensorRecord] = []
        self._fields: list[tuple[int, int, str]] = []
        self._strings: dict[str, tuple[np.ndarray, int]] = {}  # string array -> (element offsets, end)
        self._parse()

    def _error(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"{self.path}: {what}")

    # -- raw reads ---------------------------------------------------------------------
    def _need(self, pos: int, n: int, what: str, *args: Any) -> None:
        if pos + n > self.size:
            raise self._error(f"the file ends inside {what.format(*args)} ({n} bytes needed at offset {pos}, "
                              f"the file has {self.size}): truncated or corrupt")

    def _u64(self, pos: int, what: str, *args: Any) -> int:
        self._need(pos, 8, what, *args)
        return _U64.unpack_from(self._map, pos)[0]

    def _string(self, pos: int, kind: str, what: str, *args: Any) -> tuple[bytes, int]:
        n = self._u64(pos, what, *args)
        self._fields.append((pos, 8, kind))
        self._need(pos + 8, n, what, *args)
        return self._map[pos + 8: pos + 8 + n], pos + 8 + n

    # -- parsing -----------------------------------------------------------------------
    def _parse(self) -> None:
        magic, self.version, n_tensors, n_kv = _HEADER.unpack_from(self._map, 0)
        if magic != b"GGUF":
            raise self._error(f"not a GGUF file (it starts with {magic!r}, not b'GGUF')")
        if self.version in (0, 1) or self.version & 0xFFFF == 0 or self.version > 3:
            raise self._error(f"unsupported GGUF version {self.version} (llama.cpp reads versions 2 and 3)")
        self._fields += [(8, 8, "header"), (16, 8, "header")]
        if n_tensors < 0 or n_kv < 0:
            raise self._error(f"the header counts {n_tensors} tensors and {n_kv} metadata entries")
        pos = _HEADER.size
        for i in range(n_kv):
            pos = self._parse_kv(pos, i)
        self.alignment = 32
        if "general.alignment" in self.kv:
            if self.kv["general.alignment"].type != lib.GGUF_TYPE_UINT32:
                raise self._error(f"general.alignment must be a u32, not {self.kv['general.alignment'].type_name}")
            self.alignment = self.get("general.alignment")
            if self.alignment == 0 or self.alignment & (self.alignment - 1):
                raise self._error(f"general.alignment = {self.alignment} is not a power of two")
        names: set[str] = set()
        data_size = 0
        for i in range(n_tensors):
            pos, record = self._parse_tensor(pos, i, data_size)
            if record.name in names:
                raise self._error(f"tensor {record.name!r} appears twice")
            names.add(record.name)
            self.tensors.append(record)
            data_size += -(-record.n_bytes // self.alignment) * self.alignment
        if n_tensors:
            pos = -(-pos // self.alignment) * self.alignment
        self.data_offset = pos
        if pos + data_size > self.size:
            raise self._error(f"the tensor data ends at byte {pos + data_size} but the file has {self.size} "
                              f"bytes: truncated or corrupt")

    def _parse_kv(self, pos: int, i: int) -> int:
        raw, pos = self._string(pos, "key_length", "the key of metadata entry {}", i)
        # A corrupt length can make a "key" megabytes of junk: decode such a key the cheap way.
        key = raw.decode("utf-8", "surrogateescape") if len(raw) <= 4096 else raw.decode("latin-1")
        if not key:
            raise self._error(f"metadata entry {i} has an empty key")
        if key in self.kv:
            raise self._error(f"metadata key {_show(key)} appears twice")
        self._need(pos, 4, "the type of {}", _show(key))
        typ = item = _U32.unpack_from(self._map, pos)[0]
        self._fields.append((pos, 4, "type"))
        pos += 4
        count = 1
        if typ == ARRAY:
            self._need(pos, 12, "the array header of {}", _show(key))
            item, count = _ARRAY_HEAD.unpack_from(self._map, pos)
            self._fields += [(pos, 4, "item_type"), (pos + 4, 8, "count")]
            pos += 12
            if count > (self.size - pos) // (8 if item == STRING else _SCALAR[item].size if item in _SCALAR else 1):
                raise self._error(f"{_show(key)} claims {count} elements, more than the rest of the file holds")
        if item == STRING:
            if typ == ARRAY:
                offsets, end = self._walk_strings(pos, count, key)
                self._strings[key] = (offsets, end)
            else:
                end = self._string(pos, "string_length", "the value of {}", _show(key))[1]
        elif item in _SCALAR:
            width = _SCALAR[item].size
            self._need(pos, width * count, "the value of {}", _show(key))
            if typ != ARRAY:
                self._fields.append((pos, width, "value"))
            end = pos + width * count
        else:
            raise self._error(f"metadata key {_show(key)} has an invalid type {item}")
        self.kv[key] = KeyValue(key, typ, item, count, pos)
        return end

    def _parse_tensor(self, pos: int, i: int, expected_offset: int) -> tuple[int, TensorRecord]:
        start, size, data = pos, self.size, self._map
        if pos + 8 > size:
            raise self._error(f"the file ends inside the name of tensor {i}: truncated or corrupt")
        n = _U64.unpack_from(data, pos)[0]
        if n >= _MAX_NAME or pos + 12 + n > size:
            raise self._error(f"tensor {i} has a name of {n} bytes (the limit is {_MAX_NAME - 1})" if n >= _MAX_NAME
                              else f"the file ends inside the info of tensor {i}: truncated or corrupt")
        name = data[pos + 8:pos + 8 + n].decode("utf-8", "surrogateescape")
        pos += 8 + n
        n_dims = _U32.unpack_from(data, pos)[0]
        if n_dims > _MAX_DIMS:
            raise self._error(f"tensor {name!r} has {n_dims} dimensions (at most {_MAX_DIMS})")
        tail = _TENSOR_TAIL[n_dims]
        if pos + 4 + tail.size > size:
            raise self._error(f"the file ends inside the info of tensor {name!r}: truncated or corrupt")
        *dims, ggml_type, offset = tail.unpack_from(data, pos + 4)
        ne = (*dims, *_ONES[n_dims:])
        if min(ne) < 0:
            raise self._error(f"tensor {name!r} has a negative dimension: {list(ne)}")
        n_elements = ne[0]
        for d in ne[1:]:
            if d > 1 and _INT64_MAX // d < n_elements:
                raise self._error(f"tensor {name!r} has more elements than an int64 holds: {list(ne)}")
            n_elements *= d
        block, type_size = _BLOCKS.get(ggml_type, (0, 0))
        if block == 0:
            raise self._error(f"tensor {name!r} has an invalid ggml type {ggml_type}")
        if ne[0] % block:
            raise self._error(f"tensor {name!r} has rows of {ne[0]} elements, not a multiple of the "
                              f"{block}-element blocks of its type")
        n_bytes = n_elements // block * type_size
        if n_bytes > _SIZE_MAX - self.alignment:
            raise self._error(f"tensor {name!r} is larger than memory can address: {list(ne)}")
        if offset != expected_offset:
            raise self._error(f"tensor {name!r} has data offset {offset}, expected {expected_offset} "
                              f"(tensor data follows in order, aligned to {self.alignment} bytes)")
        return pos + 4 + tail.size, TensorRecord(name, ne, n_dims, ggml_type, offset, n_bytes, start)

    def _walk_strings(self, pos: int, count: int, key: str) -> tuple[np.ndarray, int]:
        """Offsets of the length prefixes of a string array's elements, and the end of the array.

        numpy finds the strings shorter than 64 KiB in a window at once (see :func:`_short_strings`);
        a string it cannot see there (a long one) is stepped over alone.
        """
        parts: list[np.ndarray] = []
        left, per_item, steps = count, 20, 0
        while left:
            if left < _SLOW_WALK or steps > 64:
                offsets = np.empty(left, dtype=np.int64)
                for j in range(left):
                    offsets[j] = pos
                    n = self._u64(pos, "element {} of {}", count - left + j, _show(key))
                    self._need(pos + 8, n, "element {} of {}", count - left + j, _show(key))
                    pos += 8 + n
                parts.append(offsets)
                break
            found = _short_strings(self.bytes[pos:min(self.size, pos + left * per_item + 64)])
            if found is None:
                n = self._u64(pos, "element {} of {}", count - left, _show(key))
                self._need(pos + 8, n, "element {} of {}", count - left, _show(key))
                parts.append(np.array([pos], dtype=np.int64))
                pos, left, steps = pos + 8 + n, left - 1, steps + 1
                continue
            starts, ends = found
            k = min(len(starts), left)
            parts.append(starts[:k] + pos)
            consumed = int(ends[k - 1])
            per_item = max(16, consumed // k + 8)
            pos, left = pos + consumed, left - k
            self._need(pos, 0, "{}", _show(key))
        return (np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)), pos

    # -- values ------------------------------------------------------------------------
    def fields(self) -> list[Field]:
        """The structural fields, in file order (the lengths of string array elements excluded:
        see :meth:`string_offsets`)."""
        out = [Field(*f) for f in self._fields]
        for t in self.tensors:
            pos = t.info_offset + 8 + len(t.name.encode("utf-8", "surrogateescape"))
            out += [Field(t.info_offset, 8, "name_length"), Field(pos, 4, "n_dims")]
            out += [Field(pos + 4 + 8 * d, 8, "dim") for d in range(t.n_dims)]
            out += [Field(pos + 4 + 8 * t.n_dims, 4, "tensor_type"), Field(pos + 8 + 8 * t.n_dims, 8, "tensor_offset")]
        return out

    def string_offsets(self, key: str) -> np.ndarray:
        """File offsets of the length prefixes of a string array's elements."""
        return self._strings[key][0]

    def strings(self, key: str) -> list[bytes]:
        """The elements of a string array, as bytes."""
        offsets, end = self._strings[key]
        if not len(offsets):
            return []
        first = int(offsets[0])
        blob = self._map[first:end]
        starts = (offsets - (first - 8)).tolist()
        stops = [s - 8 for s in starts[1:]] + [end - first]
        return [blob[a:b] for a, b in zip(starts, stops)]

    def string_lengths(self, key: str) -> np.ndarray:
        """The byte lengths of a string array's elements."""
        offsets, end = self._strings[key]
        return np.diff(offsets, append=end) - 8

    def strings_hold_zero_bytes(self, key: str) -> bool:
        """Whether any element of a string array holds a zero byte (C code would read it cut short)."""
        offsets, end = self._strings[key]
        if not len(offsets):
            return False
        prefixes = self.string_lengths(key).astype("<u8").view(np.uint8)
        return np.count_nonzero(self.bytes[int(offsets[0]):end] == 0) != np.count_nonzero(prefixes == 0)

    def duplicate_strings(self, key: str) -> tuple[int, int] | None:
        """The first two indices of a string array that hold the same string, or None."""
        offsets, end = self._strings[key]
        if len(offsets) < 2:
            return None
        return _first_duplicate(self.bytes, offsets, end)

    def get(self, key: str, default: Any = None) -> Any:
        """A scalar (int, float, bool), a string (str), a numeric array (numpy) or a string array (list of bytes)."""
        kv = self.kv.get(key)
        if kv is None:
            return default
        if kv.type == ARRAY:
            if kv.item_type == STRING:
                return self.strings(key)
            return np.frombuffer(self._map, dtype=_DTYPE[kv.item_type], count=kv.count, offset=kv.offset)
        if kv.type == STRING:
            n = _U64.unpack_from(self._map, kv.offset)[0]
            return self._map[kv.offset + 8: kv.offset + 8 + n].decode("utf-8", "surrogateescape")
        value = _SCALAR[kv.type].unpack_from(self._map, kv.offset)[0]
        return bool(value) if kv.type == lib.GGUF_TYPE_BOOL else value


def _short_strings(window: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the consecutive strings shorter than 64 KiB at the start of ``window`` begin and end.

    The u64 length prefix of such a string has six zero high bytes, and of a run of places
    where eight bytes read as a number below 65536 the prefix is the last (the text that
    follows it is not zero). Candidates are found at once, then kept only while each one
    starts where the previous one ends, so every string returned is exact.
    """
    n = len(window) - 7
    if n < 16:
        return None
    low = np.flatnonzero(np.ndarray(shape=(n,), dtype="<u8", buffer=window, strides=(1,)) < 65536)
    starts = low[np.diff(low, append=n + 1) != 1]
    if not len(starts) or starts[0] != 0:
        return None
    ends = starts + 8 + (window[starts].astype(np.int64) | (window[starts + 1].astype(np.int64) << 8))
    broken = np.flatnonzero(ends[:-1] != starts[1:])
    k = int(broken[0]) + 1 if len(broken) else len(starts)
    return starts[:k], ends[:k]


def _first_duplicate(data: np.ndarray, offsets: np.ndarray, end: int) -> tuple[int, int] | None:
    """The first two indices of equal strings, found by hashing every string with numpy.

    Strings are hashed eight bytes at a time, shortest first, so each round only touches the
    strings still long enough; equal hashes are then compared byte for byte.
    """
    n = len(offsets)
    base = int(offsets[0])
    region = np.zeros(end - base + 8, dtype=np.uint8)
    region[:end - base] = data[base:end]
    words = np.ndarray(shape=(end - base + 1,), dtype="<u8", buffer=region, strides=(1,))
    starts = offsets - (base - 8)
    lengths = np.empty(n, dtype=np.int64)
    lengths[:-1] = offsets[1:] - offsets[:-1] - 8
    lengths[-1] = end - int(offsets[-1]) - 8
    order = np.argsort(lengths.astype(np.uint16) if lengths.max() < 65536 else lengths, kind="stable")  # radix
    lengths_sorted, starts_sorted = lengths[order], starts[order]
    hashes = lengths_sorted.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    done = 0
    with np.errstate(over="ignore"):
        for k in range(0, int(lengths_sorted[-1]), 8):
            done = int(np.searchsorted(lengths_sorted, k, side="right"))
            word = words[starts_sorted[done:] + k] & _BYTE_MASKS[np.minimum(lengths_sorted[done:] - k, 8)]
            part = hashes[done:]
            part ^= word
            part *= np.uint64(0xBF58476D1CE4E5B9)
            part ^= part >> np.uint64(31)
    ranked = np.sort(hashes)
    if not np.any(ranked[1:] == ranked[:-1]):
        return None
    by_hash = np.argsort(hashes, kind="stable")
    ranked = hashes[by_hash]
    same = np.flatnonzero(ranked[1:] == ranked[:-1])
    candidates = np.unique(np.concatenate([by_hash[same], by_hash[same + 1]]))
    seen: dict[bytes, int] = {}
    best: tuple[int, int] | None = None
    for i in sorted(int(order[j]) for j in candidates):
        text = region[int(starts[i]):int(starts[i]) + int(lengths[i])].tobytes()
        first = seen.setdefault(text, i)
        if first != i and (best is None or i < best[1]):
            best = (first, i)
    return best


# -- the checks ----------------------------------------------------------------------------------
LLAMA_MAX_LAYERS = 512  # llama-hparams.h
LLAMA_MAX_EXPERTS = 1024
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")


def validate_model_file(path: str | os.PathLike, kv_overrides: Mapping[str, Any] | None = None,
                        vocab_only: bool = False) -> GGUFLayout:
    """Raise ModelLoadError if llama.cpp would abort the process on this file; return its layout.

    Only preconditions that llama.cpp asserts (or divides by) rather than reports are
    checked, plus the structure gguf.h checks (for a message naming the key or tensor);
    anything llama.cpp reports cleanly is left to it. ``kv_overrides`` are the values the
    loader will use in place of the file's.
    """
    layout = GGUFLayout(path)
    _check_vocabulary(layout)
    if not vocab_only:
        _check_hparams(layout, kv_overrides or {})
        _check_tensor_types(layout)
    return layout


def _typed(layout: GGUFLayout, key: str, gguf_type: int) -> bool:
    kv = layout.kv.get(key)
    return kv is not None and kv.type == gguf_type


def _check_vocabulary(layout: GGUFLayout) -> None:
    if _text(layout, "tokenizer.ggml.model") in (None, "no_vocab", "none"):
        return  # no vocabulary, or a missing or mistyped model that llama.cpp reports itself
    tokens = layout.kv.get("tokenizer.ggml.tokens")
    if tokens is None or tokens.type != ARRAY or tokens.item_type != STRING:
        return
    for key, types in (("tokenizer.ggml.scores", (lib.GGUF_TYPE_FLOAT32, lib.GGUF_TYPE_INT32)),
                       ("tokenizer.ggml.token_type", (lib.GGUF_TYPE_INT32,))):
        kv = layout.kv.get(key)
        if kv is not None and kv.type == ARRAY and kv.item_type in types and kv.count < tokens.count:
            raise layout._error(f"{key} has {kv.count} entries for {tokens.count} tokens")
    _check_unique_tokens(layout, "tokenizer.ggml.tokens")
    if _text(layout, "tokenizer.ggml.model") == "llama":
        _check_byte_tokens(layout, "tokenizer.ggml.tokens")


def _check_unique_tokens(layout: GGUFLayout, key: str) -> None:
    """llama.cpp asserts that every token string is distinct, as it reads them: up to the first zero
    byte (C strings), an empty one named "[EMPTY_<id>]"."""
    if layout.strings_hold_zero_bytes(key) or np.any(layout.string_lengths(key) == 0):
        seen: dict[bytes, int] = {}
        for i, word in enumerate(layout.strings(key)):
            word = word.split(b"\0", 1)[0] or f"[EMPTY_{i}]".encode()
            first = seen.setdefault(word, i)
            if first != i:
                raise _duplicate_token(layout, key, word, first, i)
        return
    pair = layout.duplicate_strings(key)
    if pair is not None:
        raise _duplicate_token(layout, key, layout.strings(key)[pair[1]], *pair)


def _check_byte_tokens(layout: GGUFLayout, key: str) -> None:
    """The SPM tokenizer spells a character it has no token for as byte tokens "<0xXX>" (or the
    byte itself); a missing one throws out of llama_tokenize, which aborts the process."""
    lengths, offsets = layout.string_lengths(key), layout.string_offsets(key)
    have = {layout.bytes[int(o) + 8:int(o) + 8 + int(n)].tobytes()
            for o, n in zip(offsets[(lengths == 6) | (lengths == 1)], lengths[(lengths == 6) | (lengths == 1)])}
    missing = [b for b in range(256) if f"<0x{b:02X}>".encode() not in have and (b == 0 or bytes([b]) not in have)]
    if missing:
        shown = ", ".join(f"<0x{b:02X}>" for b in missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise layout._error(f"{key} lacks the byte tokens {shown} ({len(missing)} of 256): llama.cpp would abort "
                            f"when tokenizing a character outside the vocabulary (validate=False loads it anyway)")


def _duplicate_token(layout: GGUFLayout, key: str, word: bytes, first: int, second: int) -> ModelLoadError:
    return layout._error(f"{key} lists the token {_show(word.decode('utf-8', 'replace'))} twice (ids {first} and "
                         f"{second}); llama.cpp would abort on this vocabulary")


def _text(layout: GGUFLayout, key: str) -> str | None:
    """A string value as llama.cpp reads it (a C string: up to the first zero byte), or None.
    Only its first 4 KiB are read: what the checks compare it with is shorter."""
    if not _typed(layout, key, STRING):
        return None
    at = layout.kv[key].offset
    n = min(_U64.unpack_from(layout._map, at)[0], 4096)
    return layout._map[at + 8:at + 8 + n].split(b"\0", 1)[0].decode("utf-8", "replace")


def _show(text: str, limit: int = 80) -> str:
    """A name for a message, cut short if it is long (a corrupt length can make a key megabytes long)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _check_hparams(layout: GGUFLayout, overrides: Mapping[str, Any]) -> None:
    arch = _text(layout, "general.architecture")
    if arch is None:
        return

    def u32(name: str, default: int | None = None) -> int | None:
        key = f"{arch}.{name}"
        if isinstance(overrides.get(key), int) and not isinstance(overrides[key], bool):
            return overrides[key] % 2**32
        return layout.get(key) if _typed(layout, key, lib.GGUF_TYPE_UINT32) else default

    def per_layer_max(name: str, n_layer: int) -> int:
        key = f"{arch}.{name}"
        kv = layout.kv.get(key)
        if key not in overrides and kv is not None and kv.type == ARRAY:
            if kv.count != n_layer or kv.item_type not in (lib.GGUF_TYPE_UINT32, lib.GGUF_TYPE_INT32):
                return 0  # llama.cpp reports the wrong length or type
            values = layout.get(key).astype(np.uint32)
            return int(values.max()) if len(values) else 0
        return u32(name, 0) or 0

    n_layer = u32("block_count")
    if n_layer is None:
        return  # missing or mistyped: llama.cpp reports it
    if not 0 < n_layer <= LLAMA_MAX_LAYERS:
        raise layout._error(f"{arch}.block_count = {n_layer}; llama.cpp supports 1 to {LLAMA_MAX_LAYERS} layers")
    n_nextn = u32("nextn_predict_layers", 0)
    if n_nextn > n_layer:
        raise layout._error(f"{arch}.nextn_predict_layers = {n_nextn} exceeds {arch}.block_count = {n_layer}")
    if arch == "wavtokenizer-dec":
        for name in ("posnet.block_count", "convnext.block_count"):
            value = u32(name, 0)
            if value > n_layer:
                raise layout._error(f"{arch}.{name} = {value} exceeds {arch}.block_count = {n_layer}")
    _check_experts(layout, arch, u32, per_layer_max, n_layer)
    for name in ("attention.layer_norm_epsilon", "attention.layer_norm_rms_epsilon"):
        key = f"{arch}.{name}"
        eps = overrides[key] if isinstance(overrides.get(key), float) else \
            layout.get(key) if _typed(layout, key, lib.GGUF_TYPE_FLOAT32) else 0.0
        if not eps >= 0.0:  # ggml's norm kernels assert it (NaN included)
            raise layout._error(f"{key} = {eps} must be a number >= 0")
    key = f"{arch}.rope.scaling.type"
    scaling = _text(layout, key)
    scaling = overrides[key] if isinstance(overrides.get(key), str) else "linear" if scaling is None else scaling
    if scaling not in ROPE_SCALING_TYPES:
        raise layout._error(f"{key} = {_show(scaling)} is not one of {', '.join(ROPE_SCALING_TYPES)}")


_NOT_WEIGHT_TYPES = {lib.GGML_TYPE_I8, lib.GGML_TYPE_I16, lib.GGML_TYPE_I32, lib.GGML_TYPE_I64, lib.GGML_TYPE_F64}


def _check_tensor_types(layout: GGUFLayout) -> None:
    """ggml's CPU kernels do no arithmetic with integer or f64 weights, and take vectors (norm
    weights, biases) only as f32: other types abort the first decode. A draft model's "d2t" map is
    asserted to be i64."""
    for t in layout.tensors:
        if not t.name.endswith((".weight", ".bias")):
            pass
        elif t.type in _NOT_WEIGHT_TYPES:
            raise layout._error(f"tensor {t.name!r} has type {_type_name(t.type)}: weights must be floating "
                                f"point or quantized")
        elif t.ne[1:] == (1, 1, 1) and t.type != lib.GGML_TYPE_F32:
            raise layout._error(f"tensor {t.name!r} is a vector of type {_type_name(t.type)}: llama.cpp's CPU "
                                f"kernels take vectors (norm weights, biases) only as f32")
        if t.name == "d2t" and t.type != lib.GGML_TYPE_I64:
            raise layout._error(f"tensor 'd2t' has type {_type_name(t.type)}; llama.cpp requires i64")


def _type_name(ggml_type: int) -> str:
    return ffi.string(lib.ggml_type_name(ggml_type)).decode()


def _check_experts(layout: GGUFLayout, arch: str, u32: Any, per_layer_max: Any, n_layer: int) -> None:
    n_expert = u32("expert_count", 0)
    used = per_layer_max("expert_used_count", n_layer)
    groups = u32("expert_group_count", 0)
    group_used = u32("expert_group_used_count", 0)
    if arch in ("hunyuan_vl", "hunyuan-dense") and n_expert <= 1:
        n_expert, used = 0, 0
    p = f"{arch}."
    if n_expert > LLAMA_MAX_EXPERTS:
        raise layout._error(f"{p}expert_count = {n_expert}; llama.cpp supports at most {LLAMA_MAX_EXPERTS} experts")
    if used > n_expert:
        raise layout._error(f"{p}expert_used_count = {used} exceeds {p}expert_count = {n_expert}")
    if n_expert > 0:
        if used == 0:
            raise layout._error(f"{p}expert_count = {n_expert} but {p}expert_used_count is 0")
        if groups >= n_expert:
            raise layout._error(f"{p}expert_group_count = {groups} must be below {p}expert_count = {n_expert}")
        if groups > 1:
            if n_expert % groups:
                raise layout._error(f"{p}expert_count = {n_expert} is not a multiple of "
                                    f"{p}expert_group_count = {groups}")
            if not 0 < group_used < groups:
                raise layout._error(f"{p}expert_group_used_count = {group_used} must be between 1 and "
                                    f"{p}expert_group_count - 1 = {groups - 1}")
    elif groups:
        raise layout._error(f"{p}expert_group_count = {groups} for a model without experts")

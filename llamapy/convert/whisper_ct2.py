"""CTranslate2 (faster-whisper) Whisper models to whisper.cpp's ggml file, losslessly, with numpy.

A CTranslate2 model folder holds ``model.bin`` (a header, then named variables: name, shape,
dtype id and raw bytes, then aliases between names), ``config.json`` and the vocabulary
(``vocabulary.txt`` one token a line, or ``vocabulary.json``). whisper.cpp's ggml file is
the magic ``ggml``, eleven int32 hyper-parameters, the mel filterbank, the vocabulary as raw
bytes, then each tensor as (n_dims, name length, type, dims innermost first, name, data).

The mapping undoes what CTranslate2 does to OpenAI's layout: its fused query/key/value (and
cross-attention key/value) projections are split again, the key bias it adds as zeros is
dropped (a key bias shifts every attention score of a query by the same amount, so softmax
ignores it), layer norms ``gamma``/``beta`` become ``weight``/``bias``. float16 and float32
weights are copied bit for bit; bfloat16 becomes float32 exactly; int8/int16 (quantized)
models are refused, since whisper.cpp's formats cannot hold them without loss. The mel
filterbank, which CTranslate2 does not store, is computed (Slaney-style, as Whisper's own).

Note: whisper.cpp 1.8.5 cannot run float32 files (its convolution needs float16 weights);
``out_type="f16"`` turns a float32 source into a runnable file, rounding its matrices.
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np

from .bert import ConvertError

GGML_MAGIC = 0x67676D6C
OUT_TYPES = ("auto", "f16", "f32")
CT2_BINARY_VERSION = 6
CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # CTranslate2's type ids, in order
_NUMPY = {"float32": "<f4", "int8": "i1", "int16": "<i2", "int32": "<i4", "float16": "<f2", "bfloat16": "<u2"}
SAMPLE_RATE = 16000
N_FFT = 400
_F32, _F16 = 0, 1  # ggml type ids in the file


@dataclass(frozen=True)
class _Variable:
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


class CT2Model:
    """The index of a CTranslate2 ``model.bin``; variables are read from the file one at a time."""

    def __init__(self, path: Path):
        self.path = path
        self.variables: dict[str, _Variable] = {}
        self.aliases: dict[str, str] = {}
        with open(path, "rb") as f:
            try:
                self._read_index(f, os.fstat(f.fileno()).st_size)
            except (struct.error, UnicodeDecodeError):
                raise ConvertError(f"{path} is not a CTranslate2 model.bin (truncated or another format)") from None

    def _read_index(self, f: BinaryIO, size: int) -> None:
        def take(fmt: str) -> tuple:
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))

        def string() -> str:
            (n,) = take("H")
            raw = f.read(n)
            if n == 0 or len(raw) != n or raw[-1] != 0:
                raise struct.error("bad string")
            return raw[:-1].decode("utf-8")

        (version,) = take("I")
        if version != CT2_BINARY_VERSION:
            raise ConvertError(f"{self.path}: not a CTranslate2 model of binary version {CT2_BINARY_VERSION} "
                               f"(found {version}; this converter reads CTranslate2 3.x/4.x models)")
        self.spec = string()
        (self.revision,) = take("I")
        (count,) = take("I")
        for _ in range(count):
            name = string()
            (rank,) = take("B")
            shape = take(f"{rank}I")
            (type_id,) = take("B")
            (nbytes,) = take("I")
            offset = f.tell()
            if type_id >= len(CT2_DTYPES) or offset + nbytes > size or \
                    nbytes != int(np.prod(shape, dtype=np.int64)) * np.dtype(_NUMPY[CT2_DTYPES[type_id]]).itemsize:
                raise struct.error("bad variable")
            self.variables[name] = _Variable(tuple(shape), CT2_DTYPES[type_id], offset, nbytes)
            f.seek(nbytes, os.SEEK_CUR)
        (n_aliases,) = take("I")
        for _ in range(n_aliases):
            alias = string()
            self.aliases[alias] = string()

    def resolve(self, name: str) -> str | None:
        """The variable a name (or alias) refers to, or None."""
        name = self.aliases.get(name, name)
        return name if name in self.variables else None

    def array(self, name: str) -> np.ndarray:
        """A variable read from the file (bfloat16 comes back as float32, exactly)."""
        target = self.resolve(name)
        if target is None:
            raise ConvertError(f"{self.path}: Whisper variable {name} is missing")
        v = self.variables[target]
        raw = np.fromfile(self.path, _NUMPY[v.dtype], int(np.prod(v.shape, dtype=np.int64)), offset=v.offset)
        if v.dtype == "bfloat16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.reshape(v.shape)

    def scalar(self, name: str) -> int | None:
        return int(self.array(name).reshape(-1)[0]) if self.resolve(name) else None


def convert_whisper_ct2(src: str | os.PathLike, dst: str | os.PathLike, out_type: str = "auto") -> Path:
    """Convert a CTranslate2 Whisper model folder (faster-whisper format) to a whisper.cpp ggml file.

    ``out_type`` "auto" keeps the source's precision exactly: float16 sources give a
    float16 file (ftype 1), float32/bfloat16 sources a float32 one (ftype 0). "f16" or
    "f32" force the matrices' type (f16 rounds a float32 source). Raises ConvertError for
    quantized (int8) or non-Whisper models, FileNotFoundError for a missing folder or model.bin.
    """
    if out_type not in OUT_TYPES:
        raise ConvertError(f"unknown output type {out_type!r}; choose from {', '.join(OUT_TYPES)}")
    folder = Path(src).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise ConvertError(f"{folder} is not a folder: give the CTranslate2 model folder "
                           f"(model.bin, config.json, vocabulary.txt)")
    if not (folder / "model.bin").is_file():
        raise FileNotFoundError(f"{folder} has no model.bin: not a CTranslate2 model folder")
    model = CT2Model(folder / "model.bin")
    if model.spec != "WhisperSpec":
        raise ConvertError(f"{folder} holds a CTranslate2 {model.spec}, not a Whisper model")
    _refuse_quantized(model, folder)
    hp = _hparams(model)
    if out_type != "auto":
        hp["ftype"] = _F16 if out_type == "f16" else _F32
    vocab = _vocabulary(folder, hp["n_vocab"])
    out = Path(dst).expanduser()
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with open(tmp, "wb") as f:
            _write_header(f, hp, vocab)
            for name, data, ggml_type in _tensors(model, hp):
                _write_tensor(f, name, data, ggml_type)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def convert_catalog_folder(pieces: Sequence[Path], out: Path) -> None:
    """Catalog hook: the one extracted CTranslate2 folder in ``pieces`` becomes ``out``."""
    if len(pieces) != 1:
        raise ConvertError(f"expected one CTranslate2 model folder, got {len(pieces)} pieces")
    convert_whisper_ct2(pieces[0], out)


# -- reading ----------------------------------------------------------------------------
def _refuse_quantized(model: CT2Model, folder: Path) -> None:
    weights = {n: v.dtype for n, v in model.variables.items() if n.endswith("/weight")}
    quantized = sorted({d for d in weights.values() if d.startswith("int")})
    if quantized or any(n.endswith("/weight_scale") for n in model.variables):
        raise ConvertError(
            f"{folder} is quantized ({', '.join(quantized) or 'int8'} weights): whisper.cpp cannot hold those "
            f"without loss. Convert a float16 or float32 CTranslate2 model (ct2-transformers-converter "
            f"--quantization float16), or quantize the converted ggml file with whisper.cpp's own tools.")


def _layers(model: CT2Model, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"/layer_(\d+)/")
    found = {int(m.group(1)) for n in model.variables if (m := pattern.match(n))}
    if not found or found != set(range(len(found))):
        raise ConvertError(f"{model.path}: the {prefix} layers are missing or not numbered 0..N-1")
    return len(found)


def _hparams(model: CT2Model) -> dict[str, int]:
    try:
        conv1 = model.variables["encoder/conv1/weight"].shape
        enc_pos = model.variables["encoder/position_encodings/encodings"].shape
        dec_pos = model.variables["decoder/position_encodings/encodings"].shape
        embed = model.variables["decoder/embeddings/weight"].shape
    except KeyError as e:
        raise ConvertError(f"{model.path}: Whisper variable {e.args[0]} is missing") from None
    n_audio_state, n_mels, _ = conv1
    matrices = {v.dtype for n, v in model.variables.items() if n.endswith("/weight") and len(v.shape) >= 2}
    hp = dict(
        n_vocab=embed[0], n_audio_ctx=enc_pos[0], n_audio_state=n_audio_state,
        n_audio_head=model.scalar("encoder/num_heads") or n_audio_state // 64,
        n_audio_layer=_layers(model, "encoder"), n_text_ctx=dec_pos[0], n_text_state=embed[1],
        n_text_head=model.scalar("decoder/num_heads") or embed[1] // 64,
        n_text_layer=_layers(model, "decoder"), n_mels=n_mels,
        ftype=_F16 if matrices == {"float16"} else _F32,  # f16 -> f32 is exact, the reverse is not
    )
    if hp["n_text_state"] != hp["n_audio_state"] or enc_pos[1] != n_audio_state or dec_pos[1] != embed[1]:
        raise ConvertError(f"{model.path}: inconsistent Whisper dimensions {hp}")
    projection = model.resolve("decoder/projection/weight")
    if projection not in (None, "decoder/embeddings/weight") and \
            not np.array_equal(model.array(projection), model.array("decoder/embeddings/weight")):
        raise ConvertError(f"{model.path}: the output projection is not tied to the token embeddings, "
                           f"which whisper.cpp's format cannot express")
    return hp


def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: each byte has a printable stand-in character; this maps them back."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


def _vocabulary(folder: Path, n_vocab: int) -> list[bytes]:
    """The text tokens (up to and including ``<|endoftext|>``) as raw bytes, as whisper.cpp stores them.

    whisper.cpp numbers the special, language and timestamp tokens that follow by itself.
    """
    if (folder / "vocabulary.json").is_file():
        tokens = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    elif (folder / "vocabulary.txt").is_file():
        tokens = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
    else:
        raise FileNotFoundError(f"{folder} has no vocabulary.txt or vocabulary.json")
    if len(tokens) != n_vocab:
        raise ConvertError(f"{folder}: the vocabulary has {len(tokens)} tokens, the model {n_vocab}")
    try:
        eot = tokens.index("<|endoftext|>")
    except ValueError:
        raise ConvertError(f"{folder}: the vocabulary has no <|endoftext|> token: not a Whisper vocabulary") from None
    decoder = _byte_decoder()
    try:
        return [bytes(decoder[c] for c in t) for t in tokens[:eot + 1]]
    except KeyError as e:
        raise ConvertError(f"{folder}: token character {e.args[0]!r} is not byte-level BPE") from None


def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Whisper's mel filterbank, (n_mels, n_fft // 2 + 1) float32: triangular filters on the
    Slaney mel scale (linear below 1 kHz, logarithmic above), area-normalised."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, log_step = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / log_step,
                        f / f_sp)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(log_step * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def _tensors(model: CT2Model, hp: dict[str, int]) -> Iterator[tuple[str, np.ndarray, int]]:
    """(ggml name, array, ggml type) in whisper.cpp's order; matrices keep the model's precision."""
    big = _F16 if hp["ftype"] == _F16 else _F32
    d = hp["n_audio_state"]

    def norm(src: str, dst: str) -> Iterator[tuple[str, np.ndarray, int]]:
        yield f"{dst}.weight", model.array(f"{src}/gamma"), _F32
        yield f"{dst}.bias", model.array(f"{src}/beta"), _F32

    def linear(src: str, dst: str, rows: slice = slice(None), bias: bool = True):
        yield f"{dst}.weight", model.array(f"{src}/weight")[rows], big
        if bias:
            yield f"{dst}.bias", model.array(f"{src}/bias")[rows], _F32

    def block(src: str, dst: str, attn: str, fused: str, parts: tuple[str, ...]):
        """A fused projection split back into its query/key/value parts (keys have no bias)."""
        for i, part in enumerate(parts):
            yield from linear(f"{src}/{fused}", f"{dst}.{attn}.{part}", slice(i * d, (i + 1) * d), part != "key")

    yield "encoder.positional_embedding", model.array("encoder/position_encodings/encodings"), _F32
    for conv in ("conv1", "conv2"):
        yield f"encoder.{conv}.weight", model.array(f"encoder/{conv}/weight"), big
        yield f"encoder.{conv}.bias", model.array(f"encoder/{conv}/bias").reshape(-1, 1), _F32
    for i in range(hp["n_audio_layer"]):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        yield from norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from block(f"{src}/self_attention", dst, "attn", "linear_0", ("query", "key", "value"))
        yield from linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        yield from norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
        yield from linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        yield from linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
    yield from norm("encoder/layer_norm", "encoder.ln_post")

    yield "decoder.positional_embedding", model.array("decoder/position_encodings/encodings"), _F32
    yield "decoder.token_embedding.weight", model.array("decoder/embeddings/weight"), big
    for i in range(hp["n_text_layer"]):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        yield from norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from block(f"{src}/self_attention", dst, "attn", "linear_0", ("query", "key", "value"))
        yield from linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        yield from norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        yield from linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
        yield from block(f"{src}/attention", dst, "cross_attn", "linear_1", ("key", "value"))
        yield from linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
        yield from norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
        yield from linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        yield from linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
    yield from norm("decoder/layer_norm", "decoder.ln")


# -- writing ----------------------------------------------------------------------------
def _write_header(f: BinaryIO, hp: dict[str, int], vocab: list[bytes]) -> None:
    keys = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx",
            "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")
    f.write(struct.pack("<12i", GGML_MAGIC, *(hp[k] for k in keys)))
    filters = mel_filters(hp["n_mels"])
    f.write(struct.pack("<2i", *filters.shape))
    f.write(filters.astype("<f4").tobytes())
    f.write(struct.pack("<i", len(vocab)))
    for token in vocab:
        f.write(struct.pack("<I", len(token)))
        f.write(token)


def _write_tensor(f: BinaryIO, name: str, data: np.ndarray, ggml_type: int) -> None:
    """One tensor: numpy's C order is ggml's order with the dimensions listed innermost first."""
    data = np.ascontiguousarray(data, dtype="<f2" if ggml_type == _F16 else "<f4")
    encoded = name.encode()
    f.write(struct.pack(f"<3i{data.ndim}i", data.ndim, len(encoded), ggml_type, *reversed(data.shape)))
    f.write(encoded)
    f.write(data.tobytes())

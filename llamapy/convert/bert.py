"""BERT-family sentence-transformers / Hugging Face folders to GGUF, with numpy and safetensors.

Reads ``config.json``, the WordPiece vocabulary (``tokenizer.json`` or ``vocab.txt``), the
sentence-transformers pooling config and ``model.safetensors`` (sharded or not), and writes a
GGUF with llama.cpp's ``bert`` architecture: its tensor names, hyper-parameters, WordPiece
vocabulary in llama.cpp's phantom-space form, special tokens, normaliser flags and pooling
type. A cross-encoder (``BertForSequenceClassification``) keeps its pooler and classifier as
llama.cpp's ranking head (``cls``, ``cls.output``) and gets rank pooling.

f32 and f16 are written directly; q8_0 is written as f32 and quantized by llama.cpp's own
quantizer, which keeps the tensors it needs in f32 (norms, biases, position embeddings).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._ffi import ffi, lib
from ..context import default_threads
from ..enums import PoolingType
from ..errors import LlamaError
from ..gguf.file import GGUFFile

OUT_TYPES = ("f32", "f16", "q8_0")
ARCHITECTURES = {"BertModel": "encoder", "BertForMaskedLM": "encoder", "BertForPreTraining": "encoder",
                 "BertForSequenceClassification": "cross-encoder"}
POOLINGS = {"mean": PoolingType.MEAN, "cls": PoolingType.CLS, "last": PoolingType.LAST}

_NORMAL, _CONTROL, _UNUSED = 1, 3, 5  # llama.cpp token types
_PHANTOM_SPACE = "\u2581"

# Hugging Face BERT tensor names -> llama.cpp names ("{i}" is the layer)
_LAYER_TENSORS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_GLOBAL_TENSORS = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.LayerNorm": "token_embd_norm",
}
_HEAD_TENSORS = {"pooler.dense": "cls", "classifier": "cls.output"}  # cross-encoders only
_DROPPED = re.compile(r"^(embeddings\.position_ids|pooler\..*|cls\.(predictions|seq_relationship)\..*)$")
_KEEP_F32 = ("position_embd.weight", "token_types.weight")  # llama.cpp reads these as f32


class ConvertError(LlamaError, ValueError):
    """A model folder cannot be converted (unsupported architecture, missing or inconsistent files)."""


@dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    types: list[int]
    special: dict[str, int]  # role -> token id
    lowercase: bool | None
    strip_accents: bool | None


def convert_bert(src: str | os.PathLike, dst: str | os.PathLike, out_type: str = "f16",
                 pooling: str | None = None, name: str | None = None) -> Path:
    """Convert a BERT-family Hugging Face / sentence-transformers folder to a GGUF file.

    ``out_type`` is f32, f16 or q8_0. ``pooling`` (mean, cls, last) overrides the folder's
    sentence-transformers pooling; without either, an encoder gets CLS pooling (BERT's
    own pooler position) and a cross-encoder rank pooling. Raises ConvertError naming what
    is not supported, FileNotFoundError for a missing folder.
    """
    folder = Path(src).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise ConvertError(f"{folder} is not a folder: give the Hugging Face model folder "
                           f"(config.json, tokenizer, model.safetensors)")
    if out_type not in OUT_TYPES:
        raise ConvertError(f"unknown output type {out_type!r}; choose from {', '.join(OUT_TYPES)}")
    config = _read_json(folder / "config.json", "config.json", required=True)
    kind = _check_architecture(folder, config)
    vocab = _read_vocab(folder, int(config["vocab_size"]))
    pool = _pooling(folder, kind, pooling)
    out = Path(dst).expanduser()
    gguf = GGUFFile.empty()
    try:
        _write_metadata(gguf, config, vocab, pool, kind, name or folder.resolve().name,
                        1 if out_type == "f16" else 0)
        for tensor_name, data in _tensors(folder, config, kind):
            gguf.add_tensor(tensor_name, _stored(tensor_name, data, out_type))
        if out_type != "q8_0":
            return gguf.write(out)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".convert-") as tmp:
            f32 = gguf.write(Path(tmp) / "f32.gguf")
            gguf.close()
            _quantize(f32, out, lib.LLAMA_FTYPE_MOSTLY_Q8_0)
        return out
    finally:
        gguf.close()


def convert_catalog_zip(pieces: Sequence[Path], out: Path) -> None:
    """Catalog hook: unzip the one sentence-transformers archive in ``pieces`` and write an f16 GGUF."""
    if len(pieces) != 1:
        raise ConvertError(f"expected one model archive, got {len(pieces)} pieces")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".unzip-") as tmp:
        with zipfile.ZipFile(pieces[0]) as zf:
            zf.extractall(tmp)
        roots = {p.parent for p in Path(tmp).rglob("config.json") if (p.parent / "tokenizer.json").is_file()
                 or (p.parent / "vocab.txt").is_file()}
        if len(roots) != 1:
            raise ConvertError(f"{pieces[0].name}: expected one model folder in the archive, found {len(roots)}")
        convert_bert(roots.pop(), out, "f16")


# -- reading the folder ----------------------------------------------------------------
def _read_json(path: Path, what: str, required: bool = False) -> Any:
    if not path.is_file():
        if required:
            raise ConvertError(f"{path.parent} is not a Hugging Face model folder: it has no {what}")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path} is not valid JSON: {e}") from None


def _check_architecture(folder: Path, config: dict) -> str:
    archs = config.get("architectures") or []
    model_type = config.get("model_type", "?")
    named = ", ".join(archs) or "no architecture"
    supported = ", ".join(ARCHITECTURES)
    if model_type != "bert" or (archs and not any(a in ARCHITECTURES for a in archs)):
        raise ConvertError(f"{folder.name}: {named} (model_type {model_type!r}) is not supported; this converter "
                           f"handles BERT encoders and cross-encoders ({supported})")
    kind = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), "encoder")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConvertError(f"{folder.name}: position_embedding_type {config['position_embedding_type']!r} is not "
                           f"supported (llama.cpp's bert architecture uses absolute positions)")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConvertError(f"{folder.name}: hidden_act {config['hidden_act']!r} is not supported (only gelu)")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings"):
        if not isinstance(config.get(key), int):
            raise ConvertError(f"{folder.name}/config.json has no integer {key!r}")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ConvertError(f"{folder.name}: hidden_size {config['hidden_size']} is not a multiple of "
                           f"num_attention_heads {config['num_attention_heads']}")
    return kind


def _read_vocab(folder: Path, vocab_size: int) -> _Vocab:
    """The WordPiece vocabulary in llama.cpp's form: word-initial pieces get a phantom space,
    '##' continuations lose their prefix, special tokens stay as they are."""
    tok = _read_json(folder / "tokenizer.json", "tokenizer.json")
    cfg = _read_json(folder / "tokenizer_config.json", "tokenizer_config.json") or {}
    names = {**cfg, **(_read_json(folder / "special_tokens_map.json", "special_tokens_map.json") or {})}
    lowercase = strip_accents = None
    if tok is not None:
        model = tok.get("model") or {}
        if model.get("type") != "WordPiece":
            raise ConvertError(f"{folder.name}: tokenizer model {model.get('type')!r} is not supported "
                               f"(BERT models use WordPiece)")
        by_id = {i: t for t, i in model["vocab"].items()}
        control = {a["id"] for a in tok.get("added_tokens", []) if a.get("special")}
        norm = tok.get("normalizer") or {}
        if norm.get("type") == "BertNormalizer":
            lowercase, strip_accents = norm.get("lowercase"), norm.get("strip_accents")
    elif (folder / "vocab.txt").is_file():
        lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
        by_id = dict(enumerate(lines))
        specials = {v if isinstance(v, str) else v.get("content") for k, v in names.items() if k.endswith("_token")}
        control = {i for i, t in by_id.items() if t in specials}
    else:
        raise ConvertError(f"{folder.name} has no tokenizer.json or vocab.txt (the WordPiece vocabulary)")
    if lowercase is None and "do_lower_case" in cfg:
        lowercase = bool(cfg["do_lower_case"])
    if strip_accents is None and isinstance(cfg.get("strip_accents"), bool):
        strip_accents = cfg["strip_accents"]
    n = max(by_id) + 1 if by_id else 0
    if n > vocab_size or len(by_id) != n:
        raise ConvertError(f"{folder.name}: the tokenizer has {len(by_id)} tokens with ids up to {n - 1}, "
                           f"the model's vocab_size is {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(_UNUSED)
        elif i in control:
            tokens.append(text)
            types.append(_CONTROL)
        else:
            tokens.append(text[2:] if text.startswith("##") else _PHANTOM_SPACE + text)
            types.append(_NORMAL)
    ids = {t: i for i, t in enumerate(tokens)}
    special = {}
    for role, default in (("cls", "[CLS]"), ("sep", "[SEP]"), ("unk", "[UNK]"), ("pad", "[PAD]"),
                          ("mask", "[MASK]")):
        value = names.get(f"{role}_token", default)
        text = value.get("content") if isinstance(value, dict) else value
        if text in ids:
            special[role] = ids[text]
        elif role in ("cls", "sep", "unk"):
            raise ConvertError(f"{folder.name}: the special token {text!r} ({role}) is not in the vocabulary")
    return _Vocab(tokens, types, special, lowercase, strip_accents)


def _pooling(folder: Path, kind: str, override: str | None) -> PoolingType:
    if kind == "cross-encoder":
        if override is not None:
            raise ConvertError("a cross-encoder always gets rank pooling; do not pass a pooling type")
        return PoolingType.RANK
    modules = _read_json(folder / "modules.json", "modules.json") or []
    for m in modules:
        if m.get("type", "").endswith(".Dense"):
            raise ConvertError(f"{folder.name}: sentence-transformers Dense layers after pooling are not "
                               f"supported (module {m.get('path')!r})")
    if override is not None:
        if override not in POOLINGS:
            raise ConvertError(f"unknown pooling {override!r}; choose from {', '.join(POOLINGS)}")
        return POOLINGS[override]
    paths = [m.get("path", "") for m in modules if m.get("type", "").endswith(".Pooling")]
    cfg = _read_json(folder / (paths[0] if paths else "1_Pooling") / "config.json", "pooling config")
    if cfg is None:
        return PoolingType.CLS
    modes = {k[len("pooling_mode_"):] for k, v in cfg.items() if k.startswith("pooling_mode_") and v}
    known = {"mean_tokens": PoolingType.MEAN, "cls_token": PoolingType.CLS, "lasttoken": PoolingType.LAST}
    if len(modes) != 1 or not modes <= set(known):
        raise ConvertError(f"{folder.name}: sentence-transformers pooling {sorted(modes)} is not supported; "
                           f"llama.cpp pools by mean, cls or last token")
    return known[modes.pop()]


def _safetensors_files(folder: Path) -> list[Path]:
    index = _read_json(folder / "model.safetensors.index.json", "model.safetensors.index.json")
    if index is not None:
        return [folder / f for f in sorted(set(index["weight_map"].values()))]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    found = "pytorch_model.bin (a torch checkpoint)" if (folder / "pytorch_model.bin").is_file() else "no weights"
    raise ConvertError(f"{folder.name} has {found}; this converter reads model.safetensors")


def _tensors(folder: Path, config: dict, kind: str) -> Iterator[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array) for every tensor llama.cpp uses; unknown tensors are an error."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise ConvertError("converting needs the safetensors package: pip install 'llamapy[convert]'") from None
    n_layer = config["num_hidden_layers"]
    seen = set()
    for path in _safetensors_files(folder):
        with safe_open(str(path), framework="np") as f:
            for hf_name in f.keys():
                gguf_name = _gguf_name(hf_name, kind, n_layer)
                if gguf_name is None:
                    continue
                seen.add(gguf_name)
                yield gguf_name, np.ascontiguousarray(f.get_tensor(hf_name), dtype=np.float32)
    missing = [n for n in ("token_embd.weight", "position_embd.weight", "token_embd_norm.weight")
               + tuple(f"blk.{i}.{t}.weight" for i in range(n_layer) for t in _LAYER_TENSORS.values())
               if n not in seen]
    if missing:
        raise ConvertError(f"{folder.name}: tensors missing from the safetensors: {', '.join(missing[:5])}"
                           + (" ..." if len(missing) > 5 else ""))


def _gguf_name(hf_name: str, kind: str, n_layer: int) -> str | None:
    name = hf_name[len("bert."):] if hf_name.startswith("bert.") else hf_name
    name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
    base, _, suffix = name.rpartition(".")
    if suffix in ("weight", "bias"):
        if base in _GLOBAL_TENSORS:
            return f"{_GLOBAL_TENSORS[base]}.{suffix}"
        if kind == "cross-encoder" and base in _HEAD_TENSORS:
            return f"{_HEAD_TENSORS[base]}.{suffix}"
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", base)
        if m and m.group(2) in _LAYER_TENSORS and int(m.group(1)) < n_layer:
            return f"blk.{m.group(1)}.{_LAYER_TENSORS[m.group(2)]}.{suffix}"
    if _DROPPED.match(name):
        return None
    raise ConvertError(f"unexpected tensor {hf_name!r}: not part of a BERT encoder this converter knows")


def _stored(name: str, data: np.ndarray, out_type: str) -> np.ndarray:
    """f16 for the 2-D weights of an f16 file; f32 for everything else (as llama.cpp expects)."""
    if out_type == "f16" and data.ndim == 2 and name.endswith(".weight") and name not in _KEEP_F32:
        return data.astype(np.float16)
    return data


# -- writing -----------------------------------------------------------------------------
def _write_metadata(g: GGUFFile, config: dict, vocab: _Vocab, pooling: PoolingType, kind: str, name: str,
                    file_type: int) -> None:
    a = "bert"
    g.set("general.architecture", a, "str")
    g.set("general.name", name, "str")
    g.set("general.file_type", file_type, "u32")
    g.set(f"{a}.context_length", config["max_position_embeddings"], "u32")
    g.set(f"{a}.embedding_length", config["hidden_size"], "u32")
    g.set(f"{a}.feed_forward_length", config["intermediate_size"], "u32")
    g.set(f"{a}.block_count", config["num_hidden_layers"], "u32")
    g.set(f"{a}.attention.head_count", config["num_attention_heads"], "u32")
    g.set(f"{a}.attention.layer_norm_epsilon", float(config.get("layer_norm_eps", 1e-12)), "f32")
    g.set(f"{a}.attention.causal", False, "bool")
    g.set(f"{a}.pooling_type", int(pooling), "u32")
    if kind == "cross-encoder":
        labels = config.get("id2label") or {"0": "LABEL_0"}
        g.set(f"{a}.classifier.output_labels", [labels[k] for k in sorted(labels, key=int)], "arr[str]")
    g.set("tokenizer.ggml.model", "bert", "str")
    g.set("tokenizer.ggml.pre", "default", "str")
    g.set("tokenizer.ggml.tokens", vocab.tokens, "arr[str]")
    g.set("tokenizer.ggml.token_type", vocab.types, "arr[i32]")
    g.set("tokenizer.ggml.token_type_count", int(config.get("type_vocab_size", 1)), "u32")
    keys = {"cls": ("bos_token_id", "cls_token_id"), "sep": ("seperator_token_id",),
            "unk": ("unknown_token_id",), "pad": ("padding_token_id",), "mask": ("mask_token_id",)}
    for role, token_id in vocab.special.items():
        for key in keys[role]:
            g.set(f"tokenizer.ggml.{key}", token_id, "u32")
    g.set("tokenizer.ggml.add_bos_token", True, "bool")
    g.set("tokenizer.ggml.add_sep_token", True, "bool")
    g.set("tokenizer.ggml.add_eos_token", False, "bool")
    if vocab.lowercase is not None:
        g.set("tokenizer.ggml.normalizer.lowercase", vocab.lowercase, "bool")
    if vocab.strip_accents is not None:
        g.set("tokenizer.ggml.normalizer.strip_accents", vocab.strip_accents, "bool")


def _quantize(src: Path, dst: Path, ftype: int) -> None:
    """Quantize a GGUF with llama.cpp's quantizer (it chooses which tensors stay f32)."""
    params = ffi.new("llama_model_quantize_params *", lib.llama_model_quantize_default_params())
    params.nthread = default_threads()
    params.ftype = ftype
    if lib.llama_model_quantize(os.fsencode(src), os.fsencode(dst), params) != 0:
        raise ConvertError(f"llama.cpp could not quantize {src.name} (see llamapy.set_verbose() for its log)")


__all__ = ["ConvertError", "convert_bert", "convert_catalog_zip", "OUT_TYPES"]

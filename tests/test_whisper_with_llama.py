"""whisper.cpp (with its own older ggml) and llama.cpp live in one process and both work."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from tests.conftest import run_python


def test_llama_and_whisper_in_one_process(model_path, info):
    tree = Path(info["whisper_cpp"]["tree"])
    code = f"""
import wave, numpy as np
import llamapy._ffi as F
ffi, lib = F.ffi, F.lib
# llama: load the model and greedily decode a few tokens
m = lib.llama_model_load_from_file({str(model_path)!r}.encode(), lib.llama_model_default_params())
cp = lib.llama_context_default_params(); cp.n_ctx = 256; cp.n_threads = 2
ctx = lib.llama_init_from_model(m, cp)
vocab = lib.llama_model_get_vocab(m)
toks = ffi.new('llama_token[64]')
n = lib.llama_tokenize(vocab, b'The capital of France is', 24, toks, 64, True, False)
assert lib.llama_decode(ctx, lib.llama_batch_get_one(toks, n)) == 0
smpl = lib.llama_sampler_init_greedy()
out = []
for _ in range(4):
    t = lib.llama_sampler_sample(smpl, ctx, -1)
    out.append(t)
    one = ffi.new('llama_token[1]', [t])
    assert lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1)) == 0
# whisper: its own ggml, initialised in the same process
wffi, wlib = F.whisper()
wctx = wlib.whisper_init_from_file_with_params({str(tree / 'models/for-tests-ggml-tiny.en.bin')!r}.encode(),
                                               wlib.whisper_context_default_params())
assert wctx != wffi.NULL
with wave.open({str(tree / 'samples/jfk.wav')!r}) as w:
    pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
buf = wffi.from_buffer('float[]', pcm)
assert wlib.whisper_pcm_to_mel(wctx, buf, len(pcm), 1) == 0
mel = wlib.whisper_n_len(wctx)
# llama still works after whisper came up
t = lib.llama_sampler_sample(smpl, ctx, -1)
print(len(out), wlib.whisper_model_n_vocab(wctx), mel, t >= 0)
wlib.whisper_free(wctx); lib.llama_sampler_free(smpl); lib.llama_free(ctx); lib.llama_model_free(m)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_tokens, n_vocab, mel_frames, ok = proc.stdout.split()
    assert n_tokens == "4" and int(n_vocab) == 51864 and int(mel_frames) > 1000 and ok == "True"


def test_jfk_sample_is_16k_mono(info):
    with wave.open(str(Path(info["whisper_cpp"]["tree"]) / "samples/jfk.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert np.frombuffer(w.readframes(100), dtype=np.int16).size == 100

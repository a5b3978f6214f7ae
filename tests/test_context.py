"""Model and Context: parameters, decode errors, outputs, memory, state, cancellation."""
from __future__ import annotations

import _thread
import threading
import time

import numpy as np
import pytest

from llamapy import (
    Batch,
    ClosedError,
    Context,
    ContextError,
    DecodeAbortedError,
    InvalidBatchError,
    Model,
    ModelLoadError,
    NoKvSlotError,
    SamplerChain,
    StateError,
)
from tests.conftest import run_python

PROMPT = "The quick brown fox jumps over the lazy dog because"


@pytest.fixture
def ctx(model):
    with Context(model, n_ctx=512, n_batch=256, n_threads=2) as c:
        yield c


def greedy(ctx: Context, tokens: list[int], n: int, seq_id: int = 0) -> list[int]:
    """Decode ``tokens`` after what the sequence holds, then n greedy tokens."""
    sampler = SamplerChain.greedy()
    ctx.decode(Batch.from_tokens(tokens, seq_id=seq_id))
    out = []
    for _ in range(n):
        t = sampler.sample(ctx, -1)
        out.append(t)
        ctx.decode(Batch.from_tokens([t], seq_id=seq_id))
    return out


# -- model -------------------------------------------------------------------------------
def test_model_properties(model):
    assert model.n_layer == 30 and model.n_embd == 576 and model.n_head == 9 and model.n_head_kv == 3
    assert model.n_ctx_train == 8192 and 130e6 < model.n_params < 140e6 and model.size > 50e6
    assert "llama" in model.description and not model.has_encoder and model.has_decoder
    assert not model.is_recurrent and not model.is_hybrid
    md = model.metadata
    assert md["general.architecture"] == "llama" and model.meta("general.architecture") == "llama"
    assert model.meta("no.such.key") is None
    assert "<|im_start|>" in model.chat_template() and model.chat_templates()["default"] == model.chat_template()


def test_missing_and_bad_model_files(tmp_path, model_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Model.from_file(tmp_path / "nope.gguf")
    with pytest.raises(IsADirectoryError):
        Model.from_file(tmp_path)
    bad = tmp_path / "text.gguf"
    bad.write_text("this is not a model")
    with pytest.raises(ModelLoadError, match="not a GGUF model file"):
        Model.from_file(bad)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(model_path.read_bytes()[: 3 << 20])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        Model.from_file(truncated)


def test_progress_callback_and_cancel(model_path):
    seen: list[float] = []
    with Model.from_file(model_path, progress=lambda p: seen.append(p)) as m:
        assert m.n_layer == 30
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    with pytest.raises(ModelLoadError, match="cancelled"):
        Model.from_file(model_path, progress=lambda p: p < 0.3)

    def boom(p: float) -> None:
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        Model.from_file(model_path, progress=boom)


def test_model_params_by_name(model_path):
    with Model.from_file(model_path, kv_overrides={"llama.context_length": 1024}, use_mmap=False,
                         check_tensors=True) as m:
        assert m.n_ctx_train == 1024
    with pytest.raises(TypeError, match="unknown llama_model_params field 'n_gpu_layer'"):
        Model.from_file(model_path, n_gpu_layer=3)
    with pytest.raises(ValueError, match="split_mode: unknown value 'diagonal'"):
        Model.from_file(model_path, split_mode="diagonal")


def test_vocab_only_model_cannot_decode(model_path):
    with Model.from_file(model_path, vocab_only=True) as m:
        assert m.vocab.tokenize("hi", add_special=False)
        with pytest.raises(ContextError):
            Context(m, n_ctx=64)


# -- context -----------------------------------------------------------------------------
def test_context_params(model):
    with Context(model, n_ctx=1024, n_batch=128, n_ubatch=64, n_seq_max=2, n_threads=1, n_threads_batch=2,
                 flash_attn=False, type_k="q8_0", type_v="f16", no_perf=False) as c:
        assert (c.n_ctx, c.n_batch, c.n_ubatch, c.n_seq_max) == (1024, 128, 64, 2)
        assert (c.n_threads, c.n_threads_batch) == (1, 2)
        c.set_threads(2, 2)
        assert c.n_threads == 2
        c.decode(Batch.from_tokens(model.vocab.tokenize(PROMPT)))
        perf = c.perf()
        assert perf.n_prompt_tokens + perf.n_eval >= 1 and perf.prompt_eval_ms + perf.eval_ms > 0
        c.perf_reset()
        assert c.perf().prompt_eval_ms == 0  # (llama.cpp reports token counts of at least 1)
    with pytest.raises(ValueError, match="type_k: unknown value 'q9_9'"):
        Context(model, type_k="q9_9")
    with pytest.raises(TypeError, match="abort_callback is managed by llamapy"):
        Context(model, abort_callback=1)


def test_logits_are_zero_copy_views(model, ctx):
    toks = model.vocab.tokenize(PROMPT)
    ctx.decode(Batch.from_tokens(toks, logits="all"))
    last = ctx.logits(-1)
    assert last.shape == (49152,) and last.dtype == np.float32 and not last.flags.writeable
    allv = ctx.all_logits()
    assert allv.shape == (len(toks), 49152)
    np.testing.assert_array_equal(allv[-1], last)
    np.testing.assert_array_equal(ctx.logits(0), allv[0])
    assert np.shares_memory(allv[-1], ctx.logits(-1)) or allv[-1].ctypes.data == last.ctypes.data
    kept = last.copy()
    ctx.decode(Batch.from_tokens([int(np.argmax(kept))]))
    assert not np.array_equal(ctx.logits(-1), kept)
    with pytest.raises(IndexError, match="no logits"):
        ctx.logits(5)


def test_greedy_is_deterministic_and_positions_continue(model, ctx):
    toks = model.vocab.tokenize(PROMPT)
    a = greedy(ctx, toks, 16)
    assert ctx.memory.seq_pos_max(0) == len(toks) + 16 - 1
    ctx.memory.clear()
    assert ctx.memory.seq_pos_max(0) == -1
    assert greedy(ctx, toks, 16) == a


def test_decode_errors_leave_the_context_usable(model, ctx):
    toks = model.vocab.tokenize(PROMPT)
    with pytest.raises(InvalidBatchError, match=r"invalid token\[1\] = 49159"):
        ctx.decode(Batch.from_tokens([5, 49152 + 7]))
    with pytest.raises(InvalidBatchError):
        b = Batch(4)
        b.add(5, 0, seq_ids=3)  # n_seq_max is 1
        ctx.decode(b)
    with pytest.raises(InvalidBatchError, match="empty"):
        ctx.decode(Batch(4))
    with pytest.raises(InvalidBatchError, match="do not fit"):
        Batch(2).add_sequence([1, 2, 3])
    assert greedy(ctx, toks, 4)


def test_context_full_raises_no_kv_slot(model):
    with Context(model, n_ctx=256, n_batch=256, n_threads=2) as c:
        c.decode(Batch.from_tokens(list(range(100, 300))))
        with pytest.raises(NoKvSlotError, match="no room in the context"):
            c.decode(Batch.from_tokens(list(range(300, 400))))
        assert c.memory.seq_pos_max(0) == 199
        c.decode(Batch.from_tokens(list(range(300, 340))))
        assert c.memory.seq_pos_max(0) == 239


def test_partial_copy_needs_a_unified_cache(model):
    with Context(model, n_ctx=512, n_seq_max=2, n_threads=2) as c:
        c.decode(Batch.from_tokens([1, 2, 3, 4], seq_id=0))
        with pytest.raises(ValueError, match="kv_unified=True"):
            c.memory.seq_cp(0, 1, 0, 2)
        c.memory.seq_cp(0, 1)
        assert c.memory.seq_pos_max(1) == 3
        for bad in (-2, 2, 99):
            with pytest.raises(ValueError, match="out of range"):
                c.memory.seq_pos_max(bad)
            with pytest.raises(ValueError, match="out of range"):
                c.memory.seq_rm(bad)


def test_memory_operations(model):
    with Context(model, n_ctx=512, n_seq_max=4, n_threads=2, kv_unified=True) as c:
        toks = model.vocab.tokenize(PROMPT)
        c.decode(Batch.from_tokens(toks, seq_id=0))
        m = c.memory
        n = len(toks)
        assert (m.seq_pos_min(0), m.seq_pos_max(0)) == (0, n - 1)
        m.seq_cp(0, 1)
        assert m.seq_pos_max(1) == n - 1
        m.seq_rm(1, 5, -1)
        assert m.seq_pos_max(1) == 4
        m.seq_cp(0, 2, 0, 3)
        assert m.seq_pos_max(2) == 2
        m.seq_keep(0)
        assert m.seq_pos_max(1) == -1 and m.seq_pos_max(2) == -1 and m.seq_pos_max(0) == n - 1
        assert m.can_shift
        m.seq_add(0, 0, -1, 10)
        assert (m.seq_pos_min(0), m.seq_pos_max(0)) == (10, n + 9)
        m.seq_div(0, 0, -1, 2)
        assert m.seq_pos_max(0) == (n + 9) // 2
        with pytest.raises(ValueError, match="out of range"):
            m.seq_cp(0, 9)
        m.clear()
        assert m.seq_pos_max(0) == -1


def test_shared_prefix_sequences_match_separate_runs(model):
    toks = model.vocab.tokenize(PROMPT)
    with Context(model, n_ctx=512, n_seq_max=2, n_threads=2) as c:
        c.decode(Batch.from_tokens(toks, seq_id=0))
        c.memory.seq_cp(0, 1)
        s0, s1 = SamplerChain.greedy(), SamplerChain.greedy()
        first = s0.sample(c, -1)
        assert s1.sample(c, -1) == first
        b = Batch(2, n_seq_max=1)
        b.add(first, len(toks), 0, logits=True)
        b.add(first, len(toks), 1, logits=True)
        c.decode(b)
        np.testing.assert_allclose(c.logits(0), c.logits(1), rtol=1e-4, atol=1e-4)


def continue_from(c: Context, seq: int, tok: int, pos: int, n: int) -> list[int]:
    """Decode ``tok`` at ``pos`` in a sequence, then n greedy tokens; returns those tokens."""
    sampler, b, out = SamplerChain.greedy(), Batch(1), []
    for i in range(n):
        b.clear()
        b.add(tok, pos + i, seq, logits=True)
        c.decode(b)
        tok = sampler.sample(c, -1)
        out.append(tok)
    return out


def test_state_round_trip_bytes_and_file(model, tmp_path):
    toks = model.vocab.tokenize(PROMPT)
    head, last, pos = toks[:-1], toks[-1], len(toks) - 1
    with Context(model, n_ctx=256, n_threads=2) as a:
        a.decode(Batch.from_tokens(head))
        state = a.save_state()
        a.save_state_file(tmp_path / "s.bin", head)
        expected = continue_from(a, 0, last, pos, 12)
    for restore in ("bytes", "file"):
        with Context(model, n_ctx=256, n_threads=2) as b:
            if restore == "bytes":
                b.load_state(state)
            else:
                assert b.load_state_file(tmp_path / "s.bin") == head
            assert b.memory.seq_pos_max(0) == pos - 1
            assert continue_from(b, 0, last, pos, 12) == expected, restore
    with Context(model, n_ctx=256, n_threads=2) as c:
        with pytest.raises(StateError):
            c.load_state(b"garbage" * 10)
        with pytest.raises(FileNotFoundError):
            c.load_state_file(tmp_path / "missing.bin")


def test_sequence_state_round_trip(model, tmp_path):
    toks = model.vocab.tokenize(PROMPT)
    head, last, pos = toks[:-1], toks[-1], len(toks) - 1
    with Context(model, n_ctx=512, n_seq_max=2, n_threads=2) as c:
        c.decode(Batch.from_tokens(head, seq_id=0))
        data = c.save_seq_state(0)
        c.save_seq_state_file(tmp_path / "seq.bin", 0, head)
        expected = continue_from(c, 0, last, pos, 10)
        c.load_seq_state(data, 1)
        assert continue_from(c, 1, last, pos, 10) == expected
        c.memory.seq_rm(1)
        assert c.load_seq_state_file(tmp_path / "seq.bin", 1) == head
        assert continue_from(c, 1, last, pos, 10) == expected
        with pytest.raises(ValueError, match="out of range"):
            c.save_seq_state(5)


def test_cancel_from_another_thread_rolls_back(model):
    with Context(model, n_ctx=4096, n_batch=4096, n_ubatch=256, n_threads=2) as c:
        toks = list(range(1000, 4000))
        timer = threading.Timer(0.3, c.cancel)
        timer.start()
        with pytest.raises(DecodeAbortedError, match="cancelled"):
            c.decode(Batch.from_tokens(toks))
        timer.join()
        assert c.memory.seq_pos_max(0) == -1  # nothing half-done left behind
        c.decode(Batch.from_tokens(model.vocab.tokenize(PROMPT)))
        assert c.memory.seq_pos_max(0) == len(model.vocab.tokenize(PROMPT)) - 1


def test_ctrl_c_interrupts_a_long_decode(model):
    with Context(model, n_ctx=4096, n_batch=4096, n_ubatch=256, n_threads=2) as c:
        toks = list(range(1000, 4000))
        timer = threading.Timer(0.3, _thread.interrupt_main)
        timer.start()
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            c.decode(Batch.from_tokens(toks))
        timer.join()
        assert time.perf_counter() - t0 < 60  # it stopped early, long before the decode could finish
        assert c.memory.seq_pos_max(0) == -1
        c.decode(Batch.from_tokens([1, 2, 3]))
        assert c.memory.seq_pos_max(0) == 2


def test_embeddings_pooled_and_per_token(model):
    with Context(model, n_ctx=256, embeddings=True, pooling_type="mean", n_threads=2) as c:
        c.decode(Batch.from_tokens(model.vocab.tokenize(PROMPT), logits="all"))
        e = c.sequence_embeddings(0)
        assert e.shape == (576,) and np.isfinite(e).all() and np.linalg.norm(e) > 0
    with Context(model, n_ctx=256, embeddings=True, pooling_type="none", n_threads=2) as c:
        c.decode(Batch.from_tokens(model.vocab.tokenize(PROMPT), logits="all"))
        assert c.embeddings(0).shape == (576,) and not np.array_equal(c.embeddings(0), c.embeddings(-1))


def test_control_vector_changes_and_restores_logits(model, ctx):
    toks = model.vocab.tokenize(PROMPT)
    ctx.decode(Batch.from_tokens(toks))
    base = ctx.logits().copy()
    rng = np.random.default_rng(0)
    ctx.set_control_vector(rng.normal(0, 0.5, (model.n_layer, model.n_embd)).astype(np.float32))
    ctx.memory.clear()
    ctx.decode(Batch.from_tokens(toks))
    assert not np.allclose(ctx.logits(), base, atol=1e-3)
    ctx.set_control_vector(None)
    ctx.memory.clear()
    ctx.decode(Batch.from_tokens(toks))
    np.testing.assert_allclose(ctx.logits(), base, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        ctx.set_control_vector(np.zeros((3, 5)))


def test_closed_objects_raise(model_path):
    m = Model.from_file(model_path)
    c = Context(m, n_ctx=128, n_threads=2)
    b = Batch.from_tokens([1, 2, 3])
    m.close()
    m.close()
    with pytest.raises(ClosedError, match="Model is closed"):
        m.n_layer
    c.decode(b)  # the context keeps the model alive
    c.close()
    c.close()
    with pytest.raises(ClosedError, match="Context is closed"):
        c.decode(b)
    with pytest.raises(ClosedError):
        c.logits()
    b.close()
    with pytest.raises(ClosedError):
        b.add(1, 0)


def test_context_keeps_model_alive_after_gc(model_path):
    code = f"""
import gc
from llamapy import Model, Context, Batch, SamplerChain
m = Model.from_file({str(model_path)!r})
v = m.vocab
c = Context(m, n_ctx=128, n_threads=2)
s = SamplerChain().add_top_k(5).add_dry(v).add_greedy()
del m; gc.collect()
c.decode(Batch.from_tokens(v.tokenize("Hello")))
print(v.token_to_piece(s.sample(c, -1)))
del c, v; gc.collect()
print(s.names)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "['top-k', 'dry', 'greedy']" in proc.stdout


def test_embeddings_input_batch_equals_token_input(model, model_path):
    """Feeding a model its own token embeddings (Q8_0 rows dequantised here) gives the logits
    of feeding the tokens."""
    from llamapy.gguf import GGUFFile

    info = next(t for t in GGUFFile.open(model_path).tensors if t.name == "token_embd.weight")
    assert info.type_name == "q8_0"
    raw = np.asarray(GGUFFile.open(model_path).tensor_data("token_embd.weight"))
    blocks = raw.reshape(-1, 34)  # q8_0 block: f16 scale, then 32 int8 values
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    table = (blocks[:, 2:].view(np.int8).astype(np.float32) * scale).reshape(model.vocab.n_tokens, model.n_embd)
    toks = model.vocab.tokenize(PROMPT)
    with Context(model, n_ctx=128, n_threads=2) as c:
        c.decode(Batch.from_tokens(toks))
        by_tokens = c.logits().copy()
        c.memory.clear()
        b = Batch(len(toks), embd=model.n_embd)
        b.add_embeddings(table[toks], pos0=0)
        c.decode(b)
        np.testing.assert_allclose(c.logits(), by_tokens, rtol=1e-3, atol=1e-3)
    with pytest.raises(InvalidBatchError, match="embeddings, not tokens"):
        b.add(5, 0)

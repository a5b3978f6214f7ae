"""Lifetime: random create/use/close/gc sequences never crash; no leaks over many cycles."""
from __future__ import annotations

from tests.conftest import run_python

FUZZ = r"""
import gc, random, sys
from hypothesis import given, settings, strategies as st, HealthCheck
import llamapy
from llamapy import Model, Context, Batch, SamplerChain, Sampler, LlamaError

PATH = sys.argv[1] if len(sys.argv) > 1 else {path!r}
ACTIONS = ["model", "vocab", "ctx", "batch", "sampler", "decode", "sample", "logits", "tokenize",
           "close_model", "close_ctx", "close_batch", "close_sampler", "drop", "gc", "state", "memory"]

@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=25), st.randoms())
def run(actions, rnd):
    objs = {{"model": [], "ctx": [], "batch": [], "sampler": [], "vocab": [], "views": []}}
    pick = lambda k: rnd.choice(objs[k]) if objs[k] else None
    for a in actions:
        try:
            if a == "model" and len(objs["model"]) < 2:
                objs["model"].append(Model.from_file(PATH))
            elif a == "vocab" and pick("model"):
                objs["vocab"].append(pick("model").vocab)
            elif a == "ctx" and pick("model"):
                objs["ctx"].append(Context(pick("model"), n_ctx=128, n_batch=64, n_threads=1))
            elif a == "batch":
                objs["batch"].append(Batch.from_tokens([rnd.randrange(0, 60000) for _ in range(rnd.randrange(0, 6))] or [1]))
            elif a == "sampler":
                m = pick("model")
                s = SamplerChain().add_top_k(5)
                if m is not None and rnd.random() < 0.5:
                    s.add_dry(m.vocab)
                objs["sampler"].append(s.add_dist(rnd.randrange(100)))
            elif a == "decode" and pick("ctx") and pick("batch"):
                pick("ctx").decode(pick("batch"))
            elif a == "sample" and pick("ctx") and pick("sampler"):
                pick("sampler").sample(pick("ctx"), -1)
            elif a == "logits" and pick("ctx"):
                objs["views"].append(pick("ctx").logits(-1))
            elif a == "tokenize" and pick("vocab"):
                v = pick("vocab"); v.detokenize(v.tokenize("héllo 🦙"))
            elif a == "state" and pick("ctx"):
                c = pick("ctx"); c.load_state(c.save_state())
            elif a == "memory" and pick("ctx"):
                c = pick("ctx"); c.memory.seq_rm(0, rnd.randrange(-1, 5), -1); c.memory.seq_pos_max(0)
            elif a.startswith("close_") and pick(a[6:]):
                pick(a[6:]).close()
            elif a == "drop":
                k = rnd.choice(list(objs))
                if objs[k]:
                    objs[k].pop(rnd.randrange(len(objs[k])))
            elif a == "gc":
                gc.collect()
        except (LlamaError, IndexError, ValueError):
            pass  # clear errors are fine; crashes are not
    objs.clear()
    gc.collect()

run()
print("survived")
"""


def test_random_lifetimes_never_crash(model_path):
    proc = run_python(FUZZ.format(path=str(model_path)))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "survived" in proc.stdout


LEAK = r"""
import gc, os
from llamapy import Model, Context, Batch

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

m = Model.from_file({path!r})
toks = m.vocab.tokenize("The quick brown fox")
def cycle():
    with Context(m, n_ctx=256, n_batch=64, n_threads=1) as c:
        c.decode(Batch.from_tokens(toks))
        c.logits()
for _ in range(50):  # warm up allocator pools
    cycle()
gc.collect()
before = rss_kb()
for _ in range(500):
    cycle()
gc.collect()
print(rss_kb() - before)
"""


def test_context_cycles_do_not_leak(model_path):
    # A fixed mmap threshold makes glibc return freed compute buffers to the OS at once, so
    # RSS measures leaks rather than heap fragmentation (which otherwise swings by ~70 MB).
    proc = run_python(LEAK.format(path=str(model_path)), env={"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth_kb = int(proc.stdout.strip().splitlines()[-1])
    print(f"RSS growth over 500 context cycles: {growth_kb} KiB")
    assert growth_kb < 5 * 1024

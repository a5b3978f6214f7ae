"""Distributed inference over ggml's RPC backend: two `llamapy rpc-server` processes on
loopback, the test model split across them and the local CPU."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import llamapy
from llamapy import LLM, Context, Model, backends, rpc
from llamapy._ffi import ffi, lib
from llamapy.batch import Batch

REPO = Path(llamapy.__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
PROMPT = "The three primary colors are"

pytestmark = pytest.mark.skipif(not llamapy.supports_rpc(), reason="this build has no RPC backend")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """One `llamapy rpc-server` process on loopback, stopped by its pid."""

    def __init__(self, *args: str):
        self.port = _free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "llamapy.cli", "rpc-server", "--port", str(self.port),
                                      "--threads", "1", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd="/")
        self.banner = self.proc.stderr.readline()  # printed once it answers, or EOF when it fails
        if "listening on" not in self.banner:
            self.stop()
            raise RuntimeError(f"rpc-server on {self.endpoint} did not start: {self.banner}")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        return self.proc.returncode, self.proc.stderr.read()


@pytest.fixture(scope="module")
def workers():
    started: list[Worker] = []
    try:
        started += [Worker(), Worker()]
        yield started
    finally:
        for w in started:
            w.stop()


def _greedy(model: Model, n: int = 24) -> list[int]:
    """Greedy token ids after PROMPT (argmax of the logits, nothing else involved)."""
    with Context(model, n_ctx=256, n_batch=64, n_threads=1) as ctx:
        tokens = model.vocab.tokenize(PROMPT, add_special=True)
        ctx.decode(Batch.from_tokens(tokens))
        out = []
        pos = len(tokens)
        for _ in range(n):
            t = int(ctx.logits(-1).argmax())
            out.append(t)
            b = Batch(1)
            b.add(t, pos, 0, logits=True)
            ctx.decode(b)
            pos += 1
    return out


def _weights_by_device(model: Model) -> dict[str, int]:
    with Context(model, n_ctx=64, n_batch=16, n_threads=1) as ctx:
        out = ffi.new("struct llamapy_buffer_usage[64]")
        n = min(lib.llamapy_memory_breakdown(ctx._ptr, out, 64), 64)
        usage: dict[str, int] = {}
        for i in range(n):
            name = "host" if out[i].is_host else ffi.string(out[i].device).decode()
            usage[name] = usage.get(name, 0) + int(out[i].model)
        return usage


def test_split_across_two_workers_matches_local(model_path, workers):
    with Model.from_file(model_path, n_gpu_layers=0) as local:
        expected = _greedy(local)
        n_layer = local.n_layer
    eps = [w.endpoint for w in workers]
    with Model.from_file(model_path, rpc_servers=eps, n_gpu_layers=n_layer - 10, tensor_split=[1, 1]) as split:
        assert split.rpc_servers == tuple(eps)
        usage = _weights_by_device(split)
        remote = [d.name for d in backends() if d.endpoint in eps]
        assert len(remote) == 2
        assert all(usage.get(name, 0) > 0 for name in remote), usage  # layers on both workers
        assert usage.get("host", 0) > 0, usage  # and the rest on the local CPU
        assert _greedy(split) == expected


def test_llm_with_rpc_servers_matches_local(model_path, workers):
    kw = dict(temperature=0.0, max_tokens=16, n_threads=1, seed=3)
    with LLM(model_path, n_gpu_layers=0, **kw) as llm:
        local = llm.generate(PROMPT)
    with LLM(model_path, rpc_servers=",".join(w.endpoint for w in workers), n_gpu_layers=99, **kw) as llm:
        assert llm.generate(PROMPT) == local


def test_batch_generator_with_rpc_servers_matches_local(model_path, workers):
    from llamapy import BatchGenerator

    prompts = [PROMPT, "Once upon a time"]
    kw = dict(n_ctx=128, n_seq_max=2, n_threads=1, temperature=0.0, max_tokens=12)
    with BatchGenerator(model_path, n_gpu_layers=0, **kw) as gen:
        local = gen.generate_batch(prompts)
    with BatchGenerator(model_path, rpc_servers=[w.endpoint for w in workers], n_gpu_layers=99,
                        tensor_split=[2, 1], **kw) as gen:
        assert gen.model.rpc_servers == tuple(w.endpoint for w in workers)
        assert gen.generate_batch(prompts) == local


def test_rpc_server_tensor_cache(model_path, tmp_path):
    """--cache DIR: large tensors are stored by hash on the worker, so a reload sends hashes."""
    cache = tmp_path / "rpc-cache"
    w = Worker("--cache", str(cache))
    try:
        with Model.from_file(model_path, rpc_servers=[w.endpoint], n_gpu_layers=99) as m:
            assert m.rpc_servers == (w.endpoint,)
        assert cache.is_dir() and any(cache.iterdir())  # the token embeddings (> 10 MiB) at least
        with Model.from_file(model_path, rpc_servers=[w.endpoint], n_gpu_layers=99) as m:
            assert _greedy(m, 4)
    finally:
        w.stop()


def test_local_model_stays_local_after_servers_are_registered(model_path, workers):
    rpc.add_servers([w.endpoint for w in workers])
    with Model.from_file(model_path, n_gpu_layers=99) as m:
        assert m.rpc_servers == ()
        assert set(_weights_by_device(m)) <= {"host", "CPU"}


def test_backends_lists_remote_devices_with_memory(workers):
    rpc.add_servers([w.endpoint for w in workers])
    remote = {d.endpoint: d for d in backends() if d.is_remote}
    for w in workers:
        d = remote[w.endpoint]
        assert d.name.startswith("RPC")
        assert d.memory_total > 0 and d.memory_free > 0


def test_unreachable_endpoint_is_named(model_path):
    ep = f"127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(rpc.RPCError, match=ep.replace(".", r"\.")) as info:
        Model.from_file(model_path, rpc_servers=[ep], n_gpu_layers=99)
    assert info.value.endpoint == ep
    assert "cannot reach" in str(info.value)


def test_silent_endpoint_times_out_with_its_name():
    with socket.socket() as listener:  # accepts connections, never answers the handshake
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        ep = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(rpc.RPCError, match="did not answer the handshake") as info:
            rpc.check_server(ep, timeout=1.0)
        assert ep in str(info.value)


def test_other_protocol_version_is_named():
    """A server answering the handshake with another major version (as an older llama.cpp would)."""
    import struct
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    ep = f"127.0.0.1:{listener.getsockname()[1]}"

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1 + 8 + 24)
            conn.sendall(struct.pack("<Q", 28) + bytes([rpc.PROTOCOL_VERSION[0] - 1, 0, 0, 0]) + bytes(24))
            conn.recv(1)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        with pytest.raises(rpc.RPCError, match="speaks protocol") as info:
            rpc.check_server(ep, timeout=5.0)
        assert ep in str(info.value)
    finally:
        t.join(5)
        listener.close()


def test_bad_endpoints_are_value_errors():
    for bad in ("localhost", "host:", "host:http", "h:70000"):
        with pytest.raises(ValueError):
            rpc.parse_servers(bad)
    assert rpc.parse_servers("a:1, b:2") == ["a:1", "b:2"]


_KILLED = """
import os, signal, sys, time
from llamapy import LLM, rpc
kw = dict(temperature=0.0, max_tokens=4, n_threads=1)
llm = LLM({model!r}, rpc_servers={eps!r}, n_gpu_layers=99, **kw)
print("first:", repr(llm.generate("Hello")), flush=True)
os.kill({pid}, signal.SIGKILL)
time.sleep(1.0)
try:
    llm.generate("Hello again")
except rpc.RPCError as e:
    print("error:", e, flush=True)
llm.close()
try:
    LLM({model!r}, rpc_servers={eps!r}, n_gpu_layers=99, **kw)
except rpc.RPCError as e:
    print("reload:", e, flush=True)
print("survived", flush=True)
"""


def test_worker_killed_between_requests_is_a_clear_error(model_path, workers):
    victim = Worker()
    try:
        eps = [workers[0].endpoint, victim.endpoint]
        code = _KILLED.format(model=str(model_path), eps=eps, pid=victim.proc.pid)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd="/",
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert "first:" in r.stdout
        assert f"error: RPC server {victim.endpoint} went away" in r.stdout
        assert f"reload: RPC server {victim.endpoint} went away" in r.stdout
        assert r.stdout.rstrip().endswith("survived")
    finally:
        victim.stop(signal.SIGKILL)


_KILLED_MID_DECODE = """
import os, signal, threading
from llamapy import Batch, Context, Model
m = Model.from_file({model!r}, rpc_servers=[{ep!r}], n_gpu_layers=99)
ctx = Context(m, n_ctx=1024, n_batch=1024, n_threads=1)
threading.Timer(0.3, os.kill, ({pid}, signal.SIGKILL)).start()
ctx.decode(Batch.from_tokens([(i * 7919) % 40000 + 100 for i in range(1000)], pos0=0))
print("decoded", flush=True)
"""


def test_worker_killed_during_a_decode_aborts_the_process(model_path):
    """What Python cannot guard, documented: ggml's RPC client aborts the process."""
    victim = Worker()
    try:
        code = _KILLED_MID_DECODE.format(model=str(model_path), ep=victim.endpoint, pid=victim.proc.pid)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120,
                           env={**ENV, "GGML_NO_BACKTRACE": "1"})
        assert r.returncode == -signal.SIGABRT, (r.returncode, r.stdout, r.stderr[-2000:])
        assert "Remote RPC server crashed" in r.stderr
    finally:
        victim.stop(signal.SIGKILL)


def test_worker_killed_before_load_is_a_clear_error(model_path):
    victim = Worker()
    victim.stop(signal.SIGKILL)
    with pytest.raises(rpc.RPCError, match=f"cannot reach RPC server {victim.endpoint}"):
        LLM(model_path, rpc_servers=[victim.endpoint], n_gpu_layers=99, n_threads=1)


def test_rpc_server_stops_cleanly_on_sigterm():
    w = Worker()
    rc, err = w.stop(signal.SIGTERM)
    assert rc == 0, err
    assert f"listening on {w.endpoint}" in w.banner and "stopped" in err


def test_rpc_server_refuses_public_host_without_flag():
    r = subprocess.run([sys.executable, "-m", "llamapy.cli", "rpc-server", "--host", "0.0.0.0", "--port",
                        str(_free_port())], capture_output=True, text=True, env=ENV, cwd="/", timeout=60)
    assert r.returncode != 0
    assert "refusing to listen on 0.0.0.0" in r.stderr and "--allow-public" in r.stderr


def test_rpc_server_unknown_device_lists_the_available_ones():
    r = subprocess.run([sys.executable, "-m", "llamapy.cli", "rpc-server", "--device", "NOPE0", "--port",
                        str(_free_port())], capture_output=True, text=True, env=ENV, cwd="/", timeout=60)
    assert r.returncode != 0
    assert "unknown device NOPE0" in r.stderr and "CPU" in r.stderr


def test_rpc_server_reports_busy_port(workers):
    r = subprocess.run([sys.executable, "-m", "llamapy.cli", "rpc-server", "--port", str(workers[0].port)],
                       capture_output=True, text=True, env=ENV, cwd="/", timeout=60)
    assert r.returncode != 0
    assert f"cannot listen on 127.0.0.1:{workers[0].port}" in r.stderr


def test_cli_complete_and_estimate_with_rpc(model_path, workers):
    eps = ",".join(w.endpoint for w in workers)
    base = [sys.executable, "-m", "llamapy.cli", "complete", "-m", str(model_path), "-t", "0", "-n", "8",
            "--threads", "1", PROMPT]
    local = subprocess.run(base + ["-ngl", "0"], capture_output=True, text=True, env=ENV, cwd="/", timeout=120)
    remote = subprocess.run(base + ["--rpc", eps, "-ngl", "99", "--tensor-split", "1,3"], capture_output=True,
                            text=True, env=ENV, cwd="/", timeout=120)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert remote.stdout == local.stdout
    est = subprocess.run([sys.executable, "-m", "llamapy.cli", "estimate", "-m", str(model_path), "--ctx", "512",
                          "--rpc", eps, "--json"], capture_output=True, text=True, env=ENV, cwd="/", timeout=120)
    assert est.returncode == 0, est.stderr
    names = [d["name"] for d in json.loads(est.stdout)["recommended"]["devices"]]
    assert [n for n in names if n.endswith(f"({workers[0].endpoint})")]
    assert [n for n in names if n.endswith(f"({workers[1].endpoint})")]

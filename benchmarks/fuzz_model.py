"""Fuzz the model loader: N mutants of a real GGUF, each loaded, given a context and decoded.

Every mutant changes a few bytes of the header, the metadata or the tensor infos (the tensor
data is left alone) and goes through what a new user does first: ``Model.from_file``,
a ``Context``, tokenizing a prompt, one decode and turning the top token into text. Each runs
in a forked child (the parent imports llamapy once) under a time limit, and ends as:

  ok      everything worked
  clean   a LlamaError / OSError / ValueError was raised (the wanted outcome for a bad file)
  other   another Python exception (a bug: not part of the error hierarchy)
  crash   the process died from a signal (SIGABRT, SIGSEGV, SIGFPE, ...)
  hang    the time limit passed (killed)

One scratch copy of the model lives in /dev/shm; each mutant patches its bytes in place and
restores them afterwards, so a mutant costs what a load costs. Every crash and hang is written
as a JSON patch (offset -> bytes over the source file, with the source's sha256) to the
--found folder, with the child's stderr; ``--replay PATCH`` re-runs one in the foreground.

    python benchmarks/fuzz_model.py [--model smollm2-135m-instruct|PATH] [-n 1000] [--seed 0]
        [--timeout 30] [--found fuzz-found] [--strategies random,boundary,...] [--json out.json]
        [--no-validate]
    python benchmarks/fuzz_model.py --cost [--model ...]   # what validation costs per load

Not part of the test suite (too slow); run it after touching the loader or the validator.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from llamapy import Batch, Context, Model  # noqa: E402
from llamapy.errors import LlamaError  # noqa: E402
from llamapy.gguf.validate import ARRAY, STRING, GGUFLayout, validate_model_file  # noqa: E402
from llamapy.hub.catalog import pull  # noqa: E402

OUTCOMES = ("ok", "clean", "other", "crash", "hang")
BOUNDARY = [0, 1, 2, -1, 2**31 - 1, -2**31, 2**32 - 1, 2**63 - 1, -2**63, 2**64 - 1, 255, 256, 65535, 65536]
EXIT_OK, EXIT_CLEAN, EXIT_OTHER = 0, 3, 4


# -- mutations --------------------------------------------------------------------------------
class Mutator:
    """Mutations of one file's structural region, as lists of (offset, new bytes)."""

    def __init__(self, layout: GGUFLayout, rng: random.Random):
        self.rng = rng
        self.end = layout.data_offset
        self.by_kind: dict[str, list] = collections.defaultdict(list)
        for f in layout.fields():
            self.by_kind[f.kind].append(f)
        self.strings = {key: layout.string_offsets(key) for key, kv in layout.kv.items()
                        if kv.type == ARRAY and kv.item_type == STRING and kv.count}
        self.tokens = layout.string_offsets("tokenizer.ggml.tokens") if "tokenizer.ggml.tokens" in self.strings \
            else None
        self.data = layout.bytes
        self.strategies = {
            "random": self.random_bytes,
            "boundary": self.boundary_aligned,
            "string_length": self.string_length,
            "array_count": self.array_count,
            "type_tag": self.type_tag,
            "tensor_dim": self.tensor_dim,
            "tensor_offset": self.tensor_offset,
            "value": self.scalar_value,
            "token_text": self.token_text,
            "token_zero": self.token_zero,
        }

    def _int(self, value: int, size: int) -> bytes:
        return (value % 2**(8 * size)).to_bytes(size, "little")

    def _number(self, old: int) -> int:
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(BOUNDARY)
        if r < 0.8:
            return old + self.rng.choice([-1, 1]) * self.rng.choice([1, 2, 3, 4, 7, 8, 16, 32, 64, 1000])
        return self.rng.getrandbits(self.rng.choice([8, 16, 32, 64]))

    def _field_patch(self, f, number: int | None = None) -> list[tuple[int, bytes]]:
        old = int.from_bytes(bytes(self.data[f.offset:f.offset + f.size]), "little")
        return [(f.offset, self._int(self._number(old) if number is None else number, f.size))]

    def random_bytes(self):
        return [(self.rng.randrange(self.end), bytes([self.rng.randrange(256)]))
                for _ in range(self.rng.randint(1, 8))]

    def boundary_aligned(self):
        size = self.rng.choice([4, 8])
        at = self.rng.randrange(0, self.end - size) // 4 * 4
        return [(at, self._int(self.rng.choice(BOUNDARY), size))]

    def string_length(self):
        kinds = ["key_length", "string_length", "name_length"]
        if self.strings and self.rng.random() < 0.5:  # an element of a string array
            offsets = self.strings[self.rng.choice(list(self.strings))]
            at = int(offsets[self.rng.randrange(len(offsets))])
            old = int.from_bytes(bytes(self.data[at:at + 8]), "little")
            return [(at, self._int(self._number(old), 8))]
        return self._field_patch(self.rng.choice(self.by_kind[self.rng.choice(kinds)]))

    def array_count(self):
        return self._field_patch(self.rng.choice(self.by_kind["count"] + self.by_kind["header"]))

    def type_tag(self):
        f = self.rng.choice(self.by_kind["type"] + self.by_kind["item_type"] + self.by_kind["tensor_type"])
        number = self.rng.randrange(45) if self.rng.random() < 0.7 else None
        return self._field_patch(f, number)

    def tensor_dim(self):
        return self._field_patch(self.rng.choice(self.by_kind["dim"] + self.by_kind["n_dims"]))

    def tensor_offset(self):
        return self._field_patch(self.rng.choice(self.by_kind["tensor_offset"]))

    def scalar_value(self):
        return self._field_patch(self.rng.choice(self.by_kind["value"]))

    def token_text(self):
        """Copy one token's text over another of the same length (a duplicate token)."""
        if self.tokens is None:
            return self.random_bytes()
        lengths = np.diff(self.tokens) - 8
        for _ in range(100):
            a, b = self.rng.randrange(len(lengths)), self.rng.randrange(len(lengths))
            if a != b and lengths[a] == lengths[b] and lengths[a] > 0:
                src = int(self.tokens[a]) + 8
                return [(int(self.tokens[b]) + 8, bytes(self.data[src:src + int(lengths[a])]))]
        return self.random_bytes()

    def token_zero(self):
        """A zero byte inside a token, where C code reading it stops: it may now read as another token."""
        if self.tokens is None:
            return self.random_bytes()
        i = self.rng.randrange(len(self.tokens) - 1)
        length = int(self.tokens[i + 1] - self.tokens[i]) - 8
        if length < 1:
            return self.random_bytes()
        return [(int(self.tokens[i]) + 8 + self.rng.randrange(length), b"\0")]

    def mutate(self, names: list[str]) -> tuple[str, list[tuple[int, bytes]]]:
        name = self.rng.choice(names)
        return name, self.strategies[name]()


# -- the child -----------------------------------------------------------------------------
def exercise(path: str, validate: bool = True) -> None:
    """What a new user does first with a model file."""
    with Model.from_file(path, validate=validate) as model:
        with Context(model, n_ctx=64, n_batch=64, n_threads=1) as ctx:
            tokens = model.vocab.tokenize("Hello, world! 1234", add_special=True)[:32] or [0]
            ctx.decode(Batch.from_tokens(tokens, pos0=0))
            top = int(np.argmax(ctx.logits(-1)))
            model.vocab.token_to_piece(top)


def run_child(path: str, timeout: float, stderr_path: str, report_fd: int, validate: bool) -> None:
    os.dup2(os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # a hang dies of SIGALRM
    signal.alarm(max(1, int(timeout)))
    code, message = EXIT_OK, ""
    try:
        exercise(path, validate)
    except (LlamaError, OSError, ValueError) as e:
        code, message = EXIT_CLEAN, f"{type(e).__name__}: {e}"
    except BaseException as e:  # noqa: BLE001 - the point is to see everything
        code, message = EXIT_OTHER, f"{type(e).__name__}: {e}"
    os.write(report_fd, message.encode("utf-8", "replace")[:2000])
    os._exit(code)


def run_one(path: str, timeout: float, stderr_path: str, validate: bool) -> tuple[str, str]:
    """(outcome, detail) of one mutant, run in a forked child."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        run_child(path, timeout, stderr_path, write_fd, validate)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    message = b"".join(chunks).decode("utf-8", "replace")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGALRM:
            return "hang", f"no result after {timeout:.0f} s"
        return "crash", f"{signal.Signals(sig).name}: {crash_line(stderr_path)}"
    code = os.WEXITSTATUS(status)
    return {EXIT_OK: "ok", EXIT_CLEAN: "clean", EXIT_OTHER: "other"}.get(code, "crash"), message


def crash_line(stderr_path: str) -> str:
    """The line of the child's stderr that says why it died (an assertion, an abort)."""
    try:
        lines = Path(stderr_path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    lines = [line.strip() for line in lines if line.strip()]
    for line in lines:
        if "GGML_ASSERT" in line or "error" in line.lower() or "terminate" in line or "abort" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else ""


# -- the driver --------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def apply(fd: int, patch: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Write a patch, returning the patch that undoes it (applied in reverse order)."""
    undo = []
    for offset, data in patch:
        undo.append((offset, os.pread(fd, len(data), offset)))
        os.pwrite(fd, data, offset)
    return undo[::-1]


def resolve(model: str) -> Path:
    p = Path(model).expanduser()
    return p if p.exists() else pull(model, quiet=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="catalog name or path of a GGUF model")
    ap.add_argument("-n", type=int, default=1000, help="number of mutants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per mutant before it counts as a hang")
    ap.add_argument("--found", type=Path, default=Path("fuzz-found"), help="folder for crashing/hanging patches")
    ap.add_argument("--strategies", default=None, help="comma-separated subset of the mutation strategies")
    ap.add_argument("--scratch", type=Path, default=Path("/dev/shm"))
    ap.add_argument("--json", type=Path, default=None, help="write the summary here as JSON")
    ap.add_argument("--no-validate", action="store_true",
                    help="load with validate=False: what llama.cpp does without llamapy's pre-flight checks")
    ap.add_argument("--cost", action="store_true",
                    help="only measure what validation costs, against loading the model without it")
    ap.add_argument("--replay", type=Path, default=None, help="run one saved patch in the foreground")
    args = ap.parse_args()

    source = resolve(args.model)
    if args.cost:
        return cost(source)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the scratch copy when killed
    scratch = args.scratch / f"llamapy-fuzz-{os.getpid()}-{source.name}"
    stderr_path = args.scratch / f"llamapy-fuzz-{os.getpid()}.stderr"
    shutil.copyfile(source, scratch)
    fd = os.open(scratch, os.O_RDWR)
    try:
        if args.replay:
            record = json.loads(args.replay.read_text())
            if record["source_sha256"] != sha256(source):
                raise SystemExit(f"{args.replay} patches another file than {source} (sha256 differs)")
            apply(fd, [(o, bytes.fromhex(h)) for o, h in record["patch"]])
            try:
                exercise(str(scratch), not args.no_validate)
            except (LlamaError, OSError, ValueError) as e:
                print(f"clean: {type(e).__name__}: {e}")
            else:
                print("ok")
            return 0
        return fuzz(args, source, scratch, fd, str(stderr_path))
    finally:
        os.close(fd)
        scratch.unlink(missing_ok=True)
        stderr_path.unlink(missing_ok=True)


def cost(source: Path, rounds: int = 30) -> int:
    """Best-of-N wall and CPU time of validate_model_file, next to a load without it."""
    def best(fn) -> tuple[float, float]:
        wall = cpu = float("inf")
        for _ in range(rounds):
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
        return wall * 1e3, cpu * 1e3

    def load() -> None:
        Model.from_file(source, validate=False).close()

    validate_model_file(source)
    v_wall, v_cpu = best(lambda: validate_model_file(source))
    l_wall, l_cpu = best(load)
    print(f"{source.name}: validate_model_file {v_wall:.1f} ms wall ({v_cpu:.1f} ms CPU), best of {rounds}; "
          f"Model.from_file(validate=False) {l_wall:.0f} ms wall ({l_cpu:.0f} ms CPU); "
          f"validation adds {100 * v_wall / l_wall:.1f}% to a load")
    return 0


def fuzz(args: argparse.Namespace, source: Path, scratch: Path, fd: int, stderr_path: str) -> int:
    os.environ["GGML_NO_BACKTRACE"] = "1"  # an abort would otherwise attach gdb to print a backtrace
    rng = random.Random(args.seed)
    layout = GGUFLayout(source)
    mutator = Mutator(layout, rng)
    names = args.strategies.split(",") if args.strategies else list(mutator.strategies)
    unknown = set(names) - set(mutator.strategies)
    if unknown:
        raise SystemExit(f"unknown strategies {sorted(unknown)}; choose from {sorted(mutator.strategies)}")
    source_sha = sha256(source)
    args.found.mkdir(parents=True, exist_ok=True)
    counts = collections.Counter()
    per_strategy: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    signatures: dict[str, collections.Counter] = {o: collections.Counter() for o in ("crash", "hang", "other")}
    print(f"fuzzing {source.name}: {args.n} mutants of bytes [0, {layout.data_offset}) "
          f"({len(layout.kv)} keys, {len(layout.tensors)} tensors), strategies {','.join(names)}", flush=True)
    t0 = time.perf_counter()
    for i in range(args.n):
        strategy, patch = mutator.mutate(names)
        undo = apply(fd, patch)
        try:
            outcome, detail = run_one(str(scratch), args.timeout, stderr_path, not args.no_validate)
        finally:
            apply(fd, undo)
        counts[outcome] += 1
        per_strategy[strategy][outcome] += 1
        if outcome in signatures:
            signatures[outcome][detail.splitlines()[0][:200] if detail else "?"] += 1
            record = {"source": source.name, "source_sha256": source_sha, "strategy": strategy,
                      "outcome": outcome, "detail": detail, "patch": [(o, d.hex()) for o, d in patch],
                      "stderr_tail": Path(stderr_path).read_text(errors="replace")[-4000:]}
            (args.found / f"{source.stem}-{args.seed}-{i}-{outcome}.json").write_text(json.dumps(record, indent=1))
        if (i + 1) % 100 == 0 or i + 1 == args.n:
            rate = (i + 1) / (time.perf_counter() - t0)
            print(f"{i + 1:6d}/{args.n}  " + "  ".join(f"{o} {counts[o]}" for o in OUTCOMES)
                  + f"  ({rate:.1f} mutants/s)", flush=True)
    wall = time.perf_counter() - t0
    summary = {"model": source.name, "mutants": args.n, "seed": args.seed, "wall_s": round(wall, 1),
               "outcomes": {o: counts[o] for o in OUTCOMES},
               "per_strategy": {s: dict(c) for s, c in sorted(per_strategy.items())},
               "signatures": {o: dict(c.most_common()) for o, c in signatures.items() if c}}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 1 if counts["crash"] or counts["hang"] or counts["other"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Code written for the two bindings llamapy's users come from runs on llamapy.

The examples are read from the API references themselves (``../shared/reference``, or
``$LLAMAPY_REFERENCE_DIR``), never copied: each Python block of a covered section becomes a
test. A block that is a runnable example is executed with the package name mapped to
``llamapy``, model paths pointed at the test model and the hub at a local stand-in. A block
that only states a signature (``def f(...)`` with no body, a dataclass) is checked against
llamapy's object: the documented parameters in the documented order with the documented
defaults, the documented fields present.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import os
import re
import subprocess
from pathlib import Path

import pytest

import llamapy
import llamapy.server
from llamapy.server.launcher import free_port
from tests.hub_server import Hub

REPO = Path(__file__).resolve().parent.parent


def _reference_dir() -> Path:
    """$LLAMAPY_REFERENCE_DIR, else ``shared/reference`` beside this checkout or beside the
    repository it was cloned from (a fresh clone in another folder still finds them)."""
    if os.environ.get("LLAMAPY_REFERENCE_DIR"):
        return Path(os.environ["LLAMAPY_REFERENCE_DIR"])
    homes = [REPO]
    origin = subprocess.run(["git", "-C", str(REPO), "config", "remote.origin.url"], capture_output=True, text=True)
    if origin.returncode == 0 and Path(origin.stdout.strip()).is_dir():
        homes.append(Path(origin.stdout.strip()).resolve())
    candidates = [home.parent / "shared" / "reference" for home in homes]
    return next((c for c in candidates if c.is_dir()), candidates[0])


REFERENCE = _reference_dir()

# Sections each issue covers; later issues add theirs.
COVERED = {
    "cyllama-api.md": ["High-Level Generation API", "Batch Processing API", "Memory Utilities",
                       "Core llama.cpp API", "Advanced Features > GGUF File Manipulation",
                       "Advanced Features > JSON Schema to Grammar", "Advanced Features > Model Download",
                       "Error Handling", "Type Hints", "Performance Tips", "Server Implementations",
                       "Framework Integrations > OpenAI-Compatible API"],
    "llama-py.md": ["Usage > Basic Text Generation"],
}

# Documented defaults llamapy deliberately does not share, and why.
DIFFERENT_DEFAULTS = {
    ("BatchRequest", "max_tokens"): "None: a request inherits the generator's settings unless it sets its own",
    ("BatchRequest", "temperature"): "None: a request inherits the generator's settings unless it sets its own",
}

# Names the examples use without defining them (the reader supplies them).
GIVEN = {
    "seq_id": 0, "p0": 0, "p1": -1, "delta": 0, "idx": -1, "seed": 1234, "token_id": 42, "pos": 0,
    "prompts": ["What is 2+2?", "Name a colour."],
}


@dataclasses.dataclass
class Block:
    doc: str
    section: str
    index: int
    code: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"{self.doc.split('-')[0]}:{slug}:{self.index}"


def _blocks() -> list[Block]:
    if not REFERENCE.is_dir():
        raise FileNotFoundError(f"the API references are not at {REFERENCE} (set LLAMAPY_REFERENCE_DIR)")
    out = []
    for doc, sections in COVERED.items():
        heads: list[str] = []
        code: list[str] | None = None
        count: dict[str, int] = {}
        for line in (REFERENCE / doc).read_text().splitlines():
            if code is not None:
                if line.startswith("```"):
                    section = " > ".join(heads)
                    if any(section == s or section.startswith(s + " > ") for s in sections):
                        count[section] = count.get(section, 0) + 1
                        out.append(Block(doc, section, count[section], "\n".join(code)))
                    code = None
                else:
                    code.append(line)
            elif line.startswith("```python"):
                code = []
            elif m := re.match(r"^(#{2,4}) (.*)", line):
                heads = heads[:len(m.group(1)) - 2] + [m.group(2).strip()]
    return out


BLOCKS = _blocks()


def _is_signature(code: str) -> bool:
    """A block that declares (def/class without a body, dataclass fields) rather than runs."""
    try:
        ast.parse(code)
    except SyntaxError:
        return True
    tree = ast.parse(code)
    return all(isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.ImportFrom, ast.Import)) for n in tree.body) and \
        any(isinstance(n, (ast.ClassDef, ast.FunctionDef)) for n in tree.body)


def _with_bodies(code: str) -> ast.Module:
    """Parse a signature block, giving every body-less def a body."""
    lines = code.splitlines()
    out: list[str] = []
    depth, indent = 0, None
    for i, line in enumerate(lines):
        if indent is None and line.lstrip().startswith("def "):
            indent, depth = len(line) - len(line.lstrip()), 0
        if indent is not None:
            depth += line.count("(") - line.count(")")
            if depth == 0:  # the header ends on this line
                following = next((x for x in lines[i + 1:] if x.strip()), "")
                has_body = len(following) - len(following.lstrip()) > indent
                if not line.rstrip().endswith(":"):
                    line = line.rstrip() + ":"
                if not has_body:
                    line += " ..."
                indent = None
        out.append(line)
    return ast.parse("\n".join(out))


def module_map() -> dict[str, str]:
    """The README's "Coming from cyllama or llama-py" table: their module -> llamapy's."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Coming from cyllama or llama-py", 1)[1].split("<!-- module-map-end -->", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)` \| `([\w.]+)` \|", section, flags=re.M)
    assert rows, "the README has no module table"
    return dict(rows)


MODULES = module_map()


def _map_names(code: str) -> str:
    def module(name: str) -> str:
        for theirs in sorted(MODULES, key=len, reverse=True):  # the longest listed prefix decides
            if name == theirs or name.startswith(theirs + "."):
                return MODULES[theirs] + name[len(theirs):]
        raise AssertionError(f"the README's table does not say where {name} lives in llamapy")

    code = re.sub(r"\bfrom ((?:cyllama|llama_cpp)[\w.]*) import", lambda m: f"from {module(m.group(1))} import", code)
    return re.sub(r"\bimport ((?:cyllama|llama_cpp)[\w.]*)", lambda m: f"import {module(m.group(1))}", code)


# -- signatures ------------------------------------------------------------------------------
def _target(block: Block, name: str, in_class: str | None):
    imported = {n.strip(): module for module, names in re.findall(r"from ([\w.]+) import ([\w, ]+)",
                                                                  _map_names(block.code)) for n in names.split(",")}
    owner = in_class or (re.search(r"`(\w+)` Class", block.section) or [None, None])[1]
    if owner and name != owner:
        return getattr(_target(block, owner, None), name)
    return getattr(importlib.import_module(imported.get(name, "llamapy")), name)


def _check_function(fn_node: ast.FunctionDef, target, where: str) -> None:
    sig = inspect.signature(target)
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    args = fn_node.args
    documented = [a.arg for a in args.args]
    if documented and documented[0] == "self":
        documented = documented[1:]
        params = params[1:] if params and params[0].name == "self" else params
    assert [p.name for p in params[:len(documented)]] == documented, \
        f"{where}: parameters {[p.name for p in params]} do not start with the documented {documented}"
    defaults = dict(zip(reversed(documented), reversed(args.defaults)))
    for name, node in defaults.items():
        expected = ast.literal_eval(node)
        actual = sig.parameters[name].default
        assert actual == expected, f"{where}: {name} defaults to {actual!r}, documented {expected!r}"
    if args.kwarg is not None:
        assert any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()), f"{where}: takes no **{args.kwarg.arg}"


def _check_fields(cls_node: ast.ClassDef, cls) -> None:
    instance_fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for stmt in cls_node.body:
        if not isinstance(stmt, ast.AnnAssign):
            continue
        name = stmt.target.id
        assert name in instance_fields or hasattr(cls, name), f"{cls.__name__} has no {name}"
        if stmt.value is not None and (cls.__name__, name) not in DIFFERENT_DEFAULTS:
            if name in instance_fields:
                f = instance_fields[name]
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            else:  # a derived attribute: read it from a default instance
                default = getattr(cls(), name)
            expected = [] if isinstance(stmt.value, ast.Call) else ast.literal_eval(stmt.value)
            if isinstance(default, (tuple, list)) and isinstance(expected, list):
                default = list(default)  # an immutable empty default stands for a documented []
            assert default == expected, f"{cls.__name__}.{name} defaults to {default!r}, documented {expected!r}"


def check_signature(block: Block) -> None:
    tree = _with_bodies(block.code)
    checked = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            _check_function(node, _target(block, node.name, None), f"{node.name}()")
            checked += 1
        elif isinstance(node, ast.ClassDef):
            cls = getattr(llamapy, node.name, None) or _target(block, node.name, None)
            for member in node.body:
                if isinstance(member, ast.FunctionDef):
                    _check_function(member, getattr(cls, member.name), f"{node.name}.{member.name}()")
                    checked += 1
            if any(isinstance(s, ast.AnnAssign) for s in node.body):
                _check_fields(node, cls)
                checked += 1
    methods = re.search(r"`(\w+)\(\)`$", block.section)
    assert checked or methods, "nothing to check in a signature block"


# -- examples ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(model_path):
    """The hub the Model Download example talks to: the test model published under the example's names."""
    h = Hub().start()
    h.add("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf", model_path)
    h.add("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q8_0.gguf", model_path)
    h.add("", "model.gguf", model_path)
    yield h
    h.stop()


def _localise(code: str, model_path: Path, tmp: Path, hub: Hub, server_exe: Path) -> str:
    code = _map_names(code)
    # servers listen on a free port, and the launcher runs the llama-server built from the pinned tree
    code = re.sub(r"\b(?:8000|8080)\b", str(free_port("127.0.0.1")), code)
    code = code.replace('server_binary="bin/llama-server"', f'server_binary="{server_exe}"')
    # the embedded-server example talks to it with the openai package's pre-1.0 calls: the same, in today's API
    code = re.sub(r'openai\.api_base = ("[^"]+")', r'client = openai.OpenAI(base_url=\1, api_key="none")', code)
    code = code.replace("openai.ChatCompletion.create(", "client.chat.completions.create(")
    # only the model files examples read; files they write ("custom.gguf", ...) stay in the scratch folder
    code = re.sub(r'"(?:models/)?(?:llama|large|small|model)\.gguf"', f'"{model_path}"', code)
    code = code.replace('"https://example.com/model.gguf"', f'"{hub.endpoint}model.gguf"')
    code = code.replace('output_path="models/custom.gguf"', f'output_path="{tmp}/custom.gguf"')
    return code.replace('"~/.cache/cyllama/models"', f'"{tmp}/hub"')


def run_example(block: Block, model_path: Path, tmp: Path, hub: Hub, monkeypatch, server_exe: Path,
                servers: list) -> dict:
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.chdir(tmp)  # examples write files by relative name
    monkeypatch.setenv("LLAMAPY_MODELS_DIR", str(tmp / "models"))
    # Examples sample with a random seed, and the small test model often ends a bare question at once
    # (an empty answer is a valid draw); a fixed seed makes each run repeat the same draw.
    monkeypatch.setattr(llamapy.sampler, "_seed", lambda seed: 1 if seed is None or seed < 0 else seed & 0xFFFFFFFF)
    # The reader's session: the names of earlier sections are at hand, plus the ones examples take as given.
    namespace: dict = {name: getattr(llamapy, name) for name in llamapy.__all__} | GIVEN
    code = _localise(block.code, model_path, tmp, hub, server_exe)
    if "start_server(" in code:  # it serves until stopped: here it serves from a thread until the test ends
        def start_in_background(model_path, host="127.0.0.1", port=8080, **settings):
            servers.append(llamapy.server.BackgroundServer(model_path, host, port, n_threads=1, **settings).start())

        monkeypatch.setattr(llamapy.server, "start_server", start_in_background)
    if "model" in code and "model =" not in code and "model.get_vocab" in code:  # the vocab example reads a model
        namespace["model"] = llamapy.LlamaModel(str(model_path))
    if "ctx.decode" in code or "LlamaContext(model" in code or "sampler.sample(ctx" in code:
        model = namespace.setdefault("model", llamapy.LlamaModel(str(model_path)))
        namespace.setdefault("tokens", model.tokenize("Hello, my name is", True))
        if "LlamaContext(" not in code:
            namespace["ctx"] = llamapy.LlamaContext(model, n_ctx=512)
            namespace["ctx"].decode(llamapy.llama_batch_get_one(namespace["tokens"]))
    if "batch.add(" in code or "llama_batch_get_one(tokens" in code:
        namespace.setdefault("tokens", [1, 2, 3])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"<{block.id}>", "exec"), namespace)
    namespace["__stdout__"] = out.getvalue()
    return namespace


@pytest.fixture
def servers():
    """Servers an example started in the background, stopped when its test ends."""
    started: list = []
    yield started
    for server in started:
        server.stop()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_reference_block(block: Block, model_path, tmp_path, hub, monkeypatch, llama_server_exe, servers):
    if _is_signature(block.code):
        check_signature(block)
        return
    ns = run_example(block, model_path, tmp_path, hub, monkeypatch, llama_server_exe, servers)
    if "response" in ns and hasattr(ns["response"], "choices"):  # an OpenAI-style answer
        assert ns["response"].choices[0].message.content.strip()
    for name in ("response", "text", "result"):
        if name in ns and isinstance(ns[name], str):
            assert ns[name].strip(), f"{name} is empty"
    if "responses" in ns:
        assert ns["responses"] and all(isinstance(r, str) and r.strip() for r in ns["responses"])


def test_every_covered_section_has_blocks():
    sections = {(b.doc, b.section.split(" > ")[0]) for b in BLOCKS}
    for doc, wanted in COVERED.items():
        for s in wanted:
            assert (doc, s.split(" > ")[0]) in sections, f"no Python block found for {doc}: {s}"

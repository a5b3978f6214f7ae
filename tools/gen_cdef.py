#!/usr/bin/env python3
"""Generate cffi cdef text from the llama.cpp / whisper.cpp public headers.

The headers are run through the system C preprocessor (with stub libc headers from
``headers/stubs``) and parsed with pycparser. Every typedef, enum (with its values
evaluated), struct, function-pointer typedef and function declared in an API header is
emitted in header order, each preceded by a ``# LINE "FILE"`` marker so that a cdef
error names the upstream header line. ``#define`` constants with an API prefix are
emitted too. Output is deterministic: the same headers give byte-identical text.

Usage:
    gen_cdef.py llama --tree LLAMA_CPP_DIR [-o OUT]
    gen_cdef.py whisper --tree WHISPER_CPP_DIR [-o OUT]
    gen_cdef.py --diff OLD_LLAMA_CPP_DIR NEW_LLAMA_CPP_DIR
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pycparser import c_ast, c_generator, c_parser

STUBS = Path(__file__).resolve().parent.parent / "headers" / "stubs"

# Macros that make the GNU/MSVC decorations of the headers vanish.
_NEUTRAL_DEFINES = [
    "__attribute__(x)=",
    "__declspec(x)=",
    "__restrict__=",
    "__restrict=",
    "__inline__=",
    "__inline=",
    "__extension__=",
    "__asm__(x)=",
    "__forceinline=",
    "_Noreturn=",
]

MACRO_PREFIXES = ("LLAMA_", "GGML_", "GGUF_", "MTMD_", "WHISPER_", "RPC_PROTO_")


@dataclass(frozen=True)
class HeaderSet:
    """The headers of one cffi module: the umbrella includes and their search path."""

    name: str
    tree: Path
    include_dirs: tuple[str, ...]
    headers: tuple[str, ...]

    def include_paths(self) -> list[Path]:
        return [self.tree / d for d in self.include_dirs]


def llama_headers(tree: Path, extra: tuple[str, ...] = ()) -> HeaderSet:
    """llama.h (which pulls in ggml, ggml-backend, ggml-cpu, ggml-opt, gguf) and mtmd."""
    return HeaderSet(
        "llama",
        tree,
        ("include", "ggml/include", "tools/mtmd"),
        ("llama.h", "gguf.h", "mtmd.h", "mtmd-helper.h", "ggml-rpc.h") + extra,
    )


def whisper_headers(tree: Path) -> HeaderSet:
    """whisper.h with whisper.cpp's own (older) ggml headers."""
    return HeaderSet("whisper", tree, ("include", "ggml/include"), ("whisper.h",))


def _compiler() -> list[str]:
    return (os.environ.get("CC") or "cc").split()


def _preprocess(hs: HeaderSet, extra_flags: list[str]) -> str:
    umbrella = "".join(f'#include "{h}"\n' for h in hs.headers)
    cmd = [*_compiler(), "-E", "-nostdinc", "-undef", "-std=c11", "-x", "c", "-I", str(STUBS)]
    for d in hs.include_paths():
        cmd += ["-I", str(d)]
    for d in _NEUTRAL_DEFINES:
        cmd.append("-D" + d)
    cmd += extra_flags + ["-"]
    proc = subprocess.run(cmd, input=umbrella, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gen_cdef: the C preprocessor failed on {hs.name} headers:\n{proc.stderr}")
    return proc.stdout


class _Labeler:
    """Maps absolute header paths to short, machine-independent labels."""

    def __init__(self, hs: HeaderSet):
        self.roots = [(str(p.resolve()), f"{hs.name}/{d}") for p, d in zip(hs.include_paths(), hs.include_dirs)]

    def label(self, path: str) -> str | None:
        """The label of an API header, None for stubs and the umbrella."""
        real = os.path.realpath(path) if path and path != "<stdin>" else ""
        for root, label in self.roots:
            if real.startswith(root + os.sep):
                return label + real[len(root):]
        return None


# sizeof() of the scalar types API headers use in constant expressions (LP64/LLP64 agree).
_SIZEOF = {
    "char": 1, "int8_t": 1, "uint8_t": 1, "bool": 1, "_Bool": 1,
    "short": 2, "int16_t": 2, "uint16_t": 2,
    "int": 4, "int32_t": 4, "uint32_t": 4, "float": 4,
    "int64_t": 8, "uint64_t": 8, "double": 8,
}


def _eval_int(node: c_ast.Node, names: dict[str, int]) -> int:
    """Evaluate an integer constant expression of an enum, an array size or a macro."""
    if isinstance(node, c_ast.UnaryOp) and node.op == "sizeof":
        t = node.expr
        if isinstance(t, c_ast.Typename) and isinstance(t.type, c_ast.TypeDecl) \
                and isinstance(t.type.type, c_ast.IdentifierType):
            tname = " ".join(t.type.type.names)
            if tname in _SIZEOF:
                return _SIZEOF[tname]
        raise ValueError("sizeof of a non-scalar type")
    if isinstance(node, c_ast.Constant):
        v = node.value
        if node.type == "char":
            body = v[1:-1]
            return ord(body.encode().decode("unicode_escape"))
        v = v.rstrip("uUlL")
        if v.lower().startswith("0x"):
            return int(v, 16)
        if v.lower().startswith("0b"):
            return int(v, 2)
        if len(v) > 1 and v.startswith("0"):
            return int(v, 8)
        return int(v)
    if isinstance(node, c_ast.ID):
        if node.name not in names:
            raise ValueError(f"unknown name {node.name}")
        return names[node.name]
    if isinstance(node, c_ast.UnaryOp):
        v = _eval_int(node.expr, names)
        return {"-": -v, "+": v, "~": ~v, "!": int(not v)}[node.op]
    if isinstance(node, c_ast.Cast):
        return _eval_int(node.expr, names)
    if isinstance(node, c_ast.BinaryOp):
        a, b = _eval_int(node.left, names), _eval_int(node.right, names)
        ops = {
            "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
            "/": lambda: int(a / b), "%": lambda: a % b, "<<": lambda: a << b,
            ">>": lambda: a >> b, "|": lambda: a | b, "&": lambda: a & b, "^": lambda: a ^ b,
        }
        return ops[node.op]()
    if isinstance(node, c_ast.TernaryOp):
        return _eval_int(node.iftrue if _eval_int(node.cond, names) else node.iffalse, names)
    raise ValueError(f"cannot evaluate {type(node).__name__}")


class _EnumResolver(c_ast.NodeVisitor):
    """Replaces every enumerator value by its evaluated integer."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def visit_Enum(self, node: c_ast.Enum) -> None:
        if node.values is None:
            return
        nxt = 0
        for e in node.values.enumerators:
            v = _eval_int(e.value, self.values) if e.value is not None else nxt
            self.values[e.name] = v
            e.value = c_ast.Constant("int", str(v))
            nxt = v + 1


class _ArraySizeResolver(c_ast.NodeVisitor):
    """Replaces array sizes by their value, or by ``...`` for the compiler to fill in."""

    def __init__(self, names: dict[str, int]) -> None:
        self.names = names

    def visit_ArrayDecl(self, node: c_ast.ArrayDecl) -> None:
        if node.dim is not None and not (isinstance(node.dim, c_ast.Constant) and node.dim.value.isdigit()):
            try:
                node.dim = c_ast.Constant("int", str(_eval_int(node.dim, self.names)))
            except (ValueError, KeyError, ZeroDivisionError):
                node.dim = c_ast.ID("...")
        self.generic_visit(node)


@dataclass
class Declarations:
    """The parsed API: emitted text plus a structured view for --diff."""

    chunks: list[tuple[str | None, str]] = field(default_factory=list)  # (function name, text)
    functions: dict[str, str] = field(default_factory=dict)
    structs: dict[str, list[str]] = field(default_factory=dict)
    enums: dict[str, dict[str, int]] = field(default_factory=dict)
    macros: dict[str, str] = field(default_factory=dict)
    deprecated: set[str] = field(default_factory=set)
    inline: set[str] = field(default_factory=set)  # functions defined in the header itself


def _strip_storage(decl: c_ast.Decl) -> c_ast.Decl:
    decl.storage = [s for s in decl.storage if s not in ("static", "extern")]
    decl.funcspec = []
    return decl


def _struct_fields(node: c_ast.Node, gen: c_generator.CGenerator) -> tuple[str | None, list[str] | None]:
    """(tag, field lines) of a struct/union definition reachable from a declaration."""
    t = node
    while isinstance(t, (c_ast.Typedef, c_ast.Decl, c_ast.TypeDecl)):
        t = t.type
    if isinstance(t, (c_ast.Struct, c_ast.Union)) and t.decls is not None:
        return t.name, [gen.visit(d) for d in t.decls]
    return None, None


def parse_api(hs: HeaderSet, extra_flags: list[str] | None = None) -> Declarations:
    """Preprocess and parse one header set into declarations."""
    text = _preprocess(hs, extra_flags or [])
    ast = c_parser.CParser().parse(text, filename="<umbrella>")
    enums = _EnumResolver()
    enums.visit(ast)
    _ArraySizeResolver(enums.values).visit(ast)
    labeler = _Labeler(hs)
    gen = c_generator.CGenerator()
    out = Declarations()
    typedefs: set[str] = set()
    for node in ast.ext:
        label = labeler.label(node.coord.file) if node.coord else None
        if label is None:
            continue
        marker = f'# {node.coord.line} "{label}"\n'
        name = None
        if isinstance(node, c_ast.FuncDef):
            node = _strip_storage(node.decl)
            out.inline.add(node.name)
        if isinstance(node, c_ast.Decl) and isinstance(node.type, c_ast.FuncDecl):
            _strip_storage(node)
            code = gen.visit(node) + ";"
            name = node.name
            out.functions[name] = " ".join(code.split())
        elif isinstance(node, (c_ast.Decl, c_ast.Typedef)):
            if isinstance(node, c_ast.Typedef):
                if node.name in typedefs:
                    continue  # C11 allows repeating a typedef; cdef does not
                typedefs.add(node.name)
            if isinstance(node, c_ast.Decl) and node.init is not None:
                node.init = None  # a constant defined in the header: cffi takes its value from C
            code = gen.visit(node) + ";"
            tag, fields = _struct_fields(node, gen)
            if tag or fields is not None:
                key = tag or getattr(node, "name", None) or "<anonymous>"
                out.structs[key] = fields or []
            t = node.type.type if isinstance(node.type, c_ast.TypeDecl) else node.type
            if isinstance(t, c_ast.Enum) and t.values is not None:
                out.enums[t.name or getattr(node, "name", "") or "<anonymous>"] = {
                    e.name: int(e.value.value) for e in t.values.enumerators
                }
        else:
            continue
        out.chunks.append((name, marker + code + "\n"))
    out.macros = _api_macros(hs, extra_flags or [])
    out.deprecated = _deprecated_names(hs)
    return out


def _macro_locations(hs: HeaderSet) -> dict[str, tuple[str, int]]:
    labeler = _Labeler(hs)
    found: dict[str, tuple[str, int]] = {}
    pattern = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)")
    for inc in hs.include_paths():
        for path in sorted(inc.glob("*.h")):
            for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = pattern.match(line)
                if m and m.group(1) not in found:
                    found[m.group(1)] = (labeler.label(str(path)) or path.name, lineno)
    return found


def _api_macros(hs: HeaderSet, extra_flags: list[str]) -> dict[str, str]:
    """Object-like API macros whose value is an integer, a float or a string literal.

    Maps name -> cdef line. Integers use ``...`` so the compiler supplies the value.
    """
    text = _preprocess_macros(hs, extra_flags)
    raw: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"#define ([A-Za-z_]\w*) (.*)$", line)
        if m and m.group(1).startswith(MACRO_PREFIXES):
            raw[m.group(1)] = m.group(2).strip()
    parser = c_parser.CParser()
    result: dict[str, str] = {}
    for name in sorted(raw):
        value = raw[name]
        seen = set()
        while value in raw and value not in seen:
            seen.add(value)
            value = raw[value]
        if re.fullmatch(r'"(?:[^"\\]|\\.)*"', value):
            result[name] = f"static const char *const {name};"
            continue
        if re.fullmatch(r"[-+]?\(?\s*\d+\.\d*(?:[eE][-+]?\d+)?[fF]?\s*\)?", value):
            result[name] = f"static const double {name};"
            continue
        expanded = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: raw.get(m.group(0), m.group(0)), value)
        try:
            expr = parser.parse(f"int __v = {expanded};").ext[0].init
            _eval_int(expr, {})
        except Exception:
            continue
        result[name] = f"#define {name} ..."
    return result


def _preprocess_macros(hs: HeaderSet, extra_flags: list[str]) -> str:
    umbrella = "".join(f'#include "{h}"\n' for h in hs.headers)
    cmd = [*_compiler(), "-E", "-dM", "-nostdinc", "-undef", "-x", "c", "-I", str(STUBS)]
    for d in hs.include_paths():
        cmd += ["-I", str(d)]
    cmd += extra_flags + ["-"]
    proc = subprocess.run(cmd, input=umbrella, capture_output=True, text=True, check=True)
    return proc.stdout


def _deprecated_names(hs: HeaderSet) -> set[str]:
    """Functions wrapped in a DEPRECATED(...) / GGML_DEPRECATED(...) macro."""
    names: set[str] = set()
    for inc in hs.include_paths():
        for path in sorted(inc.glob("*.h")):
            text = path.read_text(errors="replace")
            for m in re.finditer(r"\b(?:GGML_)?DEPRECATED\s*\(", text):
                head = text[m.end(): m.end() + 400]
                fm = re.search(r"\b([a-z_][a-z0-9_]*)\s*\(", head)
                if fm:
                    names.add(fm.group(1))
    return names


def render(hs: HeaderSet, decls: Declarations, exclude: frozenset[str] = frozenset()) -> str:
    """The cdef text: header, macros, then declarations in header order.

    ``exclude`` names functions to leave out (those a build does not export).
    """
    locations = _macro_locations(hs)
    lines = [f"// cffi declarations generated by tools/gen_cdef.py from the {hs.name} headers: "
             + ", ".join(hs.headers) + "\n"]
    for name, line in decls.macros.items():
        file, lineno = locations.get(name, ("<macro>", 1))
        lines.append(f'# {lineno} "{file}"\n{line}\n')
    lines.extend(text for name, text in decls.chunks if name not in exclude)
    return "".join(lines)


def diff(old: Declarations, new: Declarations) -> list[str]:
    """Human-readable API differences between two parsed header sets."""
    out: list[str] = []

    def section(title: str, items: list[str]) -> None:
        if items:
            out.append(f"{title}:")
            out.extend(f"  {i}" for i in items)

    of, nf = old.functions, new.functions
    section("added functions", [nf[n] for n in sorted(nf.keys() - of.keys())])
    section("removed functions", [of[n] for n in sorted(of.keys() - nf.keys())])
    section("changed functions", [f"{of[n]}\n    -> {nf[n]}" for n in sorted(of.keys() & nf.keys()) if of[n] != nf[n]])
    os_, ns = old.structs, new.structs
    section("added structs", sorted(ns.keys() - os_.keys()))
    section("removed structs", sorted(os_.keys() - ns.keys()))
    changed = []
    for name in sorted(os_.keys() & ns.keys()):
        a, b = os_[name], ns[name]
        if a != b:
            changed.append(f"struct {name}:")
            changed.extend(f"    - {f}" for f in a if f not in b)
            changed.extend(f"    + {f}" for f in b if f not in a)
            if set(a) == set(b):
                changed.append("    (fields reordered)")
    section("changed structs", changed)
    oe, ne = old.enums, new.enums
    enum_changes = []
    for name in sorted(oe.keys() | ne.keys()):
        a, b = oe.get(name, {}), ne.get(name, {})
        for k in sorted(a.keys() | b.keys()):
            if a.get(k) != b.get(k):
                enum_changes.append(f"{name}.{k}: {a.get(k, '(none)')} -> {b.get(k, '(none)')}")
    section("changed enum values", enum_changes)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("module", nargs="?", choices=["llama", "whisper"], help="which header set to emit")
    ap.add_argument("--tree", type=Path, help="source tree (llama.cpp or whisper.cpp)")
    ap.add_argument("--header", action="append", default=[], help="extra header to include (llama set)")
    ap.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    ap.add_argument("--diff", nargs=2, type=Path, metavar=("OLD", "NEW"), help="print the API difference of two llama.cpp trees")
    args = ap.parse_args(argv)
    if args.diff:
        old, new = (parse_api(llama_headers(t)) for t in args.diff)
        lines = diff(old, new)
        print("\n".join(lines) if lines else "no API difference")
        return 0
    if not args.module or not args.tree:
        ap.error("give a module and --tree, or --diff OLD NEW")
    hs = llama_headers(args.tree, tuple(args.header)) if args.module == "llama" else whisper_headers(args.tree)
    text = render(hs, parse_api(hs))
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""cffi builders (API mode, out-of-line) for llamapy's two compiled modules.

* ``llamapy._cffi``: llama.h (with the ggml headers it includes), gguf.h, mtmd.h and
  mtmd-helper.h, linked against llama.cpp's shared libraries, which are shipped next to
  the module and found through an ``$ORIGIN`` rpath.
* ``llamapy._whisper_cffi``: whisper.h, linked against whisper.cpp and its own (older)
  ggml as static archives whose symbols stay private to the module, so the two ggml
  versions never meet.

The declarations come from ``tools/gen_cdef.py``; the only hand-written cdef is that of
the project's own helpers in ``headers/``. ``setup.py`` drives this module; running it
directly builds both modules in place (for development).
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tools import gen_cdef  # noqa: E402
from tools.cmake_build import ORIGIN, NativeBuild  # noqa: E402

HEADERS = ROOT / "headers"
LLAMA_INCLUDES = ("llama.h", "gguf.h", "mtmd.h", "mtmd-helper.h", "ggml-rpc.h")
WHISPER_PRELUDE = """
#include "whisper.h"
"""
WHISPER_CDEF = """
extern "Python" void llamapy_whisper_py_log(enum ggml_log_level level, const char *text, void *user_data);
"""


def _symbols(paths: list[Path], dynamic: bool) -> set[str]:
    """Names of the functions the given libraries define (nm)."""
    if platform.system() == "Darwin":
        flags = ["-gU"]
    else:
        flags = ["-D", "--defined-only"] if dynamic else ["--defined-only", "-g"]
    names: set[str] = set()
    for p in paths:
        out = subprocess.run(["nm", *flags, str(p)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "TtWw":
                name = parts[2].split("@")[0]
                names.add(name[1:] if platform.system() == "Darwin" and name.startswith("_") else name)
    return names


def _exclusions(decls: gen_cdef.Declarations, defined: set[str]) -> dict[str, str]:
    """Header functions the built libraries do not define, with the reason."""
    return {
        name: "declared in the header but not exported by the built libraries"
        for name in sorted(decls.functions)
        if name not in defined and name not in decls.inline
    }


def llama_ffibuilder(build: NativeBuild, version: str, tmp_cdef: Path | None = None) -> tuple[FFI, dict]:
    """The FFI for ``llamapy._cffi`` and a description of what it covers."""
    hs = gen_cdef.llama_headers(build.source.tree)
    decls = gen_cdef.parse_api(hs)
    shared = build.shared_libraries()
    excluded = _exclusions(decls, _symbols(shared, dynamic=True))
    cdef = gen_cdef.render(hs, decls, frozenset(excluded))
    if tmp_cdef:
        tmp_cdef.write_text(cdef)
    ffi = FFI()
    ffi.cdef(cdef)
    ffi.cdef((HEADERS / "llamapy_helpers.cdef").read_text())
    libs = [p.name[3:].rsplit(".", 1)[0] for p in shared]
    ffi.set_source(
        "llamapy._cffi",
        "".join(f'#include "{h}"\n' for h in LLAMA_INCLUDES) + '#include "llamapy_helpers.h"\n',
        sources=[str((HEADERS / name).relative_to(ROOT)) for name in ("llamapy_helpers.c", "llamapy_memory.cpp")],
        include_dirs=[str(p) for p in hs.include_paths()] + [str(HEADERS), str(build.source.tree / "src")],
        library_dirs=[str(build.lib_dir)],
        libraries=libs + ["stdc++"],
        define_macros=[("LLAMAPY_VERSION", f'"{version}"')],
        extra_compile_args=["-Wno-deprecated-declarations"],
        extra_link_args=[f"-Wl,-rpath,{ORIGIN}"],
    )
    info = {
        "functions": sorted(set(decls.functions) - set(excluded)),
        "excluded": excluded,
        "deprecated": sorted(decls.deprecated & set(decls.functions)),
        "include_dirs": [str(p) for p in hs.include_paths()],
        "headers": list(LLAMA_INCLUDES),
        "shared_libraries": [p.name for p in shared],
    }
    return ffi, info


def whisper_ffibuilder(build: NativeBuild, version: str) -> tuple[FFI, dict]:
    """The FFI for ``llamapy._whisper_cffi``: whisper.cpp linked statically and privately."""
    hs = gen_cdef.whisper_headers(build.source.tree)
    decls = gen_cdef.parse_api(hs)
    static = build.static_libraries()
    # Only whisper's own API is wanted here; its ggml stays internal to the module.
    whisper_only = {n for n in decls.functions if not n.startswith("whisper_")}
    excluded = _exclusions(decls, _symbols(static, dynamic=False))
    cdef = gen_cdef.render(hs, decls, frozenset(excluded) | frozenset(whisper_only))
    ffi = FFI()
    ffi.cdef(cdef)
    ffi.cdef(WHISPER_CDEF)
    link = ["-Wl,--exclude-libs,ALL"] if platform.system() == "Linux" else []
    ffi.set_source(
        "llamapy._whisper_cffi",
        WHISPER_PRELUDE,
        include_dirs=[str(p) for p in hs.include_paths()],
        extra_objects=[str(p) for p in static],
        libraries=["stdc++", "m", "pthread"],
        extra_compile_args=["-Wno-deprecated-declarations"],
        extra_link_args=link,
    )
    info = {
        "functions": sorted(n for n in decls.functions if n.startswith("whisper_") and n not in excluded),
        "excluded": {n: r for n, r in excluded.items() if n.startswith("whisper_")},
        "deprecated": sorted(n for n in decls.deprecated & set(decls.functions) if n.startswith("whisper_")),
        "include_dirs": [str(p) for p in hs.include_paths()],
    }
    return ffi, info


def write_build_info(path: Path, llama: NativeBuild, whisper: NativeBuild, llama_info: dict, whisper_info: dict,
                     version: str) -> None:
    """Record what was built, for llamapy.build_info() and the coverage tests."""
    data = {
        "version": version,
        "llama_cpp": {"identity": llama.source.identity, "tree": str(llama.source.tree),
                      "build_dir": str(llama.build_dir), "backends": llama.backends,
                      "cmake_flags": llama.flags, **llama_info},
        "whisper_cpp": {"identity": whisper.source.identity, "tree": str(whisper.source.tree),
                        "build_dir": str(whisper.build_dir), **whisper_info},
    }
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    from tools import cmake_build, sources

    sys.path.insert(0, str(ROOT / "llamapy"))
    from _version import __version__  # type: ignore[import-not-found]

    lb = cmake_build.build_llama(sources.fetch("llama.cpp"), cmake_build.selected_backends())
    wb = cmake_build.build_whisper(sources.fetch("whisper.cpp"))
    lffi, linfo = llama_ffibuilder(lb, __version__)
    wffi, winfo = whisper_ffibuilder(wb, __version__)
    lffi.compile(tmpdir=str(ROOT), verbose=True)
    wffi.compile(tmpdir=str(ROOT), verbose=True)
    write_build_info(ROOT / "llamapy" / "_build_info.json", lb, wb, linfo, winfo, __version__)

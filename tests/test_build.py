"""The build foundation: API coverage, struct layouts, gen_cdef, backend flags, build errors."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import llamapy
from llamapy._ffi import ffi, lib
from tests.conftest import REPO, run_python

sys.path.insert(0, str(REPO))
from tools import cmake_build, gen_cdef, sources  # noqa: E402
from tools.build_env import BuildError  # noqa: E402

API_HEADERS = [
    ("llama_cpp", "include/llama.h", "LLAMA_API"),
    ("llama_cpp", "ggml/include/gguf.h", "GGML_API"),
    ("llama_cpp", "tools/mtmd/mtmd.h", "MTMD_API"),
    ("llama_cpp", "tools/mtmd/mtmd-helper.h", "MTMD_API"),
    ("llama_cpp", "ggml/include/ggml-rpc.h", "GGML_BACKEND_API"),
    ("whisper_cpp", "include/whisper.h", "WHISPER_API"),
]


def declared_functions(path: Path, macro: str) -> dict[str, str]:
    """Function names declared with an export macro, found by a plain text scan of the header
    (independent of gen_cdef's pycparser route), mapped to "c" or "c++" (std:: in the signature:
    C++-only declarations, which no C binding can reach)."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", path.read_text(), flags=re.S)
    names = {}
    for m in re.finditer(rf"\b{macro}\b(?!\s*$)", text, flags=re.M):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if text[line_start:m.start()].lstrip().startswith("#"):
            continue  # the macro's own #define
        tail = text[m.end(): m.end() + 600]
        for fm in re.finditer(r"([A-Za-z_]\w*)\s*\(", tail):
            if fm.group(1) not in ("DEPRECATED", "GGML_DEPRECATED", macro):
                names[fm.group(1)] = "c++" if "std::" in tail[:fm.start()] else "c"
                break
    return names


@pytest.mark.parametrize("tree_key,header,macro", API_HEADERS)
def test_every_api_function_is_callable(info, tree_key, header, macro):
    found = declared_functions(Path(info[tree_key]["tree"]) / header, macro)
    assert len(found) > 5, f"the scan of {header} found almost nothing: {found}"
    for name in sorted(n for n, lang in found.items() if lang == "c++"):
        print(f"{header}: {name} excluded: C++-only declaration (std:: types), not part of the C API")
    declared = {n for n, lang in found.items() if lang == "c"}
    module_lib = lib if tree_key == "llama_cpp" else llamapy._ffi.whisper()[1]
    excluded = info[tree_key]["excluded"]
    missing = sorted(n for n in declared if not hasattr(module_lib, n) and n not in excluded)
    assert not missing, f"{header}: declared with {macro} but not callable: {missing}"
    for name in sorted(n for n in declared if n in excluded):
        print(f"{header}: {name} excluded: {excluded[name]}")  # listed with its reason (-rA shows it)
    deprecated = set(info[tree_key]["deprecated"]) & declared
    assert all(hasattr(module_lib, n) or n in excluded for n in deprecated)


def test_exclusions_have_reasons(info):
    for tree in ("llama_cpp", "whisper_cpp"):
        for name, reason in info[tree]["excluded"].items():
            assert reason and name not in info[tree]["functions"]


def _struct_names(module_ffi) -> list[str]:
    structs = module_ffi.list_types()[1]
    names = []
    for name in structs:
        try:
            module_ffi.sizeof(f"struct {name}")
        except (module_ffi.error, TypeError):
            continue  # opaque: declared, never defined in the headers
        names.append(name)
    return names


def _compiler_sizes(include_dirs: list[str], headers: list[str], names: list[str], tmp_path: Path) -> dict[str, int]:
    src = tmp_path / "sizes.c"
    body = "".join(f'    printf("{n} %zu\\n", sizeof(struct {n}));\n' for n in names)
    src.write_text("#include <stdio.h>\n" + "".join(f'#include "{h}"\n' for h in headers)
                   + "int main(void) {\n" + body + "    return 0;\n}\n")
    exe = tmp_path / "sizes"
    cmd = [os.environ.get("CC", "cc"), "-w", "-o", str(exe), str(src)] + [f"-I{d}" for d in include_dirs]
    subprocess.run(cmd, check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_struct_sizes_match_the_compiler(info, tmp_path):
    names = _struct_names(ffi)
    assert {"llama_model_params", "llama_context_params", "llama_batch", "gguf_init_params"} <= set(names)
    sizes = _compiler_sizes(info["llama_cpp"]["include_dirs"] + [str(REPO / "headers")],
                            info["llama_cpp"]["headers"] + ["llamapy_helpers.h"], names, tmp_path)
    wrong = {n: (ffi.sizeof(f"struct {n}"), sizes[n]) for n in names if ffi.sizeof(f"struct {n}") != sizes[n]}
    assert not wrong, f"cffi vs compiler sizeof: {wrong}"


def test_whisper_struct_sizes_match_the_compiler(info, tmp_path):
    wffi, _ = llamapy._ffi.whisper()
    names = _struct_names(wffi)
    assert "whisper_full_params" in names
    sizes = _compiler_sizes(info["whisper_cpp"]["include_dirs"], ["whisper.h"], names, tmp_path)
    wrong = {n: (wffi.sizeof(f"struct {n}"), sizes[n]) for n in names if wffi.sizeof(f"struct {n}") != sizes[n]}
    assert not wrong, f"cffi vs compiler sizeof: {wrong}"


def test_defines_are_available():
    assert lib.LLAMA_DEFAULT_SEED == 0xFFFFFFFF
    assert lib.LLAMA_TOKEN_NULL == -1
    assert lib.GGML_MAX_DIMS == 4
    assert ffi.string(lib.GGUF_MAGIC) == b"GGUF"


def test_gen_cdef_is_deterministic_and_marks_lines(info, tmp_path):
    tree = info["llama_cpp"]["tree"]
    outs = []
    for i in range(2):
        out = tmp_path / f"cdef{i}.txt"
        subprocess.run([sys.executable, str(REPO / "tools" / "gen_cdef.py"), "llama", "--tree", tree, "-o", str(out)],
                       check=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    text = outs[0].decode()
    assert re.search(r'^# \d+ "llama/include/llama\.h"\nstruct llama_model \*llama_model_load_from_file\(', text, re.M)
    assert "enum llama_vocab_type" in text and "#define LLAMA_DEFAULT_SEED ..." in text
    assert str(tree) not in text  # no machine-specific paths


def test_cdef_errors_name_the_upstream_header_line(info):
    from cffi import FFI, CDefError

    text = '# 4242 "llama/include/llama.h"\nint llama_broken(unknown_t x);\n'
    with pytest.raises(CDefError) as err:
        FFI().cdef(text)
    assert "llama/include/llama.h:4242" in str(err.value)


def test_gen_cdef_whisper_output_parses(info):
    from cffi import FFI

    hs = gen_cdef.whisper_headers(Path(info["whisper_cpp"]["tree"]))
    text = gen_cdef.render(hs, gen_cdef.parse_api(hs))
    FFI().cdef(text)  # raises on anything cffi cannot read
    assert "whisper_full_params" in text


def test_gen_cdef_diff_reports_api_changes(info, tmp_path):
    old = Path(info["llama_cpp"]["tree"])
    new = tmp_path / "new"
    for sub in ("include", "ggml/include", "tools/mtmd"):
        shutil.copytree(old / sub, new / sub, ignore=shutil.ignore_patterns("*.cpp", "*.mp3", "*.mp4", "*.jpeg"))
    h = new / "include" / "llama.h"
    text = h.read_text()
    text = text.replace("LLAMA_API void llama_backend_free(void);",
                        "LLAMA_API void llama_backend_free(void);\n    LLAMA_API int llama_brand_new(int x);")
    text = text.replace("LLAMA_API int32_t llama_n_threads(struct llama_context * ctx);",
                        "LLAMA_API int64_t llama_n_threads(struct llama_context * ctx);")
    text = re.sub(r"(struct llama_model_params \{.*?)\n\s*bool check_tensors;[^\n]*", r"\1", text, count=1, flags=re.S)
    h.write_text(text)
    out = subprocess.run([sys.executable, str(REPO / "tools" / "gen_cdef.py"), "--diff", str(old), str(new)],
                         check=True, capture_output=True, text=True).stdout
    assert "added functions:\n  int llama_brand_new(int x);" in out
    assert "changed functions:" in out and "int64_t llama_n_threads" in out
    assert "struct llama_model_params:" in out and "- bool check_tensors" in out
    same = subprocess.run([sys.executable, str(REPO / "tools" / "gen_cdef.py"), "--diff", str(old), str(old)],
                          check=True, capture_output=True, text=True).stdout
    assert same.strip() == "no API difference"


@pytest.mark.parametrize("spec,expected", [
    ("", ["-DGGML_RPC=ON"]),
    ("cpu", []),
    ("cuda,rpc", ["-DGGML_CUDA=ON", "-DGGML_RPC=ON"]),
    ("vulkan", ["-DGGML_VULKAN=ON"]),
    ("metal", ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"]),
    ("blas", ["-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=OpenBLAS"]),
    ("hip", ["-DGGML_HIP=ON"]),
    ("sycl", ["-DGGML_SYCL=ON", "-DCMAKE_C_COMPILER=icx", "-DCMAKE_CXX_COMPILER=icpx"]),
    (" CUDA , Vulkan ", ["-DGGML_CUDA=ON", "-DGGML_VULKAN=ON"]),
])
def test_backend_flags(spec, expected):
    flags = cmake_build.backend_flags(cmake_build.selected_backends(spec))
    assert sorted(f for f in flags if f != "-DGGML_METAL=OFF") == sorted(expected)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(BuildError, match=r"unknown backend 'cudaa'.*choose from: .*cuda"):
        cmake_build.selected_backends("cpu,cudaa")


def test_build_records_backends(info):
    assert info["llama_cpp"]["backends"] == cmake_build.selected_backends("")
    assert llamapy.supports_rpc() == ("rpc" in info["llama_cpp"]["backends"])


def test_corrupt_archive_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMAPY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLAMAPY_WHISPER_CPP_DIR", raising=False)
    pin = sources.pins()["whisper.cpp"]
    (tmp_path / "sources").mkdir()
    bad = tmp_path / "sources" / pin["archive"]
    bad.write_bytes(b"not the archive")
    with pytest.raises(BuildError, match="sha256 mismatch"):
        sources.fetch("whisper.cpp")
    assert not bad.exists()  # removed, so the next build fetches it anew


def test_missing_archive_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMAPY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LLAMAPY_WHISPER_CPP_DIR", raising=False)
    pin = dict(sources.pins()["whisper.cpp"], version="0.0.0.dev999999")
    monkeypatch.setattr(sources, "pins", lambda: {"whisper.cpp": pin})
    with pytest.raises(BuildError, match=r"could not download pywhispercpp==0\.0\.0\.dev999999.*LLAMAPY_WHISPER_CPP_DIR"):
        sources.fetch("whisper.cpp")


def test_local_tree_that_is_not_llama_cpp(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMAPY_LLAMA_CPP_DIR", str(tmp_path))
    with pytest.raises(BuildError, match=r"is not a llama.cpp source tree \(no include/llama.h\)"):
        sources.fetch("llama.cpp")


def test_local_tree_is_used_as_is(info, monkeypatch):
    monkeypatch.setenv("LLAMAPY_LLAMA_CPP_DIR", info["llama_cpp"]["tree"])
    src = sources.fetch("llama.cpp")
    assert src.tree == Path(info["llama_cpp"]["tree"]).resolve() and src.key.startswith("local:")


@pytest.mark.parametrize("env,message", [
    ({"LLAMAPY_BACKENDS": "quantum"}, "unknown backend 'quantum'"),
    ({"LLAMAPY_LLAMA_CPP_DIR": "/nonexistent/llama.cpp"}, "is not a llama.cpp source tree"),
])
def test_setup_reports_build_errors_in_one_line(tmp_path, env, message):
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-temp", str(tmp_path / "t"),
                           "--build-lib", str(tmp_path / "l")],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, **env})
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "error: llamapy:" in proc.stderr


def test_public_surface():
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", llamapy.__version__)
    assert llamapy.llama_cpp_version() == sources.pins()["llama.cpp"]["identity"]
    assert "CPU" in llamapy.system_info()
    devices = llamapy.backends()
    cpu = [d for d in devices if d.type == "cpu"]
    assert cpu and cpu[0].memory_total > 0 and 0 < cpu[0].memory_free <= cpu[0].memory_total
    for fn in (llamapy.supports_gpu_offload, llamapy.supports_mmap, llamapy.supports_mlock, llamapy.supports_rpc):
        assert isinstance(fn(), bool)
    assert llamapy.supports_mmap()


def test_import_from_any_directory_without_library_path():
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = subprocess.run([sys.executable, "-c", "import llamapy; print(llamapy.system_info())"],
                          cwd="/", capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "CPU" in proc.stdout, proc.stderr


def test_libraries_are_found_through_origin(info):
    pkg = Path(llamapy.__file__).parent
    files = [next(pkg.glob("_cffi*.so")), *pkg.glob("lib*.so")]
    assert len(files) >= 5
    for f in files:
        dyn = subprocess.run(["readelf", "-d", str(f)], check=True, capture_output=True, text=True).stdout
        runpath = re.search(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]", dyn)
        assert runpath and "$ORIGIN" in runpath.group(1).split(":"), f"{f.name}: {dyn}"
        assert info["llama_cpp"]["build_dir"] not in runpath.group(1)


def test_module_version_mismatch_is_refused():
    from llamapy._ffi import check_module_version
    from llamapy.errors import BuildMismatchError

    check_module_version(llamapy.__version__)  # the installed module matches
    with pytest.raises(BuildMismatchError, match=r"built for 0\.0\.0-other.*pip install -e \."):
        check_module_version("0.0.0-other")


def test_logs_go_to_the_llamapy_logger_quietly_by_default(model_path):
    code = f"""
import logging, llamapy
from llamapy._ffi import lib, set_log_level
records = []
class H(logging.Handler):
    def emit(self, r): records.append(r.getMessage())
logging.getLogger('llamapy').addHandler(H())
logging.getLogger('llamapy').setLevel(logging.DEBUG)
p = lib.llama_model_default_params()
m = lib.llama_model_load_from_file({str(model_path)!r}.encode(), p)
quiet = len(records)
lib.llama_model_free(m)
set_log_level(logging.DEBUG)
m = lib.llama_model_load_from_file({str(model_path)!r}.encode(), p)
lib.llama_model_free(m)
print(quiet, len(records), any('llama_model_loader' in r for r in records))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    quiet, loud, named = proc.stdout.split()
    assert int(quiet) == 0 and int(loud) > 10 and named == "True"
    assert "llama_model_loader" not in proc.stderr  # nothing printed by default

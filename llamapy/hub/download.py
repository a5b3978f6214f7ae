"""Downloading GGUF models from a Hugging Face-style hub or any URL: resumable, atomic, verified.

``download_model(hf_repo="user/repo:tag")`` asks the hub which files the repository holds
(``api/models/<repo>/refs``, then ``api/models/<repo>/tree/<commit>``), picks the GGUF file
the tag names (Ollama-style: ``q4`` takes the repo's Q4_K_M, ``q8_0`` its Q8_0 file; no tag
takes Q4_K_M, else Q8_0, else the first model file), and fetches every split of it from
``<repo>/resolve/<commit>/<path>``. The hub's address comes from ``HF_ENDPOINT`` (as the hub's
own client does), a token from ``token=`` or ``HF_TOKEN``.

A transfer goes to ``<file>.part`` and resumes from there (HTTP Range) after an interruption,
within a call (``retries``) or in a later one; the file takes its final name only once its
size, and its sha256 where the server tells it, check out. So a partial file is never
mistaken for a model.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LlamaError
from .catalog import models_dir

DEFAULT_ENDPOINT = "https://huggingface.co/"
DEFAULT_TAGS = ("Q4_K_M", "Q8_0")
_CHUNK = 1 << 20
_SPLIT = re.compile(r"^(.+)-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT = re.compile(r"[-.]([A-Z0-9_]+)(?:-\d{5}-of-\d{5})?\.gguf$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SIDECARS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")


class DownloadError(LlamaError):
    """A model could not be downloaded, or what arrived failed verification."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a hub repository: its path in the repo, size and sha256 (when the hub gives them)."""

    path: str
    size: int | None
    sha256: str | None


def hub_endpoint() -> str:
    """The hub's base URL: $HF_ENDPOINT, else the public hub; always ends in '/'."""
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    return endpoint if endpoint.endswith("/") else endpoint + "/"


def default_cache_dir() -> Path:
    return models_dir() / "hub"


def split_repo_tag(hf_repo: str) -> tuple[str, str, str]:
    """'user/model:tag' -> (user, model, tag); the tag may be empty."""
    repo, _, tag = hf_repo.partition(":")
    user, sep, model = repo.partition("/")
    if not sep or not user or not model or "/" in model or ".." in repo:
        raise ValueError(f"not a repository name: {hf_repo!r} (expected user/model or user/model:tag)")
    return user, model, tag


def quant_tag(filename: str) -> str:
    """The quantisation tag of a GGUF file name ('model-Q4_K_M.gguf' -> 'Q4_K_M'), '' if none."""
    m = _QUANT.search(Path(filename).name)
    return m.group(1).upper() if m else ""


def download_model(hf_repo: str | None = None, cache_dir: str | os.PathLike | None = None, *,
                   url: str | None = None, output_path: str | os.PathLike | None = None,
                   token: str | None = None, progress: bool | None = None, retries: int = 3) -> Path:
    """Download a GGUF model; return the path of the (first) model file.

    Either ``hf_repo="user/model[:tag]"`` (into ``cache_dir``, default: the llamapy model cache)
    or ``url=...`` with ``output_path``. A file already downloaded and verified is not fetched
    again. ``progress`` None draws a bar on stderr when it is a terminal.
    """
    if (hf_repo is None) == (url is None):
        raise ValueError("give either hf_repo='user/model[:tag]' or url=... (with output_path)")
    show = sys.stderr.isatty() if progress is None else progress
    token = token or os.environ.get("HF_TOKEN")
    if url is not None:
        if output_path is None:
            name = Path(urllib.parse.urlparse(url).path).name
            if not name:
                raise ValueError(f"cannot name the file of {url!r}: give output_path")
            output_path = Path(cache_dir or default_cache_dir()) / name
        dest = Path(output_path).expanduser()
        _fetch(url, dest, None, token, show, retries)
        return dest
    user, model, tag = split_repo_tag(hf_repo)  # type: ignore[arg-type]
    repo = f"{user}/{model}"
    commit = _repo_commit(repo, token)
    files = _repo_files(repo, commit, token)
    chosen = select_model_files(files, tag)
    if not chosen:
        available = ", ".join(f.path for f in files if f.path.endswith(".gguf")) or "none"
        raise DownloadError(f"{repo} has no GGUF model file for tag {tag or '(default)'!r}; "
                            f"GGUF files in the repository: {available}")
    target_dir = Path(cache_dir or default_cache_dir()).expanduser() / user / model
    paths = []
    for f in chosen:
        dest = target_dir / Path(f.path).name
        file_url = f"{hub_endpoint()}{repo}/resolve/{commit}/{urllib.parse.quote(f.path)}"
        _fetch(file_url, dest, f, token, show, retries)
        paths.append(dest)
    return paths[0]


def select_model_files(files: list[RemoteFile], tag: str) -> list[RemoteFile]:
    """The GGUF file (all its splits) a tag picks; [] when none matches.

    An exact quantisation tag wins ('q4_k_m' -> Q4_K_M); otherwise a tag that starts the
    quantisation ('q4' -> Q4_K_M, else Q4_K_S, Q4_0, ...), preferring the _K_M variant.
    """
    models = [f for f in files if f.path.lower().endswith(".gguf")
              and not any(s in Path(f.path).name.lower() for s in _SIDECARS)]
    firsts = [f for f in models if (s := _SPLIT.match(Path(f.path).name)) is None or int(s.group(2)) == 1]

    def pick(wanted: str) -> RemoteFile | None:
        wanted = wanted.upper()
        exact = [f for f in firsts if quant_tag(f.path) == wanted]
        if exact:
            return exact[0]
        prefixed = sorted((f for f in firsts if quant_tag(f.path).startswith(wanted)),
                          key=lambda f: (not quant_tag(f.path).endswith("_K_M"), quant_tag(f.path)))
        return prefixed[0] if prefixed else None

    first = next((f for f in (pick(t) for t in ([tag] if tag else DEFAULT_TAGS)) if f), None)
    if first is None and not tag and firsts:
        first = firsts[0]
    if first is None:
        return []
    m = _SPLIT.match(Path(first.path).name)
    if not m:
        return [first]
    prefix, count = m.group(1), m.group(3)
    return sorted((f for f in models if (s := _SPLIT.match(Path(f.path).name)) and s.group(1) == prefix
                   and s.group(3) == count), key=lambda f: f.path)


def list_cached_models(cache_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Models downloaded from a hub: dicts with user, model, tag, path and size (bytes)."""
    root = Path(cache_dir or default_cache_dir()).expanduser()
    out = []
    for path in sorted(root.glob("*/*/*.gguf")):
        m = _SPLIT.match(path.name)
        if m and int(m.group(2)) != 1:
            continue
        out.append({"user": path.parent.parent.name, "model": path.parent.name, "tag": quant_tag(path.name),
                    "path": str(path), "size": path.stat().st_size})
    return out


# -- the hub's API -----------------------------------------------------------------------
def _request(url: str, token: str | None, headers: dict[str, str] | None = None) -> urllib.request.Request:
    h = {"User-Agent": "llamapy", **(headers or {})}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return urllib.request.Request(url, headers=h)


def _get_json(url: str, token: str | None) -> Any:
    try:
        with urllib.request.urlopen(_request(url, token, {"Accept": "application/json"}), timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        hint = " (private or gated: set HF_TOKEN)" if e.code in (401, 403) else ""
        raise DownloadError(f"{url}: HTTP {e.code}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from None
    except ValueError:
        raise DownloadError(f"{url}: the hub's answer is not JSON") from None


def _repo_commit(repo: str, token: str | None) -> str:
    refs = _get_json(f"{hub_endpoint()}api/models/{repo}/refs", token)
    branches = [b for b in (refs.get("branches") or []) if isinstance(b, dict)] if isinstance(refs, dict) else []
    valid = [b for b in branches if re.fullmatch(r"[0-9a-f]{40}", str(b.get("targetCommit", "")))]
    if not valid:
        raise DownloadError(f"{repo}: the hub lists no branch with a valid commit")
    main = [b for b in valid if b.get("name") == "main"]
    return (main or valid)[0]["targetCommit"]


def _repo_files(repo: str, commit: str, token: str | None) -> list[RemoteFile]:
    tree = _get_json(f"{hub_endpoint()}api/models/{repo}/tree/{commit}?recursive=true", token)
    if not isinstance(tree, list):
        raise DownloadError(f"{repo}: the hub's file list is not a list")
    files = []
    for item in tree:
        if not isinstance(item, dict) or item.get("type") != "file" or not isinstance(item.get("path"), str):
            continue
        path = item["path"]
        if path.startswith("/") or ".." in Path(path).parts:
            continue
        lfs = item.get("lfs") if isinstance(item.get("lfs"), dict) else {}
        oid = str(lfs.get("oid", ""))
        size = lfs.get("size", item.get("size"))
        files.append(RemoteFile(path, int(size) if isinstance(size, int) else None,
                                oid if _SHA256.match(oid) else None))
    return files


# -- one file -----------------------------------------------------------------------------
def _fetch(url: str, dest: Path, expected: RemoteFile | None, token: str | None, show: bool, retries: int) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming, then verify and rename."""
    if dest.is_file() and (expected is None or expected.size in (None, dest.stat().st_size)):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            size, sha = _transfer(url, part, token, show)
            break
        except _Interrupted as e:
            attempt += 1
            if attempt > retries:
                raise DownloadError(f"{url}: transfer interrupted ({e}); {part.stat().st_size if part.exists() else 0}"
                                    f" bytes kept in {part}: run the download again to resume") from None
            time.sleep(min(2.0, 0.25 * attempt))
    size = expected.size if expected and expected.size is not None else size
    sha = expected.sha256 if expected and expected.sha256 else sha
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise DownloadError(f"{url}: received {got} bytes, expected {size}; the partial file was removed")
    if sha is not None:
        digest = _sha256(part)
        if digest != sha:
            part.unlink()
            raise DownloadError(f"{url}: sha256 {digest} does not match the expected {sha}; refusing the file")
    os.replace(part, dest)


class _Interrupted(Exception):
    pass


def _transfer(url: str, part: Path, token: str | None, show: bool) -> tuple[int | None, str | None]:
    """Append the rest of the file to ``part``; return (total size, sha256) as the server states them."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urllib.request.urlopen(_request(url, token, headers), timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part file is complete (or too long)
            return None, None
        hint = " (private or gated: set HF_TOKEN)" if e.code in (401, 403) else ""
        raise DownloadError(f"{url}: HTTP {e.code}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        raise _Interrupted(getattr(e, "reason", e)) from None
    with response:
        resumed = response.status == 206
        if have and not resumed:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        if resumed:
            m = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
            total = int(m.group(1)) if m else total
        etag = (response.headers.get("X-Linked-Etag") or response.headers.get("ETag") or "").strip('W/"').lower()
        bar = _Progress(part.name[:-len(".part")], total) if show else None
        done = have
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except (OSError, ValueError, http.client.HTTPException) as e:
                        raise _Interrupted(e) from None
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    if bar:
                        bar.update(done)
        finally:
            if bar:
                bar.close()
        if total is not None and done < total:
            raise _Interrupted(f"connection closed after {done} of {total} bytes")
    return total, etag if _SHA256.match(etag) else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class _Progress:
    """A one-line byte counter on stderr."""

    def __init__(self, name: str, total: int | None):
        self.name, self.total, self.last = name, total, 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done != self.total:
            return
        self.last = now
        if self.total:
            filled = int(30 * done / self.total)
            text = f"{self.name}: [{'#' * filled}{'.' * (30 - filled)}] {done / 2**20:.1f}/{self.total / 2**20:.1f} MiB"
        else:
            text = f"{self.name}: {done / 2**20:.1f} MiB"
        sys.stderr.write("\r" + text)
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()

"""Model downloads from a hub (its URL layout served on 127.0.0.1) and from plain URLs:
tag resolution, resuming, verification, the cache listing and ``llamapy pull``."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from llamapy import Model, download_model, list_cached_models
from llamapy.hub.download import DownloadError, RemoteFile, select_model_files
from tests.hub_server import Hub

FILES = ["Demo-7B-Q4_K_M.gguf", "Demo-7B-Q4_0.gguf", "Demo-7B-Q8_0.gguf", "mmproj-Demo-7B-f16.gguf",
         "Demo-7B-F16-00001-of-00002.gguf", "Demo-7B-F16-00002-of-00002.gguf", "README.md"]


@pytest.fixture
def hub(monkeypatch):
    h = Hub().start()
    monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield h
    h.stop()


def _listing() -> list[RemoteFile]:
    return [RemoteFile(p, 1, None) for p in FILES]


@pytest.mark.parametrize("tag,expected", [
    ("", ["Demo-7B-Q4_K_M.gguf"]),
    ("q4", ["Demo-7B-Q4_K_M.gguf"]),
    ("Q4_0", ["Demo-7B-Q4_0.gguf"]),
    ("q8", ["Demo-7B-Q8_0.gguf"]),
    ("f16", ["Demo-7B-F16-00001-of-00002.gguf", "Demo-7B-F16-00002-of-00002.gguf"]),
    ("q5", []),
])
def test_ollama_style_tags_pick_a_model_file_never_a_projector(tag, expected):
    assert [f.path for f in select_model_files(_listing(), tag)] == expected


def test_download_from_the_hub_loads_and_sends_the_token(hub, model_path, tmp_path, monkeypatch):
    hub.add("demo/Tiny-GGUF", "Tiny-Q4_K_M.gguf", model_path)
    hub.add("demo/Tiny-GGUF", "Tiny-Q8_0.gguf", b"GGUF not really")
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    path = download_model(hf_repo="demo/Tiny-GGUF:q4", cache_dir=tmp_path)
    assert path == tmp_path / "demo" / "Tiny-GGUF" / "Tiny-Q4_K_M.gguf"
    assert path.read_bytes() == model_path.read_bytes()
    assert all(auth == "Bearer secret-token" for _, _, auth in hub.requests)
    with Model.from_file(path) as m:
        assert m.n_params > 0
    listed = list_cached_models(tmp_path)
    assert listed == [{"user": "demo", "model": "Tiny-GGUF", "tag": "Q4_K_M", "path": str(path),
                       "size": path.stat().st_size}]
    n = len(hub.requests)
    assert download_model(hf_repo="demo/Tiny-GGUF:q4", cache_dir=tmp_path) == path
    assert not any("/resolve/" in p for p, _, _ in hub.requests[n:]), "a verified file is not fetched again"


def test_an_interrupted_transfer_resumes_where_it_stopped(hub, tmp_path):
    data = os.urandom(3 << 20)
    hub.add("demo/R-GGUF", "R-Q4_K_M.gguf", data, cut_after=1 << 20, cuts_left=1)
    path = download_model(hf_repo="demo/R-GGUF", cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == data
    ranges = [r for p, r, _ in hub.requests if "/resolve/" in p]
    assert ranges == [None, f"bytes={1 << 20}-"]


def test_a_partial_file_is_kept_and_resumed_by_the_next_call(hub, tmp_path):
    data = os.urandom(2 << 20)
    f = hub.add("demo/P-GGUF", "P-Q8_0.gguf", data, cut_after=700_000, cuts_left=10)
    with pytest.raises(DownloadError, match="run the download again to resume"):
        download_model(hf_repo="demo/P-GGUF:q8_0", cache_dir=tmp_path, retries=1, progress=False)
    final = tmp_path / "demo" / "P-GGUF" / "P-Q8_0.gguf"
    part = final.with_name(final.name + ".part")
    assert not final.exists() and part.stat().st_size == 1_400_000
    assert list_cached_models(tmp_path) == [], "a partial file is never listed as a model"
    f.cuts_left = 0
    assert download_model(hf_repo="demo/P-GGUF:q8_0", cache_dir=tmp_path, progress=False) == final
    assert final.read_bytes() == data and not part.exists()
    assert hub.requests[-1][1] == "bytes=1400000-"


def test_a_corrupt_transfer_is_refused_and_removed(hub, tmp_path):
    hub.add("demo/C-GGUF", "C-Q4_K_M.gguf", os.urandom(100_000), corrupt=True)
    with pytest.raises(DownloadError, match="sha256"):
        download_model(hf_repo="demo/C-GGUF", cache_dir=tmp_path, progress=False)
    assert not any((tmp_path / "demo" / "C-GGUF").iterdir())


def test_plain_url_downloads_are_verified_by_the_servers_digest(hub, tmp_path):
    data = os.urandom(50_000)
    hub.add("", "files/custom.gguf", data)
    out = tmp_path / "models" / "custom.gguf"
    assert download_model(url=hub.endpoint + "files/custom.gguf", output_path=out, progress=False) == out
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    hub.add("", "files/bad.gguf", data, corrupt=True)
    with pytest.raises(DownloadError, match="sha256"):
        download_model(url=hub.endpoint + "files/bad.gguf", output_path=tmp_path / "bad.gguf", progress=False)


def test_clear_errors_for_bad_requests(hub, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_model(hf_repo="nobody/nothing", cache_dir=tmp_path)
    hub.add("demo/NoModel", "README.md", b"hello")
    with pytest.raises(DownloadError, match="no GGUF model file"):
        download_model(hf_repo="demo/NoModel:q4", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="not a repository name"):
        download_model(hf_repo="just-a-name", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="either"):
        download_model(cache_dir=tmp_path)


def test_llamapy_pull_shows_progress_and_resumes(hub, tmp_path):
    data = os.urandom(4 << 20)
    hub.add("demo/Cli-GGUF", "Cli-Q4_K_M.gguf", data, cut_after=1 << 20, cuts_left=1)
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint}
    proc = subprocess.run([sys.executable, "-m", "llamapy.cli", "pull", "demo/Cli-GGUF:q4", "--cache-dir",
                           str(tmp_path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "demo" / "Cli-GGUF" / "Cli-Q4_K_M.gguf"
    assert proc.stdout.strip() == str(path) and path.read_bytes() == data
    assert "Cli-Q4_K_M.gguf: [" in proc.stderr and "4.0/4.0 MiB" in proc.stderr
    assert [r for p, r, _ in hub.requests if "/resolve/" in p] == [None, f"bytes={1 << 20}-"]
    bad = subprocess.run([sys.executable, "-m", "llamapy.cli", "pull", "nobody/nothing", "--cache-dir",
                          str(tmp_path)], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "HTTP 404" in bad.stderr

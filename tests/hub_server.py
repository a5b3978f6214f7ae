"""A local stand-in for a model hub on 127.0.0.1, with the hub's URL layout.

``GET /api/models/<user>/<repo>/refs`` and ``.../tree/<commit>?recursive=true`` list a
repository; ``GET /<user>/<repo>/resolve/<commit>/<path>`` serves a file with Range support,
ETag / X-Linked-Etag carrying its sha256. Failures are injected per file: ``cut_after``
closes the connection after that many bytes of the next response(s); ``corrupt`` serves
other bytes than the listing's sha256 describes. Every request is recorded.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    data: bytes
    cut_after: int | None = None  # close the connection after this many bytes ...
    cuts_left: int = 0  # ... on this many more responses
    corrupt: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Hub:
    repos: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # (path, Range, Authorization)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def add(self, repo: str, path: str, data: bytes | Path, **failures) -> HubFile:
        f = HubFile(data if isinstance(data, bytes) else Path(data).read_bytes(), **failures)
        self.repos.setdefault(repo, {})[path] = f
        return f

    def start(self) -> Hub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                hub.requests.append((self.path, self.headers.get("Range"), self.headers.get("Authorization")))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 5:
                    repo = "/".join(parts[2:4])
                    if repo not in hub.repos:
                        return self._send(404, b'{"error": "Repository not found"}')
                    if parts[4] == "refs":
                        return self._json({"branches": [{"name": "main", "ref": "refs/heads/main",
                                                          "targetCommit": COMMIT}]})
                    if parts[4] == "tree":
                        return self._json([{"type": "file", "path": p, "size": len(f.data),
                                            "oid": "0" * 40, "lfs": {"oid": f.sha256, "size": len(f.data)}}
                                           for p, f in hub.repos[repo].items()])
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, path = "/".join(parts[:2]), "/".join(parts[4:])
                    f = hub.repos.get(repo, {}).get(path)
                    if f is None:
                        return self._send(404, b"not found")
                    return self._file(f)
                if parts and "/".join(parts) in hub.repos.get("", {}):  # plain URLs
                    return self._file(hub.repos[""]["/".join(parts)])
                self._send(404, b"not found")

            def _json(self, value) -> None:
                self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

            def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, f: HubFile) -> None:
                data = bytes(b ^ 0xFF for b in f.data[:64]) + f.data[64:] if f.corrupt else f.data
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        return self._send(416, b"")
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{f.sha256}"')
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.end_headers()
                if f.cuts_left > 0 and f.cut_after is not None:
                    f.cuts_left -= 1
                    self.wfile.write(body[:f.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

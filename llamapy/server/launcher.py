"""ServerLauncher: llama.cpp's own ``llama-server`` program as a managed subprocess."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from ..errors import LlamaError
from ..model import check_model_file


class ServerLaunchError(LlamaError):
    """llama-server could not be found, or did not come up."""


def find_server_binary(name: str | os.PathLike = "llama-server") -> Path:
    """A path as given, else the name on PATH, else the program in llamapy's own llama.cpp build."""
    candidate = Path(name).expanduser()
    if candidate.is_file():
        return candidate
    found = shutil.which(str(name))
    if found:
        return Path(found)
    from ..system import build_info

    built = Path(build_info()["llama_cpp"]["build_dir"]) / "bin" / candidate.name
    if built.is_file():
        return built
    raise ServerLaunchError(f"{name} not found (as a path, on PATH or in {built.parent}); build it with "
                            f"`python -c \"from tools.cmake_build import build_server; ...\"` from a llamapy "
                            f"checkout, or pass server_binary=")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerLauncher:
    """Start, watch and stop a server process for one model on ``host:port``.

    ``server_binary`` is llama.cpp's ``llama-server`` (a path or a name, see
    :func:`find_server_binary`), or ``"llamapy"`` for ``llamapy serve`` in a subprocess; both
    take the same options. ``port=0`` picks a free port.
    """

    def __init__(self, model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080,
                 server_binary: str | os.PathLike = "llama-server", *, n_ctx: int | None = None,
                 n_parallel: int | None = None, n_threads: int | None = None, n_gpu_layers: int | None = None,
                 api_key: str | None = None, extra_args: Sequence[str] = (), log_path: str | os.PathLike | None = None):
        self.model_path = check_model_file(model_path)
        self.host, self.port = host, port or free_port(host)
        self.server_binary = server_binary
        self.api_key = api_key
        self.log_path = Path(log_path) if log_path else None
        args = ["-m", str(self.model_path), "--host", host, "--port", str(self.port)]
        for flag, value in (("-c", n_ctx), ("-np", n_parallel), ("-t", n_threads), ("-ngl", n_gpu_layers),
                            ("--api-key", api_key)):
            if value is not None:
                args += [flag, str(value)]
        self.args = args + list(extra_args)
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 120.0) -> ServerLauncher:
        """Start the program and wait until its /health says the model is loaded."""
        if self.is_running():
            return self
        command = self.command()
        name = Path(command[0]).name if self.server_binary != "llamapy" else "llamapy serve"
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._close_log()
                raise ServerLaunchError(f"{name} exited with code {code} while starting"
                                        + (f"; see {self.log_path}" if self.log_path else ""))
            if self.healthy():
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerLaunchError(f"{name} did not become healthy on {self.url} within {timeout:g} s")

    def command(self) -> list[str]:
        """The command line that starts the server."""
        if self.server_binary == "llamapy":
            return [sys.executable, "-m", "llamapy.cli", "serve", *self.args]
        return [str(find_server_binary(self.server_binary)), *self.args]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def healthy(self) -> bool:
        """Whether /health answers 200 (model loaded)."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    def __enter__(self) -> ServerLauncher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

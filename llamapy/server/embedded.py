"""Run the server in this process: ``start_server`` (blocking) and ``EmbeddedServer`` (in a thread)."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import uvicorn

from ..model import check_model_file
from .app import create_app
from .settings import ServerSettings


class EmbeddedServer:
    """uvicorn serving the app for ``settings``; ``run()`` blocks, ``start()`` runs it in a thread."""

    def __init__(self, settings: ServerSettings, log_level: str = "warning"):
        check_model_file(settings.model_path)  # a wrong path fails here, not in the background
        self.settings = settings
        self._load_error: BaseException | None = None
        self.app = create_app(settings, on_load_error=self._failed)
        self.engine = self.app.state.engine
        config = uvicorn.Config(self.app, host=settings.host, port=settings.port, log_level=log_level,
                                timeout_graceful_shutdown=settings.graceful_shutdown_s, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def _failed(self, error: BaseException) -> None:
        self._load_error = error
        self.server.should_exit = True

    def run(self) -> None:
        """Serve until stopped (Ctrl-C, SIGTERM or stop()); a model that fails to load raises here."""
        self.server.run()
        if self._load_error is not None:
            raise self._load_error

    def start(self, timeout: float = 600.0) -> EmbeddedServer:
        """Serve from a background thread; returns once the model is loaded."""
        self._thread = threading.Thread(target=self.server.run, name="llamapy-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.engine.ready:
            if self._load_error is not None:
                self.stop()
                raise self._load_error
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.05)
        while not self.server.started and self._thread.is_alive():
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Graceful shutdown: in-flight requests finish (or are cancelled past the grace period)."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080, *, n_ctx: int = 16384,
                 n_gpu_layers: int | None = None, n_parallel: int = 8, api_key: str | None = None,
                 log_level: str = "info", **settings: Any) -> None:
    """Serve ``model_path`` with OpenAI's API until stopped (blocking; also usable in a thread).

    Other keywords are ServerSettings fields (``max_queue``, ``model_alias``, ...) or generation
    defaults (``temperature``, ``top_k``, ...).
    """
    config = ServerSettings.from_kwargs(model_path, host=host, port=port, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers,
                                        n_parallel=n_parallel, api_key=api_key, **settings)
    EmbeddedServer(config, log_level=log_level).run()

class BackgroundServer(EmbeddedServer):
    """The server in a background thread, set up from keywords: ``start()``, ``is_running()``, ``stop()``.

    Also named ``MongooseServer``: cyllama code starts its background server under that name.
    Other keywords are ServerSettings fields or generation defaults, as for :func:`start_server`.
    """

    def __init__(self, model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080, n_ctx: int = 16384,
                 n_threads: int | None = None, log_level: str = "warning", **settings: Any):
        super().__init__(ServerSettings.from_kwargs(model_path, host=host, port=port, n_ctx=n_ctx, n_threads=n_threads,
                                                    **settings), log_level=log_level)

    def is_running(self) -> bool:
        """Whether the server thread is up and serving."""
        return self._thread is not None and self._thread.is_alive() and bool(self.server.started)


MongooseServer = BackgroundServer

"""The bridge between the event loop and one BatchGenerator running in its own thread.

Every HTTP call submits its requests here; their events come back on an asyncio queue of
the caller's loop. The queue of waiting requests is bounded (past it: Overloaded, a 503),
and a caller that goes away cancels its requests, which frees their slots at the next step.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import LlamaError
from ..generation.batching import BatchEvent, BatchGenerator, BatchRequest
from ..generation.chat_template import ChatTemplate
from ..generation.config import GenerationConfig
from ..integrations.openai_protocol import RequestError
from .metrics import Metrics
from .settings import ServerSettings

log = logging.getLogger("llamapy.server")


class NotReady(LlamaError):
    """The model is still loading (or failed to load)."""


class Overloaded(LlamaError):
    """Every slot is busy and the waiting queue is full."""

    retry_after = 1


@dataclass
class _Track:
    index: int
    submission: Submission
    cancelled: bool = False
    events_after_cancel: int = 0


class Submission:
    """The requests of one HTTP call; ``next()`` gives their events as (index, event)."""

    def __init__(self, engine: Engine, n: int):
        self.engine = engine
        self.queue: asyncio.Queue[tuple[int, BatchEvent]] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.ids: list[int] = []
        self.open = set(range(n))

    async def next(self) -> tuple[int, BatchEvent]:
        index, event = await self.queue.get()
        if event.done:
            self.open.discard(index)
        return index, event

    @property
    def finished(self) -> bool:
        return not self.open

    def cancel(self) -> None:
        """Stop what is still running (a no-op once every request finished)."""
        for index in list(self.open):
            self.engine.cancel(self.ids[index])

    def _deliver(self, index: int, event: BatchEvent) -> None:  # the generator's thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
        except RuntimeError:  # the loop is gone (shutdown): nobody is listening
            pass


class Engine:
    """One model, one BatchGenerator with ``n_parallel`` slots, shared by every request."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.metrics = Metrics()
        self.state = "loading"
        self.error: str | None = None
        self.generator: BatchGenerator | None = None
        self.template: ChatTemplate | None = None
        self.embedder: Any = None  # an Embedder or a Reranker (--embedding-model)
        self.created = int(time.time())
        self._tracks: dict[int, _Track] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()

    # -- lifetime ------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model and start the generator's thread (blocking; run it off the event loop)."""
        s = self.settings
        try:
            offload = {} if s.n_gpu_layers is None else {"n_gpu_layers": s.n_gpu_layers}
            gen = BatchGenerator(s.model_path, n_ctx=s.n_ctx // s.n_parallel, n_seq_max=s.n_parallel,
                                 n_batch=s.n_batch, n_threads=s.n_threads, config=s.defaults, mmproj=s.mmproj,
                                 rpc_servers=s.rpc_servers or None, tensor_split=s.tensor_split,
                                 speculative=s.speculative, draft_model=s.draft_model, n_draft=s.n_draft,
                                 **offload)
            self.template = ChatTemplate.for_model(gen.model, s.chat_template)
            if s.embedding_model is not None:
                self.embedder = _load_embedder(s)
            gen.start()
        except Exception as e:  # reported on /health and by start_server
            self.state, self.error = "error", f"{type(e).__name__}: {e}"
            log.error("could not load %s: %s", s.model_path, self.error)
            raise
        self.generator = gen
        self.state = "ready"
        log.info("serving %s with %d slots of %d tokens", s.model_name, s.n_parallel, gen.n_ctx_seq)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what still runs, wait (at most ``timeout``) for it to end, free the model."""
        gen, self.generator = self.generator, None
        self.state = "stopped"
        if gen is None:
            return
        with self._lock:
            pending = list(self._tracks)
        for rid in pending:
            gen.cancel(rid)
        deadline = time.monotonic() + timeout
        while self._tracks and time.monotonic() < deadline:
            time.sleep(0.01)
        gen.close()
        if self.embedder is not None:
            self.embedder.close()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def n_ctx_seq(self) -> int:
        return self.require_ready().n_ctx_seq

    @property
    def vocab(self) -> Any:
        return self.require_ready().vocab

    def require_ready(self) -> BatchGenerator:
        """The generator; NotReady (a 503) while the model loads or after it failed to."""
        if self.generator is None:
            raise NotReady(self.error or "the model is loading")
        return self.generator

    # -- requests ------------------------------------------------------------------------
    def submit(self, jobs: Sequence[tuple[Any, ...]]) -> Submission:
        """Queue the prompts of one call (in the running event loop): (prompt, config) or
        (prompt, config, media) tuples."""
        gen = self.require_ready()
        s = self.settings
        sub = Submission(self, len(jobs))
        with self._lock:
            if len(self._tracks) + len(jobs) > s.n_parallel + s.max_queue:
                self.metrics.request_rejected()
                raise Overloaded(f"all {s.n_parallel} slots are busy and {s.max_queue} requests are waiting")
            tracks = []
            for index in range(len(jobs)):
                rid = next(self._ids)
                self._tracks[rid] = _Track(index, sub)
                sub.ids.append(rid)
                tracks.append(rid)
        for rid, (prompt, cfg, *media) in zip(tracks, jobs):
            gen.submit(BatchRequest(rid, prompt, config=cfg, on_event=self._on_event,
                                    media=media[0] if media else None))
        return sub

    def cancel(self, rid: int) -> None:
        track = self._tracks.get(rid)
        gen = self.generator
        if track is None or gen is None or track.cancelled:
            return
        track.cancelled = True
        gen.cancel(rid)

    def _on_event(self, event: BatchEvent) -> None:  # the generator's thread
        track = self._tracks.get(event.id)
        if track is None:
            return
        if track.cancelled and event.text:
            track.events_after_cancel += 1
        if event.done:
            with self._lock:
                self._tracks.pop(event.id, None)
            self.metrics.request_done(event.stats, track.cancelled, track.events_after_cancel)
        track.submission._deliver(track.index, event)

    def embedding_model(self) -> Any:
        """The loaded Embedder or Reranker (RequestError when the server has none)."""
        self.require_ready()
        if self.embedder is None:
            raise RequestError("no embedding model is loaded: start the server with --embedding-model", "model")
        return self.embedder

    # -- state for /metrics and /health --------------------------------------------------
    def gauges(self) -> dict[str, tuple[float, str]]:
        gen = self.generator
        busy = gen.n_running if gen is not None else 0
        waiting = len(self._tracks) - busy
        return {
            "slots_total": (self.settings.n_parallel, "generation slots (--parallel)"),
            "slots_busy": (busy, "slots generating or reading a prompt"),
            "queue_depth": (max(0, waiting), "requests waiting for a slot"),
            "requests_in_flight": (len(self._tracks), "requests queued or running"),
            "ready": (1 if self.ready else 0, "1 once the model is loaded"),
        }


def _load_embedder(settings: ServerSettings) -> Any:
    """An Embedder for the embedding model, or a Reranker when it is one (rank pooling)."""
    from ..embed import Embedder, EmbeddingError, Reranker

    offload = {} if settings.n_gpu_layers is None else {"n_gpu_layers": settings.n_gpu_layers}
    try:
        return Embedder(settings.embedding_model, n_threads=settings.n_threads, **offload)
    except EmbeddingError as not_embedder:
        try:
            return Reranker(settings.embedding_model, n_threads=settings.n_threads, **offload)
        except EmbeddingError:
            raise not_embedder from None

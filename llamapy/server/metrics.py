"""The server's counters and their Prometheus text exposition."""
from __future__ import annotations

import collections
import threading
import time
from typing import Mapping

from ..generation.config import GenerationStats

RATE_WINDOW_S = 10.0


class Metrics:
    """Counters updated from the generator's thread and the event loop (under one lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.http: collections.Counter[tuple[str, int]] = collections.Counter()
        self.prompt_tokens = 0
        self.prompt_tokens_cached = 0
        self.generated_tokens = 0
        self.finished = 0
        self.cancelled = 0
        self.rejected = 0
        self.tokens_after_cancel_max = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()

    def http_response(self, route: str, status: int) -> None:
        with self._lock:
            self.http[(route, status)] += 1

    def request_done(self, stats: GenerationStats | None, cancelled: bool, tokens_after_cancel: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.finished += 1
            if cancelled:
                self.cancelled += 1
                self.tokens_after_cancel_max = max(self.tokens_after_cancel_max, tokens_after_cancel)
            if stats is not None:
                self.prompt_tokens += stats.prompt_tokens
                self.prompt_tokens_cached += stats.prompt_tokens - stats.prompt_tokens_decoded
                self.generated_tokens += stats.completion_tokens
                self._recent.append((now, stats.completion_tokens))
            self._trim(now)

    def request_rejected(self) -> None:
        with self._lock:
            self.rejected += 1

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
            self._recent.popleft()

    def tokens_per_second(self) -> float:
        """Generated tokens per second over the last RATE_WINDOW_S seconds (by finished requests)."""
        with self._lock:
            self._trim(time.monotonic())
            return sum(n for _, n in self._recent) / RATE_WINDOW_S

    def render(self, gauges: Mapping[str, tuple[float, str]]) -> str:
        """Prometheus text format (version 0.0.4)."""
        tps = self.tokens_per_second()
        with self._lock:
            counters = {
                "prompt_tokens_total": (self.prompt_tokens, "prompt tokens of finished requests"),
                "prompt_tokens_cached_total": (self.prompt_tokens_cached, "prompt tokens reused from the KV cache"),
                "generated_tokens_total": (self.generated_tokens, "generated tokens"),
                "requests_finished_total": (self.finished, "generation requests finished (any reason)"),
                "requests_cancelled_total": (self.cancelled, "requests cancelled (client gone or shutdown)"),
                "requests_rejected_total": (self.rejected, "requests refused with 503 (queue full)"),
            }
            http = dict(self.http)
            after_cancel = self.tokens_after_cancel_max
        lines = ["# HELP llamapy_http_requests_total HTTP requests by route and status",
                 "# TYPE llamapy_http_requests_total counter"]
        lines += [f'llamapy_http_requests_total{{route="{route}",status="{status}"}} {n}'
                  for (route, status), n in sorted(http.items())]
        for name, (value, help_) in counters.items():
            lines += [f"# HELP llamapy_{name} {help_}", f"# TYPE llamapy_{name} counter", f"llamapy_{name} {value}"]
        all_gauges = {**gauges,
                      "generated_tokens_per_second": (tps, f"generation speed over the last {RATE_WINDOW_S:g} s"),
                      "tokens_after_cancel_max": (after_cancel, "most tokens a request produced after its cancel")}
        for name, (value, help_) in all_gauges.items():
            lines += [f"# HELP llamapy_{name} {help_}", f"# TYPE llamapy_{name} gauge", f"llamapy_{name} {value:g}"]
        return "\n".join(lines) + "\n"

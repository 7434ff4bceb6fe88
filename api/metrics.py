"""Prometheus metrics, written in the text exposition format by hand (no extra dependency).

Request counts and latencies per route template, events appended by this process, and each
projection's position and lag (read from the tracking table at scrape time).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from projections.engine import ProjectionStatus

BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Thread-safe counters of one app instance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency_buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_count: dict[tuple[str, str], int] = defaultdict(int)
        self.events_appended = 0
        self.commands: dict[tuple[str, str], int] = defaultdict(int)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            key = (method, route)
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.latency_buckets[key][i] += 1
            self.latency_sum[key] += seconds
            self.latency_count[key] += 1

    def observe_events(self, count: int) -> None:
        with self._lock:
            self.events_appended += count

    def render(self, head: int, projections: Iterable[ProjectionStatus]) -> str:
        lines: list[str] = []
        with self._lock:
            lines += ["# HELP salesplan_http_requests_total HTTP requests by method, route template and status.",
                      "# TYPE salesplan_http_requests_total counter"]
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(f'salesplan_http_requests_total{{method="{method}",route="{_label(route)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP salesplan_http_request_duration_seconds HTTP request latency.",
                      "# TYPE salesplan_http_request_duration_seconds histogram"]
            for (method, route), buckets in sorted(self.latency_buckets.items()):
                labels = f'method="{method}",route="{_label(route)}"'
                for bound, n in zip(BUCKETS, buckets, strict=True):
                    lines.append(f'salesplan_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {n}')
                count = self.latency_count[(method, route)]
                lines.append(f'salesplan_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {count}')
                lines.append(f"salesplan_http_request_duration_seconds_sum{{{labels}}} "
                             f"{self.latency_sum[(method, route)]:.6f}")
                lines.append(f"salesplan_http_request_duration_seconds_count{{{labels}}} {count}")
            lines += ["# HELP salesplan_events_appended_total Events this process appended to the log.",
                      "# TYPE salesplan_events_appended_total counter",
                      f"salesplan_events_appended_total {self.events_appended}"]
        lines += ["# HELP salesplan_event_log_head_position The last position of the event log.",
                  "# TYPE salesplan_event_log_head_position gauge",
                  f"salesplan_event_log_head_position {head}"]
        statuses = list(projections)
        for metric, kind, help_text, value in (
            ("salesplan_projection_position", "gauge", "The last log position a projection has applied.",
             lambda s: s.position),
            ("salesplan_projection_lag_events", "gauge", "Events a projection has yet to apply.",
             lambda s: s.lag_events),
            ("salesplan_projection_lag_seconds", "gauge", "Age of the oldest event a projection has yet to apply.",
             lambda s: f"{s.lag_seconds:.3f}"),
            ("salesplan_projection_failed", "gauge", "1 when a projection stopped on a poison event.",
             lambda s: int(s.status == "failed")),
        ):
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
            lines += [f'{metric}{{projection="{_label(s.name)}"}} {value(s)}' for s in statuses]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template (never the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope["method"], template, status, time.perf_counter() - started)

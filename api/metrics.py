"""Prometheus metrics (``prometheus-client``), one registry per process role.

The API (``/metrics``) and the ``salesplan project`` worker (its own port) expose the same
families: process and Python runtime, ``salesplan_build_info``, projection throughput, batch
duration and errors, each projection's position and lag, the webhook outbox, alert
evaluations and the database pool. The API adds HTTP requests by route template — 401, 403
and 404 answers included, under the template of the route they were aimed at; a path that
matches no route is ``unmatched``, so labels stay bounded.

Figures that live in the database (lag, outbox) are read when scraped, by ``_StateCollector``.
"""

from __future__ import annotations

import logging
import platform
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.routing import compile_path

from api.build import version
from domain.application import SalesPlanning
from domain.persistence import Database
from projections.engine import PoisonEvent, Projection, ProjectionEngine

log = logging.getLogger("salesplan.metrics")

BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED: Final = "unmatched"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Metrics:
    """The metric families of one process; ``bind`` tells it the engine whose state it reports."""

    def __init__(self, *, http: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        if GC_COLLECTOR is not None:  # absent on interpreters without gc stats
            GCCollector(registry=r)
        Info("salesplan_build", "The running salesplan build.", registry=r).info(
            {"version": version(), "python": platform.python_version()})
        self.http = http
        if http:
            self.requests = Counter("salesplan_http_requests", "HTTP requests by method, route template and status.",
                                    ["method", "route", "status"], registry=r)
            self.latency = Histogram("salesplan_http_request_duration_seconds",
                                     "HTTP request latency by method and route template (refusals included).",
                                     ["method", "route"], buckets=BUCKETS, registry=r)
        self.events_appended = Counter("salesplan_events_appended", "Events this process appended to the log.",
                                       registry=r)
        self.projected = Counter("salesplan_projection_events",
                                 "Log positions a projection processed in this process (applied or not of interest).",
                                 ["projection"], registry=r)
        self.batch_seconds = Histogram("salesplan_projection_batch_duration_seconds",
                                       "Time to fold and commit one projection batch.", ["projection"],
                                       buckets=BUCKETS, registry=r)
        self.projection_errors = Counter("salesplan_projection_errors",
                                         "Projection batches that failed: poison (the projection stopped) or database "
                                         "(retried).", ["projection", "kind"], registry=r)
        self.alert_runs = Histogram("salesplan_alert_evaluation_duration_seconds",
                                    "Time to evaluate the deviation alerts once.", buckets=BUCKETS, registry=r)
        self.alert_run_errors = Counter("salesplan_alert_evaluation_errors", "Alert evaluations that failed.",
                                        registry=r)
        self.alerts_open = Gauge("salesplan_alerts_open", "Alerts open after the last evaluation in this process.",
                                 registry=r)
        self.webhook_attempts = Counter("salesplan_webhook_attempts", "Webhook delivery attempts by outcome.",
                                        ["outcome"], registry=r)
        self._state = _StateCollector()
        r.register(self._state)

    def bind(self, engine: ProjectionEngine) -> None:
        """Report this engine's projections, its database's pool and webhook outbox."""
        self._state.engine = engine

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_events(self, count: int) -> None:
        self.events_appended.inc(count)

    def render(self) -> bytes:
        """The exposition in the Prometheus text format."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Figures read from the database at scrape time; a database that does not answer is ``database_up 0``."""

    def __init__(self) -> None:
        self.engine: ProjectionEngine | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # its families depend on the projections: nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        engine = self.engine
        if engine is None:
            return []
        up = GaugeMetricFamily("salesplan_database_up", "1 when the database answered this scrape.")
        families: list[Metric] = [*_pool(engine.database)]
        try:
            families += _projections(engine)
            families += _outbox(engine.database)
        except Exception as error:  # a scrape never fails: it says the database is down instead
            log.warning("metrics: the database did not answer: %s", type(error).__name__)
            up.add_metric([], 0)
            return [up, *_pool(engine.database)]
        up.add_metric([], 1)
        return [up, *families]


def _projections(engine: ProjectionEngine) -> list[Metric]:
    statuses = engine.status()
    head = GaugeMetricFamily("salesplan_event_log_head_position", "The last position of the event log.")
    head.add_metric([], statuses[0].head if statuses else engine.head())
    position = GaugeMetricFamily("salesplan_projection_position", "The last log position a projection has applied.",
                                 labels=["projection"])
    lag_events = GaugeMetricFamily("salesplan_projection_lag_events", "Events a projection has yet to apply.",
                                   labels=["projection"])
    lag_seconds = GaugeMetricFamily("salesplan_projection_lag_seconds",
                                    "Age of the oldest event a projection has yet to apply.", labels=["projection"])
    failed = GaugeMetricFamily("salesplan_projection_failed", "1 when a projection stopped on a poison event.",
                               labels=["projection"])
    for s in statuses:
        position.add_metric([s.name], s.position)
        lag_events.add_metric([s.name], s.lag_events)
        lag_seconds.add_metric([s.name], s.lag_seconds)
        failed.add_metric([s.name], int(s.status == "failed"))
    return [head, position, lag_events, lag_seconds, failed]


def _outbox(database: Database) -> list[Metric]:
    from projections.processes import webhooks

    with database.engine.connect() as conn:
        stats = webhooks.outbox_stats(conn)
    pending = GaugeMetricFamily("salesplan_webhook_outbox_pending", "Webhook deliveries not yet delivered.")
    pending.add_metric([], stats.pending)
    failing = GaugeMetricFamily("salesplan_webhook_outbox_failing",
                                "Undelivered webhook deliveries whose last attempt failed (waiting for a retry).")
    failing.add_metric([], stats.failing)
    oldest = GaugeMetricFamily("salesplan_webhook_outbox_oldest_pending_seconds",
                               "Age of the oldest undelivered webhook delivery (0 when none).")
    age = (datetime.now(UTC) - stats.oldest_pending_at).total_seconds() if stats.oldest_pending_at else 0.0
    oldest.add_metric([], max(age, 0.0))
    return [pending, failing, oldest]


def _pool(database: Database) -> Iterator[Metric]:
    pool: Any = database.engine.pool
    figures = (("size", "Connections the pool keeps open.", "size"),
               ("in_use", "Connections checked out of the pool now.", "checkedout"),
               ("overflow", "Connections open beyond the pool's size now (negative: room left in the pool).",
                "overflow"))
    for name, help_text, method in figures:
        if callable(getattr(pool, method, None)):
            family = GaugeMetricFamily(f"salesplan_db_pool_{name}", help_text)
            family.add_metric([], getattr(pool, method)())
            yield family


class MeasuredEngine(ProjectionEngine):
    """The projection engine, counting what each batch did and how long it took."""

    def __init__(self, app: SalesPlanning, projections: Iterable[Projection], batch_size: int, metrics: Metrics
                 ) -> None:
        super().__init__(app, projections, batch_size=batch_size)
        self.metrics = metrics
        metrics.bind(self)

    def run_once(self, name: str, tracking_name: str | None = None, projection: Projection | None = None,
                 limit: int | None = None) -> int:
        label = tracking_name or name
        started = time.perf_counter()
        try:
            advanced = super().run_once(name, tracking_name, projection, limit)
        except PoisonEvent:
            self.metrics.projection_errors.labels(label, "poison").inc()
            raise
        except sa.exc.OperationalError:
            self.metrics.projection_errors.labels(label, "database").inc()
            raise
        if advanced:
            self.metrics.projected.labels(label).inc(advanced)
            self.metrics.batch_seconds.labels(label).observe(time.perf_counter() - started)
        return advanced

    # Live processing reads each batch once for every projection (run_together): the same counts.
    def _batch_done(self, name: str, advanced: int, seconds: float) -> None:
        if advanced:
            self.metrics.projected.labels(name).inc(advanced)
            self.metrics.batch_seconds.labels(name).observe(seconds)

    def _batch_failed(self, name: str, kind: str) -> None:
        self.metrics.projection_errors.labels(name, kind).inc()


Template = tuple["re.Pattern[str]", str, frozenset[str]]


def route_templates(routes: Iterable[Any]) -> list[Template]:
    """Every route's path pattern, template and methods, included routers' routes too."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included-router contexts: the routes are flat
        pairs = [(getattr(r, "path", None), getattr(r, "methods", None)) for r in routes]
    else:
        pairs = [(c.path, getattr(c.original_route, "methods", None)) for c in iter_route_contexts(list(routes))]
    return [(compile_path(path)[0], path, frozenset(methods or ())) for path, methods in pairs if isinstance(path, str)]


def route_template(scope: Scope, templates: Iterable[Template]) -> str:
    """The template of the route a request was aimed at, even when it was refused before routing (401)."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    matched = [(template, methods) for regex, template, methods in templates if regex.match(scope["path"])]
    for template, methods in matched:
        if scope["method"] in methods:
            return template
    return matched[0][0] if matched else UNMATCHED  # the path matched, the method did not (405)


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template (never the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._templates: list[Template] | None = None  # built at the first request: every route is there then

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
            if self._templates is None:
                self._templates = route_templates(getattr(scope.get("app"), "routes", ()))
            self.metrics.observe_request(scope["method"], route_template(scope, self._templates), status,
                                         time.perf_counter() - started)

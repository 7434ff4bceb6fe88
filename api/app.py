"""The HTTP API: ``create_app(settings)`` builds a FastAPI app; nothing connects until its lifespan starts.

The lifespan opens the database, builds the application and the projection engine, sets up the
projections' tables and — with ``inline_projections`` (the embedded default) — keeps them
caught up in a daemon thread, woken after every command so that reads lag little.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api import errors, openapi
from api.auth import AuthMiddleware, Message, Receive, Scope, Send
from api.deps import CountingPlanning, Services
from api.metrics import Metrics, MetricsMiddleware
from api.routes import (
    analytics,
    catalogue,
    collections,
    deals,
    events,
    health,
    history,
    organisation,
    pipeline,
    plans,
    reads,
    retrospective,
    tasks,
)
from api.settings import Settings
from api.tokens import ensure_table
from domain.persistence import open_database
from projections.engine import ProjectionEngine
from projections.processes import alerts
from projections.registry import all_projections

log = logging.getLogger("salesplan.api")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413, whether announced (Content-Length) or streamed."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        too_large = errors.problem_response(413, "request.too_large", f"the body exceeds {self.max_bytes} bytes",
                                            instance=scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await too_large(scope, receive, send)
            return
        # Buffer the (bounded) body so that a lying or absent Content-Length cannot get past the limit.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _start(settings: Settings, metrics: Metrics) -> Services:
    database = open_database(settings.database_url, lock_timeout_ms=settings.lock_timeout_ms)
    ensure_table(database)
    alerts.setup(database)  # the alert tables belong to no projection: a rebuild leaves them alone
    planning = CountingPlanning(database)
    engine = ProjectionEngine(planning, all_projections(), batch_size=settings.projection_batch_size)
    engine.setup()
    services = Services(settings, database, planning, engine, metrics)
    if settings.inline_projections:
        services.worker = threading.Thread(
            target=engine.run_forever, args=(services.stop,),
            kwargs={"poll_seconds": settings.projection_poll_seconds,
                    "on_error": lambda error: log.error("projection stopped: %s", error)},
            name="salesplan-projections", daemon=True,
        )
        services.worker.start()
    return services


def _stop(services: Services) -> None:
    services.stop.set()
    services.engine.wake.set()
    if services.worker is not None:
        services.worker.join(timeout=30)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API on ``settings`` (default: from the SALESPLAN_ environment)."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.insecure_no_auth:
            log.warning("!" * 78)
            log.warning("SALESPLAN_INSECURE_NO_AUTH is on: requests WITHOUT a token act as ADMIN.")
            log.warning("Development only. Every response carries the header X-Salesplan-Insecure: no-auth.")
            log.warning("!" * 78)
        app.state.services = _start(settings, metrics)
        try:
            yield
        finally:
            _stop(app.state.services)

    app = FastAPI(
        title="salesplan",
        version="0.1.0",
        summary="Event-sourced sales plans: targets, tasks and deals as immutable events.",
        description="Commands answer with the entity's id, its new version (also the `ETag`) and the log position "
                    "of its events; pass the position as `wait_for_position` to read your own writes. Changes "
                    "need `If-Match`; every POST takes an `Idempotency-Key`. Errors are RFC 9457 problems.",
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    # pipeline before tasks: GET /tasks/summary must not be taken for a task id; collections before organisation:
    # GET /units/tree must not be taken for a unit id.
    for router in (collections.router, organisation.router, catalogue.router, plans.router, pipeline.router,
                   tasks.router, deals.router, reads.router, history.router, retrospective.router, analytics.router,
                   events.router, health.router):
        app.include_router(router)
    errors.install(app)
    # Outermost first: metrics see every answer, oversize bodies never reach authentication.
    app.add_middleware(AuthMiddleware, insecure_no_auth=settings.insecure_no_auth)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.build(app)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    return app

"""The HTTP API: ``create_app(settings)`` builds a FastAPI app; nothing connects until its lifespan starts.

The lifespan opens the database, builds the application and the projection engine, sets up the
projections' tables and — with ``inline_projections`` (the embedded default) — keeps them
caught up in a daemon thread, woken after every command so that reads lag little, and runs the
alert evaluation and webhook deliveries in another (``api.processes``, the schedule
``salesplan project`` keeps too).

``/docs`` and ``/redoc`` load their scripts and styles from the app itself (the assets the
``fastapi-offline`` package ships), so they work without internet access. Cross-origin access
is off unless ``cors_allowed_origins`` names origins.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Match, Route

from api import errors, openapi
from api.auth import AuthMiddleware, Directory, Message, Receive, Scope, Send, VerifiedTokens
from api.build import version
from api.deps import POSITION_HEADER, CountingPlanning, Services
from api.metrics import MeasuredEngine, Metrics, MetricsMiddleware
from api.processes import run_processes
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
from projections.processes import alerts
from projections.registry import all_projections

log = logging.getLogger("salesplan.api")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

DOCS_ASSETS: Final = "/docs/assets"
_ASSETS_DIR: Final = Path(fastapi_offline.__file__).parent / "static"
_ASSET_TYPES: Final = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
                       "swagger-ui.css": "text/css; charset=utf-8",
                       "redoc.standalone.js": "text/javascript; charset=utf-8", "favicon.png": "image/png"}
CORS_EXPOSED: Final = ("ETag", "Location", POSITION_HEADER, "Retry-After")
CORS_HEADERS: Final = ("Authorization", "Content-Type", "If-Match", "Idempotency-Key")


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


class DocsAssets:
    """Serves the scripts, styles and icon of ``/docs`` and ``/redoc`` (no token: the pages are public too)."""

    def __init__(self, app: Any, prefix: str = DOCS_ASSETS) -> None:
        self.app = app
        self.prefix = prefix + "/"
        self.route = Route(prefix + "/{file}", self._serve, methods=["GET", "HEAD"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            match, child = self.route.matches(scope)
            if match != Match.NONE:
                scope.update(child)
                scope["route"] = self.route  # the metrics label it with the template
                await self.route.handle(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, request: Request) -> Response:
        name = request.path_params["file"]
        if name not in _ASSET_TYPES:
            return errors.problem_response(404, "docs.asset_not_found", f"no documentation asset {name!r}",
                                           instance=request.url.path)
        return FileResponse(_ASSETS_DIR / name, media_type=_ASSET_TYPES[name],
                            headers={"Cache-Control": "public, max-age=86400"})


def _docs_routes(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, every asset from DOCS_ASSETS, nothing from another host."""
    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{DOCS_ASSETS}/{name}"

    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} – API docs",
            swagger_js_url=asset(request, "swagger-ui-bundle.js"), swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"), oauth2_redirect_url=f"{root}{oauth2_redirect}",
            # The online validator badge would call validator.swagger.io: off, nothing leaves the machine.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} – API reference",
                              redoc_js_url=asset(request, "redoc.standalone.js"),
                              redoc_favicon_url=asset(request, "favicon.png"), with_google_fonts=False)


def _start(settings: Settings, metrics: Metrics) -> Services:
    database = open_database(settings.database_url, lock_timeout_ms=settings.lock_timeout_ms)
    ensure_table(database)
    alerts.setup(database)  # the alert tables belong to no projection: a rebuild leaves them alone
    planning = CountingPlanning(database)
    planning.directory = Directory(planning, settings.directory_max_age_seconds)
    engine = MeasuredEngine(planning, all_projections(), settings.projection_batch_size, metrics)
    engine.setup()
    services = Services(settings, database, planning, engine, metrics, planning.directory,
                        VerifiedTokens(settings.directory_max_age_seconds))
    if settings.inline_projections:
        services.worker = threading.Thread(
            target=engine.run_forever, args=(services.stop,),
            kwargs={"poll_seconds": settings.projection_poll_seconds,
                    "on_error": lambda error: log.error("projection stopped: %s", error)},
            name="salesplan-projections", daemon=True,
        )
        services.worker.start()
    return services


def _start_processes(services: Services) -> threading.Thread | None:
    """Alerts and webhooks run where the projections do: inline here, or in ``salesplan project``."""
    if not services.settings.inline_projections:
        return None
    thread = threading.Thread(target=run_processes, args=(services.engine, services.settings, services.stop),
                              kwargs={"metrics": services.metrics}, name="salesplan-processes", daemon=True)
    thread.start()
    return thread


def _stop(services: Services, *threads: threading.Thread | None) -> None:
    services.stop.set()
    services.engine.wake.set()
    for thread in (services.worker, *threads):
        if thread is not None:
            thread.join(timeout=30)


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
        processes = _start_processes(app.state.services)
        try:
            yield
        finally:
            _stop(app.state.services, processes)

    app = FastAPI(
        title="salesplan",
        version=version(),
        summary="Event-sourced sales plans: targets, tasks and deals as immutable events.",
        description="Commands answer with the entity's id, its new version (also the `ETag`) and the log position "
                    "of its events; pass the position as `wait_for_position` to read your own writes. Changes "
                    "need `If-Match`; every POST takes an `Idempotency-Key`. Errors are RFC 9457 problems.",
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
        docs_url=None,  # served by _docs_routes, with local assets
        redoc_url=None,
    )
    # pipeline before tasks: GET /tasks/summary must not be taken for a task id; collections before organisation:
    # GET /units/tree must not be taken for a unit id.
    for router in (collections.router, organisation.router, catalogue.router, plans.router, pipeline.router,
                   tasks.router, deals.router, reads.router, history.router, retrospective.router, analytics.router,
                   events.router, health.router):
        app.include_router(router)
    _docs_routes(app)
    errors.install(app)
    # Added innermost first. From the outside in: metrics see every answer; CORS answers preflights
    # and marks every answer (401s too); oversize bodies never reach authentication; the docs'
    # assets need no token.
    app.add_middleware(AuthMiddleware, insecure_no_auth=settings.insecure_no_auth)
    app.add_middleware(DocsAssets)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allowed_origins,
                           allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=list(CORS_HEADERS), expose_headers=list(CORS_EXPOSED), max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.build(app)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    return app

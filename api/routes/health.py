"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from api import schemas as s
from api.deps import GuardDep, Services, ServicesDep
from api.errors import PROBLEM_RESPONSES
from api.metrics import CONTENT_TYPE
from api.redaction import redact
from projections import bi

router = APIRouter(tags=["operations"])

_NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": s.ReadyOut, "description": "Not ready"}}


def projection_statuses(services: Services) -> list[s.ProjectionStatusOut]:
    """Each projection's status, with the failure of its last rebuild if it failed."""
    with services.database.engine.connect() as conn:
        failures = bi.rebuild_failures(conn)
    return [s.ProjectionStatusOut.model_validate(st, from_attributes=True).model_copy(update={
        "last_rebuild_failure": None if st.name not in failures else s.RebuildFailureOut.model_validate(
            failures[st.name], from_attributes=True)}) for st in services.engine.status()]


@router.get("/healthz")
def check_health() -> s.HealthOut:
    """The process is up (no database access)."""
    return s.HealthOut(status="ok")


@router.get("/readyz", response_model=s.ReadyOut, responses=_NOT_READY)
def check_readiness(services: ServicesDep) -> Any:
    """Ready when the database answers and no projection has stopped on a poison event; shows each lag.

    A failed rebuild is shown (``last_rebuild_failure``) but leaves the service ready: it was rolled
    back and the live tables answer as before.
    """
    try:
        with services.database.engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        statuses = projection_statuses(services)
    except (sa.exc.SQLAlchemyError, StoreOperationalError) as error:
        body = s.ReadyOut(status="unavailable", database=redact(str(error).splitlines()[0])[:200], projections=[])
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    failed = any(st.status == "failed" for st in statuses)
    body = s.ReadyOut(status="degraded" if failed else "ready", database="ok", projections=statuses)
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if failed else 200)


@router.get(
    "/metrics", response_class=PlainTextResponse, responses={
        **PROBLEM_RESPONSES, 200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics"},
    },
)
def get_metrics(services: ServicesDep, guard: GuardDep) -> Response:
    """Prometheus text format: runtime, requests, projections (throughput, batches, errors, lag), webhooks, pool."""
    guard.reporting()
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)

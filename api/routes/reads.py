"""Projection reads: progress on both clocks, the projections' own status, and who am I."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final
from uuid import UUID

from fastapi import APIRouter, Query, Response

from api import schemas as s
from api.deps import CutDep, GuardDep, PrincipalDep, ServicesDep, WaitForPosition, reading, stamp
from api.errors import PROBLEM_RESPONSES
from api.openapi import POSITIONED
from api.routes.health import projection_statuses
from projections.queries.progress import ProgressFilter, ProgressReport, progress

router = APIRouter(tags=["reads"], responses=PROBLEM_RESPONSES)

PROGRESS: Final = ("progress",)


@router.get("/progress", responses=POSITIONED)
def get_progress(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    plan_id: UUID | None = None, unit_id: UUID | None = None, member_id: UUID | None = None,
    period: Annotated[s.PeriodKey | None, Query()] = None, metric: s.Metric | None = None,
) -> ProgressReport:
    """Where every target stands against plan and pace — now, as of a time, as known at a time."""
    unit_id = guard.own_unit(unit_id)
    with reading(services, PROGRESS, cut_query) as (conn, cut):
        report = progress(
            conn, cut=cut, now=datetime.now(UTC), config=services.measure_config(),
            filters=ProgressFilter(plan_id=plan_id, unit_id=unit_id, member_id=member_id, period=period, metric=metric),
        )
    stamp(response, report.position)
    return report


@router.get("/projections")
def get_projections(services: ServicesDep, guard: GuardDep, wait_for_position: WaitForPosition = None
                    ) -> s.ProjectionsOut:
    """Each projection's position, lag and health (a poison event shows here with its position)."""
    services.wait_for(wait_for_position)
    statuses = projection_statuses(services)
    head = statuses[0].head if statuses else services.engine.head()
    return s.ProjectionsOut(head=head, projections=statuses)


@router.get("/me")
def get_me(principal: PrincipalDep) -> s.MeOut:
    """The caller's role and member, as their token says."""
    return s.MeOut(role=principal.role, member_id=principal.member_id, token_id=principal.token_id,
                   label=principal.label)

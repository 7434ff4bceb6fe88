"""How the plan moved and who moved it: the audit history and the plan versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Response

from api import pagination
from api import schemas as s
from api.deps import CutDep, CutQuery, GuardDep, KnownAt, KnownAtPosition, ServicesDep, WaitForPosition, reading, stamp
from api.errors import PROBLEM_RESPONSES, ApiProblem
from api.openapi import POSITIONED
from api.pagination import CursorToken, Limit, parse_int
from domain.plan import Plan
from projections.queries.audit import audit_history
from projections.queries.versions import (
    ActualsComparison,
    VersionComparison,
    VersionNotFound,
    compare_versions,
    compare_with_actuals,
    list_versions,
    version_tree,
)

router = APIRouter(tags=["history"], responses={**PROBLEM_RESPONSES, **POSITIONED})

AUDIT: Final = ("audit",)
VERSIONS: Final = ("plan_version",)
VERSIONS_AND_PROGRESS: Final = ("plan_version", "progress")

AuditEntity = Literal["unit", "member", "product", "account", "plan", "target", "task", "deal", "activity"]
Version = Annotated[int, Query(ge=0, le=1_000_000)]


def _not_found(error: VersionNotFound) -> ApiProblem:
    return ApiProblem(404, "plan_version.not_found", str(error), plan_id=str(error.plan_id), version=error.version)


@router.get("/audit", dependencies=[Depends(pagination.no_after)])
def list_audit_changes(
    services: ServicesDep, guard: GuardDep, response: Response,
    entity: AuditEntity | None = None, entity_id: UUID | None = None,
    actor: Annotated[s.Name | None, Query()] = None, plan_id: UUID | None = None,
    recorded_from: Annotated[s.Instant | None, Query()] = None, recorded_to: Annotated[s.Instant | None, Query()] = None,
    effective_from: Annotated[s.Instant | None, Query()] = None,
    effective_to: Annotated[s.Instant | None, Query()] = None,
    limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
    wait_for_position: WaitForPosition = None,
) -> s.AuditOut:
    """Who changed what, when and why: every change, filtered, in log order; time ranges are [from, to)."""
    guard.auditor()
    filters = {"entity": entity, "entity_id": entity_id, "actor": actor, "plan_id": plan_id,
               "recorded_from": recorded_from, "recorded_to": recorded_to, "effective_from": effective_from,
               "effective_to": effective_to}

    def fetch(conn: Any, cut: Any, after: tuple[Any, ...] | None) -> list[Any]:
        # Rows are only appended at higher positions: a page never changes, whatever the position.
        found = audit_history(conn, entity=entity, entity_id=entity_id, actor=actor, plan_id=plan_id,
                              recorded_from=recorded_from, recorded_to=recorded_to, effective_from=effective_from,
                              effective_to=effective_to, after=None if after is None else (after[0], after[1]),
                              limit=limit)
        more = [] if found.next_cursor is None else [None]  # the query says whether another page follows
        return [*found.rows, *more]

    page, cut = pagination.read_page(services, AUDIT, CutQuery(wait_for_position=wait_for_position),
                                     listing="audit", filters=filters, token=cursor, parsers=(parse_int, parse_int),
                                     limit=limit, fetch=fetch, key=lambda row: (row.position, row.seq))
    stamp(response, cut.position)
    return s.AuditOut(position=cut.position, next_cursor=page.next_cursor,
                      rows=[s.AuditRowOut.model_validate(r, from_attributes=True) for r in page.rows])


@router.get("/plans/{plan_id}/versions")
def get_plan_versions(
    plan_id: UUID, services: ServicesDep, guard: GuardDep, response: Response, known_at: KnownAt = None,
    known_at_position: KnownAtPosition = None, wait_for_position: WaitForPosition = None,
) -> s.PlanVersionsOut:
    """The plan's published versions, oldest first (as known at a time or position, if given)."""
    guard.planning.get(Plan, plan_id)
    query = CutQuery(known_at=known_at, known_at_position=known_at_position, wait_for_position=wait_for_position)
    with reading(services, VERSIONS, query) as (conn, cut):
        versions = list_versions(conn, plan_id, position=cut.position)
    stamp(response, cut.position)
    return s.PlanVersionsOut(position=cut.position,
                             versions=[s.PlanVersionOut.model_validate(v, from_attributes=True) for v in versions])


@router.get("/plans/{plan_id}/versions/{version}")
def get_plan_version(
    plan_id: UUID, version: Annotated[int, Path(ge=1, le=1_000_000)], services: ServicesDep, guard: GuardDep,
    response: Response, wait_for_position: WaitForPosition = None,
) -> s.VersionTreeOut:
    """The target tree frozen when this version was published."""
    guard.planning.get(Plan, plan_id)
    with reading(services, VERSIONS, CutQuery(wait_for_position=wait_for_position)) as (conn, cut):
        try:
            tree = version_tree(conn, plan_id, version, position=cut.position)
        except VersionNotFound as error:
            raise _not_found(error) from None
    stamp(response, cut.position)
    return s.VersionTreeOut(position=cut.position,
                            version=s.PlanVersionOut.model_validate(tree.version, from_attributes=True),
                            targets=[s.VersionTargetOut.model_validate(t, from_attributes=True) for t in tree.targets])


@router.get("/plans/{plan_id}/comparison")
def compare_plan_versions(
    plan_id: UUID, services: ServicesDep, guard: GuardDep, response: Response, from_version: Version,
    to_version: Version, wait_for_position: WaitForPosition = None,
) -> VersionComparison:
    """What changed from one version to another (0: the empty plan), the reasons, and the totals per period."""
    guard.planning.get(Plan, plan_id)
    # The totals roll up with the ledger's organisation: read both projections at one position.
    with reading(services, VERSIONS_AND_PROGRESS, CutQuery(wait_for_position=wait_for_position)) as (conn, cut):
        try:
            comparison = compare_versions(conn, plan_id, from_version, to_version, position=cut.position)
        except VersionNotFound as error:
            raise _not_found(error) from None
    stamp(response, cut.position)
    return comparison


@router.get("/plans/{plan_id}/versions/{version}/actuals")
def compare_plan_version_with_actuals(
    plan_id: UUID, version: Annotated[int, Path(ge=1, le=1_000_000)], services: ServicesDep, guard: GuardDep,
    response: Response, cut_query: CutDep,
) -> ActualsComparison:
    """The retrospective: each target of a version beside what actually happened, at a cut."""
    guard.planning.get(Plan, plan_id)
    with reading(services, VERSIONS_AND_PROGRESS, cut_query) as (conn, cut):
        try:
            result = compare_with_actuals(conn, plan_id, version, cut=cut, now=datetime.now(UTC),
                                          config=services.measure_config())
        except VersionNotFound as error:
            raise _not_found(error) from None
    stamp(response, result.position)
    return result

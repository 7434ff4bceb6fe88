"""Collection reads: what a front end lists, picks from and draws as trees.

Units (and the organisation tree), members, products, accounts, plans, a plan's targets (as a
tree, with their values in every published version) and activities. Each is read from the
projections at a cut — the same ``as_of``, ``known_at``, ``known_at_position`` and
``wait_for_position`` as every projection read — says which log position it was read at (body
and ``Salesplan-Position``), names the entities its rows point to, and pages with the one
cursor scheme of ``api.pagination``. Everyone with a token reads the organisation, the
catalogue and the plans; a rep lists only their own activities.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Response

from api import pagination
from api import schemas as s
from api.deps import CutDep, GuardDep, ServicesDep, reading, stamp
from api.errors import PROBLEM_RESPONSES, ApiProblem
from api.openapi import POSITIONED
from api.pagination import CursorToken, Limit, parse_datetime, parse_str, parse_uuid
from domain.errors import NotFound
from projections.queries import collections as c

router = APIRouter(tags=["collections"], responses={**PROBLEM_RESPONSES, **POSITIONED})

PROGRESS: Final = ("progress",)
CATALOGUE: Final = ("catalogue",)
PROGRESS_AND_CATALOGUE: Final = ("progress", "catalogue")
BY_NAME: Final = (parse_str, parse_uuid)

Search = Annotated[s.Name | None, Query(description="Only names containing this text (case-insensitive)")]
Active = Annotated[bool | None, Query(description="true: active ones only; false: deactivated ones only")]


@router.get("/units")
def list_units(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    parent_id: Annotated[UUID | None, Query(description="Only the direct children of this unit")] = None,
    roots_only: Annotated[bool, Query(description="Only the units at the top of the tree")] = False,
    active: Active = None, q: Search = None, limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.UnitsOut:
    """Units at a cut, by name, each with its parent's name."""
    filters = {"parent_id": parent_id, "roots_only": roots_only, "active": active, "q": q}
    found, cut = pagination.read_page(
        services, PROGRESS, cut_query, listing="units", filters=filters, token=cursor, parsers=BY_NAME, limit=limit,
        fetch=lambda conn, cut, after: c.list_units(conn, cut=cut, parent_id=parent_id, roots_only=roots_only,
                                                    active=active, q=q, after=after, limit=limit),  # type: ignore[arg-type]
        key=lambda row: (row.name, row.unit_id),
    )
    stamp(response, cut.position)
    return s.UnitsOut(position=cut.position, next_cursor=found.next_cursor,
                      rows=[s.UnitRowOut.model_validate(r, from_attributes=True) for r in found.rows])


@router.get("/units/tree")
def get_unit_tree(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    root_id: Annotated[UUID | None, Query(description="Only this unit's subtree")] = None,
    active_only: Annotated[bool, Query(description="Leave out deactivated units (and what lies beneath them) "
                                                   "and deactivated members")] = False,
    members: Annotated[bool, Query(description="List each unit's members too")] = False,
) -> s.UnitTreeOut:
    """The organisation at a cut as a tree of units, children by name, optionally with their members."""
    with reading(services, PROGRESS, cut_query) as (conn, cut):
        roots = c.unit_tree(conn, cut=cut, root_id=root_id, active_only=active_only, members=members)
    if root_id is not None and not roots:
        raise NotFound("unit", root_id, "root_id")
    stamp(response, cut.position)
    return s.UnitTreeOut(position=cut.position, roots=[s.UnitNodeOut.model_validate(r, from_attributes=True)
                                                       for r in roots])


@router.get("/members")
def list_members(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    unit_id: Annotated[UUID | None, Query(description="Only the members of this unit")] = None,
    subunits: Annotated[bool, Query(description="With unit_id: the members of the units beneath it too")] = False,
    active: Active = None, role: s.MemberRole | None = None, q: Search = None,
    limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.MembersOut:
    """Members at a cut, by name, each with their unit's name."""
    filters = {"unit_id": unit_id, "subunits": subunits, "active": active, "role": role, "q": q}

    def fetch(conn: Any, cut: Any, after: Any) -> list[c.MemberRow]:
        units = None if unit_id is None else c.subtree(conn, cut, unit_id) if subunits else {unit_id}
        return c.list_members(conn, cut=cut, unit_ids=units, active=active, role=role, q=q, after=after, limit=limit)

    found, cut = pagination.read_page(services, PROGRESS, cut_query, listing="members", filters=filters, token=cursor,
                                      parsers=BY_NAME, limit=limit, fetch=fetch,
                                      key=lambda row: (row.name, row.member_id))
    stamp(response, cut.position)
    return s.MembersOut(position=cut.position, next_cursor=found.next_cursor,
                        rows=[s.MemberRowOut.model_validate(r, from_attributes=True) for r in found.rows])


@router.get("/products")
def list_products(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    product_line: Annotated[s.Name | None, Query()] = None, currency: Annotated[s.Currency | None, Query()] = None,
    q: Search = None, limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.ProductsOut:
    """Products at a cut, by name, with their product line and list price."""
    filters = {"product_line": product_line, "currency": currency, "q": q}
    found, cut = pagination.read_page(
        services, CATALOGUE, cut_query, listing="products", filters=filters, token=cursor, parsers=BY_NAME,
        limit=limit, key=lambda row: (row.name, row.product_id),
        fetch=lambda conn, cut, after: c.list_products(conn, cut=cut, product_line=product_line, currency=currency,
                                                       q=q, after=after, limit=limit),  # type: ignore[arg-type]
    )
    stamp(response, cut.position)
    return s.ProductsOut(position=cut.position, next_cursor=found.next_cursor,
                         rows=[s.ProductRowOut.model_validate(r, from_attributes=True) for r in found.rows])


@router.get("/accounts")
def list_accounts(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    segment: Annotated[s.Name | None, Query()] = None, region: Annotated[s.Name | None, Query()] = None,
    q: Search = None, limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.AccountsOut:
    """Accounts at a cut, by name, with their segment and region."""
    filters = {"segment": segment, "region": region, "q": q}
    found, cut = pagination.read_page(
        services, CATALOGUE, cut_query, listing="accounts", filters=filters, token=cursor, parsers=BY_NAME,
        limit=limit, key=lambda row: (row.name, row.account_id),
        fetch=lambda conn, cut, after: c.list_accounts(conn, cut=cut, segment=segment, region=region, q=q,
                                                       after=after, limit=limit),  # type: ignore[arg-type]
    )
    stamp(response, cut.position)
    return s.AccountsOut(position=cut.position, next_cursor=found.next_cursor,
                         rows=[s.AccountRowOut.model_validate(r, from_attributes=True) for r in found.rows])


@router.get("/plans")
def list_plans(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    unit_id: Annotated[UUID | None, Query(description="Only the plans this unit owns")] = None,
    status: Literal["draft", "published", "closed"] | None = None,
    span: Annotated[s.PeriodKey | None, Query()] = None, q: Search = None,
    limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.PlansOut:
    """Plans at a cut, by name, each with its owning unit's name, status and latest published version."""
    filters = {"unit_id": unit_id, "status": status, "span": span, "q": q}
    found, cut = pagination.read_page(
        services, PROGRESS, cut_query, listing="plans", filters=filters, token=cursor, parsers=BY_NAME, limit=limit,
        key=lambda row: (row.name, row.plan_id),
        fetch=lambda conn, cut, after: c.list_plans(conn, cut=cut, unit_id=unit_id, status=status, span=span, q=q,
                                                    after=after, limit=limit),  # type: ignore[arg-type]
    )
    stamp(response, cut.position)
    return s.PlansOut(position=cut.position, next_cursor=found.next_cursor,
                      rows=[s.PlanRowOut.model_validate(r, from_attributes=True) for r in found.rows])


@router.get("/plans/{plan_id}/targets")
def list_plan_targets(
    plan_id: UUID, services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    metric: s.Metric | None = None, period: Annotated[s.PeriodKey | None, Query()] = None,
    unit_id: UUID | None = None, member_id: UUID | None = None,
    include_removed: Annotated[bool, Query(description="Removed targets too (marked removed)")] = False,
    limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.PlanTargetsOut:
    """A plan's targets at a cut as a tree (each parent before its children), with every published version's values."""
    filters = {"plan_id": plan_id, "metric": metric, "period": period, "unit_id": unit_id, "member_id": member_id,
               "include_removed": include_removed}
    tree: list[c.PlanTargets] = []

    def fetch(conn: Any, cut: Any, after: tuple[Any, ...] | None) -> list[c.TargetNode]:
        found = c.plan_targets(conn, cut=cut, plan_id=plan_id, include_removed=include_removed)
        if found is None:
            raise NotFound("plan", plan_id)
        tree.append(found)
        rows = [t for t in found.targets if (metric is None or t.metric == metric)
                and (period is None or t.period == period) and (unit_id is None or t.unit_id == unit_id)
                and (member_id is None or t.member_id == member_id)]
        if after is not None:
            ids = [t.target_id for t in rows]
            if after[0] not in ids:
                raise ApiProblem(422, "cursor.invalid", "the cursor's target is not in this listing", parameter="cursor")
            rows = rows[ids.index(after[0]) + 1:]
        return rows[:limit + 1]

    found, cut = pagination.read_page(services, PROGRESS, cut_query, listing="plan_targets", filters=filters,
                                      token=cursor, parsers=(parse_uuid,), limit=limit, fetch=fetch,
                                      key=lambda row: (row.target_id,))
    plan = tree[0]
    stamp(response, cut.position)
    return s.PlanTargetsOut(
        position=cut.position, plan_id=plan.plan_id, plan_name=plan.name, currency=plan.currency,
        published_versions=plan.published_versions, next_cursor=found.next_cursor,
        rows=[s.TargetNodeOut.model_validate(r, from_attributes=True) for r in found.rows],
    )


@router.get("/activities")
def list_activities(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    member_id: UUID | None = None,
    unit_id: Annotated[UUID | None, Query(description="Activities of members who were in this unit (or beneath "
                                                      "it) when they logged them")] = None,
    deal_id: UUID | None = None, kind: s.ActivityKind | None = None,
    effective_from: Annotated[s.Instant | None, Query()] = None,
    effective_to: Annotated[s.Instant | None, Query(description="Exclusive")] = None,
    limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.ActivitiesOut:
    """Activities at a cut, newest first, with the member, unit, deal and account names (a rep: their own)."""
    member_id = guard.own_member(member_id, "member_id")
    filters = {"member_id": member_id, "unit_id": unit_id, "deal_id": deal_id, "kind": kind,
               "effective_from": effective_from, "effective_to": effective_to}

    def fetch(conn: Any, cut: Any, after: Any) -> list[c.ActivityRow]:
        units = None if unit_id is None else c.subtree(conn, cut, unit_id)
        return c.list_activities(conn, cut=cut, member_id=member_id, unit_ids=units, deal_id=deal_id, kind=kind,
                                 effective_from=effective_from, effective_to=effective_to, after=after, limit=limit)

    found, cut = pagination.read_page(services, PROGRESS_AND_CATALOGUE, cut_query, listing="activities",
                                      filters=filters, token=cursor, parsers=(parse_datetime, parse_uuid), limit=limit,
                                      fetch=fetch, key=lambda row: (row.effective_at, row.activity_id))
    stamp(response, cut.position)
    return s.ActivitiesOut(position=cut.position, next_cursor=found.next_cursor,
                           rows=[s.ActivityRowOut.model_validate(r, from_attributes=True) for r in found.rows])


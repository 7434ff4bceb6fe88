"""Analytics over HTTP: the pipeline funnel, deviation alerts and their webhooks, reports and burn-up charts.

Projection reads take the usual cut (``as_of``, ``known_at``, ``known_at_position``,
``wait_for_position``) and say which log position they were computed from, in the body and the
``Salesplan-Position`` header (CSV and SVG: the header only). Alerts live in their own tables,
written by evaluations: a list is stamped with the position of the last evaluation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal
from uuid import UUID

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Response

from api import pagination
from api import schemas as s
from api.auth import Guard, forbidden
from api.deps import (
    POSITION_HEADER,
    CutDep,
    CutQuery,
    GuardDep,
    PrincipalDep,
    Services,
    ServicesDep,
    WaitForPosition,
    reading,
    stamp,
)
from api.errors import PROBLEM_RESPONSES, ApiProblem
from api.openapi import POSITIONED
from api.pagination import CursorToken, parse_datetime, parse_uuid
from domain.errors import NotFound
from projections.folds.progress import LIVE as PROGRESS
from projections.history import Cut
from projections.processes import alerts, webhooks
from projections.queries.analytics import Funnel, funnel
from projections.queries.reports import Burnup, Report, burnup, burnup_svg, member_report, report_csv, unit_report

router = APIRouter(tags=["analytics"], responses=PROBLEM_RESPONSES)

LEDGER_AND_PIPELINE: Final = ("progress", "pipeline")
PROGRESS_ONLY: Final = ("progress",)
REPORTS: Final = ("progress", "pipeline")
MAX_SPAN: Final = timedelta(days=400)

Limit = pagination.Limit
Period = Annotated[s.ReportPeriod, Path(description="A day (2026-03-20) or an ISO week (2026-W12)")]
ReportFormat = Annotated[Literal["json", "csv"], Query(
    alias="format", deprecated=True, description="json (default) or csv; prefer the report's .csv path, which "
                                                 "declares one media type")]

CSV_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {"description": "The report", "content": {"text/csv": {"schema": {"type": "string"}}}, **POSITIONED[200]}}
SVG_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {"description": "The chart", "content": {"image/svg+xml": {"schema": {"type": "string"}}}, **POSITIONED[200]}}


class SvgResponse(Response):
    media_type = "image/svg+xml"


class CsvResponse(Response):
    media_type = "text/csv"  # Starlette adds the charset (utf-8)


# --- the funnel --------------------------------------------------------------------------------


@router.get("/analytics/funnel", responses=POSITIONED)
def get_funnel(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
    span_start: Annotated[s.Instant, Query(description="The span's start (inclusive)")],
    span_end: Annotated[s.Instant, Query(description=f"The span's end (exclusive); at most {MAX_SPAN.days} days on")],
    group_by: Literal["unit", "member", "product_line", "region", "segment"] | None = None,
    unit_id: UUID | None = None,
    stalled_after_days: Annotated[int, Query(ge=1, le=3650)] = 14,
) -> Funnel:
    """Entries per stage, conversion, wins, speed and stalled deals in a span (a rep: their unit's)."""
    if span_end - span_start > MAX_SPAN:
        raise ApiProblem(422, "query.span_too_long", f"a funnel spans at most {MAX_SPAN.days} days",
                         parameter="span_end")
    unit_id = guard.scoped_unit(unit_id)
    with reading(services, LEDGER_AND_PIPELINE, cut_query) as (conn, cut):
        result = funnel(conn, cut=cut, at=cut_query.at, span_start=span_start, span_end=span_end, group_by=group_by,
                        unit_id=unit_id, stalled_after_days=stalled_after_days)
    stamp(response, result.position)
    return result


# --- alerts ------------------------------------------------------------------------------------


def _alerts_out(conn: sa.Connection, found: list[alerts.Alert], next_cursor: str | None = None) -> s.AlertsOut:
    run = alerts.last_run(conn)
    return s.AlertsOut(position=run.position if run else 0, next_cursor=next_cursor,
                       last_run=None if run is None else s.AlertRunOut.model_validate(run, from_attributes=True),
                       alerts=[s.AlertOut.model_validate(a, from_attributes=True) for a in found])


def _visible_alert(guard: Guard, alert: alerts.Alert) -> None:
    if not guard.sees_alert(alert.unit_id, alert.owner_ids):
        if guard.role == "rep":
            raise NotFound("alert", alert.id)  # another rep's alert does not exist for a rep
        raise forbidden("auth.outside_your_units", "this alert is outside the units you manage")


@router.get("/alerts", responses=POSITIONED)
def list_alerts(
    services: ServicesDep, guard: GuardDep, response: Response, owner_id: UUID | None = None,
    unit_id: UUID | None = None, kind: s.AlertKind | None = None, open_only: bool = True,
    limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None, wait_for_position: WaitForPosition = None,
) -> s.AlertsOut:
    """Alerts, newest first (a rep: their own; a manager: their units'); open ones unless open_only=false."""
    owner_id = guard.own_member(owner_id, "owner_id")
    if guard.role == "manager":
        unit_id = guard.scoped_unit(unit_id)
    filters = {"owner_id": owner_id, "unit_id": unit_id, "kind": kind, "open_only": open_only}
    start = pagination.decode(cursor, "alerts", filters, (parse_datetime, parse_uuid))
    services.wait_for(wait_for_position, alerts.READS)
    with services.database.engine.connect() as conn:
        found = pagination.page(
            alerts.list_alerts(conn, owner_id=owner_id, unit_id=unit_id, kind=kind, open_only=open_only,
                               limit=limit + 1, after=None if start is None else (start.key[0], start.key[1])),
            limit, "alerts", filters, lambda alert: (alert.raised_at, alert.id))
        out = _alerts_out(conn, found.rows, found.next_cursor)
    stamp(response, out.position)
    return out


@router.post("/alerts/evaluate", responses=POSITIONED)
def evaluate_alerts(services: ServicesDep, guard: GuardDep, response: Response,
                    wait_for_position: WaitForPosition = None) -> s.AlertsOut:
    """Evaluate now (as the worker does periodically): raise, refresh and resolve alerts; answer the open ones."""
    guard.admin()
    services.wait_for(wait_for_position, alerts.READS)
    found = alerts.raise_alerts(services.database, at=datetime.now(UTC), config=services.settings.alert_config())
    with services.database.engine.connect() as conn:
        out = _alerts_out(conn, found)
    stamp(response, out.position)
    return out


@router.get("/alerts/preview", responses=POSITIONED)
def preview_alerts(services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep
                   ) -> s.AlertPreviewOut:
    """What an evaluation would find at a cut, storing nothing (a manager: their units' alerts)."""
    if guard.role == "rep":
        raise forbidden("auth.manager_only", "only managers, admins and viewers preview alerts")
    with reading(services, alerts.READS, cut_query) as (conn, cut):
        found = alerts.evaluate_alerts(conn, at=cut_query.at, position=cut.position,
                                       config=services.settings.alert_config())
    stamp(response, cut.position)
    return s.AlertPreviewOut(position=cut.position, at=cut_query.at, alerts=[
        s.AlertCandidateOut.model_validate(c, from_attributes=True) for c in found
        if guard.sees_alert(c.unit_id, c.owner_ids)])


@router.get("/alerts/{alert_id}")
def get_alert(alert_id: UUID, services: ServicesDep, guard: GuardDep) -> s.AlertOut:
    """One alert, open or resolved (a rep: their own)."""
    with services.database.engine.connect() as conn:
        alert = alerts.get_alert(conn, alert_id)
    _visible_alert(guard, alert)
    return s.AlertOut.model_validate(alert, from_attributes=True)


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge_alert(alert_id: UUID, services: ServicesDep, guard: GuardDep, principal: PrincipalDep
                      ) -> s.AlertOut:
    """The alert's owner (or an admin) has seen it; acknowledging again keeps the first acknowledgement."""
    guard.writer()
    admin = guard.role == "admin"
    with services.database.engine.connect() as conn:
        alert = alerts.get_alert(conn, alert_id)
    _visible_alert(guard, alert)
    if not admin and principal.member_id not in alert.owner_ids:
        raise forbidden("auth.not_owner", "only the alert's owner or an admin may acknowledge it")
    done = alerts.acknowledge(services.database, alert_id, principal.member_id, at=datetime.now(UTC), admin=admin)
    return s.AlertOut.model_validate(done, from_attributes=True)


@router.post("/alert-webhooks", status_code=201)
def add_webhook(body: s.AddWebhook, services: ServicesDep, guard: GuardDep) -> s.WebhookOut:
    """Register an endpoint for every alert raised or resolved from now on (deliveries are signed with the secret)."""
    guard.admin()
    webhook = webhooks.add_webhook(services.database, url=body.url, secret=body.secret, active=body.active)
    return s.WebhookOut.model_validate(webhook, from_attributes=True)


@router.get("/alert-webhooks")
def list_webhooks(services: ServicesDep, guard: GuardDep, limit: Limit = pagination.DEFAULT_LIMIT,
                  cursor: CursorToken = None) -> s.WebhooksOut:
    """The endpoints, by URL (their secrets are never read back)."""
    guard.admin()
    start = pagination.decode(cursor, "webhooks", {}, (pagination.parse_str, parse_uuid))
    with services.database.engine.connect() as conn:
        found = [w for w in webhooks.list_webhooks(conn) if start is None or (w.url, w.id) > start.key]
    page = pagination.page(found[:limit + 1], limit, "webhooks", {}, lambda w: (w.url, w.id))
    return s.WebhooksOut(next_cursor=page.next_cursor,
                         webhooks=[s.WebhookOut.model_validate(w, from_attributes=True) for w in page.rows])


@router.patch("/alert-webhooks/{webhook_id}")
def change_webhook(webhook_id: UUID, body: s.ChangeWebhook, services: ServicesDep, guard: GuardDep) -> s.WebhookOut:
    """Pause or resume an endpoint; its queued deliveries wait, they are not dropped."""
    guard.admin()
    webhook = webhooks.set_webhook_active(services.database, webhook_id, body.active)
    return s.WebhookOut.model_validate(webhook, from_attributes=True)


@router.get("/alert-deliveries")
def list_deliveries(services: ServicesDep, guard: GuardDep, pending_only: bool = False, alert_id: UUID | None = None,
                    limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None) -> s.DeliveriesOut:
    """The webhook outbox, oldest first: what was sent, what waits for a retry and why it failed."""
    guard.admin()
    filters = {"pending_only": pending_only, "alert_id": alert_id}
    start = pagination.decode(cursor, "deliveries", filters, (parse_datetime, parse_uuid))
    with services.database.engine.connect() as conn:
        found = webhooks.list_deliveries(conn, pending_only=pending_only, alert_id=alert_id, limit=limit + 1,
                                         after=None if start is None else (start.key[0], start.key[1]))
    page = pagination.page(found, limit, "deliveries", filters, lambda d: (d.created_at, d.id))
    return s.DeliveriesOut(next_cursor=page.next_cursor,
                           deliveries=[s.DeliveryOut.model_validate(d, from_attributes=True) for d in page.rows])


# --- reports and burn-up -----------------------------------------------------------------------


def _report_response(report: Report, response: Response, format: str) -> Any:
    if format == "csv":
        return CsvResponse(report_csv(report), headers={POSITION_HEADER: str(report.position)})
    stamp(response, report.position)
    return report


# The .csv paths come first: their last segment would otherwise be taken for a period (and refused).
@router.get("/reports/members/{member_id}/{period}.csv", response_class=CsvResponse, responses=CSV_RESPONSE)
def get_member_report_csv(member_id: UUID, period: Period, services: ServicesDep, guard: GuardDep,
                          cut_query: CutDep) -> Any:
    """The member's report as CSV: one row per figure, then the targets."""
    return get_member_report(member_id, period, services, guard, Response(), cut_query, "csv")


@router.get("/reports/units/{unit_id}/{period}.csv", response_class=CsvResponse, responses=CSV_RESPONSE)
def get_unit_report_csv(unit_id: UUID, period: Period, services: ServicesDep, guard: GuardDep,
                        cut_query: CutDep) -> Any:
    """The unit's report as CSV: one row per figure, then the targets."""
    return get_unit_report(unit_id, period, services, guard, Response(), cut_query, "csv")


@router.get("/reports/members/{member_id}/{period}", response_model=Report, responses=CSV_RESPONSE)
def get_member_report(member_id: UUID, period: Period, services: ServicesDep, guard: GuardDep, response: Response,
                      cut_query: CutDep, format: ReportFormat = "json") -> Any:
    """A member's day or week: activities, stage changes, wins and losses, tasks, targets, open alerts (a rep: own)."""
    guard.read_scope(member_id=member_id, own_only=True)
    with reading(services, REPORTS, cut_query) as (conn, cut):
        report = member_report(conn, member_id=member_id, period=period, at=cut_query.at, position=cut.position,
                               config=services.measure_config())
    return _report_response(report, response, format)


@router.get("/reports/units/{unit_id}/{period}", response_model=Report, responses=CSV_RESPONSE)
def get_unit_report(unit_id: UUID, period: Period, services: ServicesDep, guard: GuardDep, response: Response,
                    cut_query: CutDep, format: ReportFormat = "json") -> Any:
    """A unit's day or week (its subtree, each fact where its member was then); a rep: their own unit."""
    guard.read_scope(unit_id)
    with reading(services, REPORTS, cut_query) as (conn, cut):
        report = unit_report(conn, unit_id=unit_id, period=period, at=cut_query.at, position=cut.position,
                             config=services.measure_config())
    return _report_response(report, response, format)


def _burnup(target_id: UUID, services: Services, guard: Guard, cut_query: CutQuery) -> Burnup:
    with reading(services, PROGRESS_ONLY, cut_query) as (conn, cut):
        t = PROGRESS.targets
        owner = conn.execute(sa.select(t.c.unit_id, t.c.member_id).where(
            Cut(cut.position).where(t), t.c.target_id == target_id)).first()
        if owner is None:
            raise NotFound("target", target_id)
        guard.read_scope(owner.unit_id, owner.member_id)
        return burnup(conn, target_id=target_id, position=cut.position, until=cut_query.at,
                      config=services.measure_config())


@router.get("/targets/{target_id}/burnup", responses=POSITIONED)
def get_burnup(target_id: UUID, services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep
               ) -> Burnup:
    """A target's committed value, expected to date, actual and forecast, day by day up to the cut."""
    series = _burnup(target_id, services, guard, cut_query)
    stamp(response, series.position)
    return series


@router.get("/targets/{target_id}/burnup.svg", response_class=SvgResponse, responses=SVG_RESPONSE)
def get_burnup_svg(target_id: UUID, services: ServicesDep, guard: GuardDep, cut_query: CutDep) -> SvgResponse:
    """The burn-up as an SVG chart."""
    series = _burnup(target_id, services, guard, cut_query)
    return SvgResponse(burnup_svg(series), headers={POSITION_HEADER: str(series.position)})

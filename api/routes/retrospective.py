"""Retrospectives over HTTP: the quarter replay, baseline vs revisions vs actual, what changed and why.

Every answer carries the log position it was computed from (in the body and the
``Salesplan-Position`` header): asked again with ``known_at_position`` set to it, it is the same.
A manager reads the plans, units and members beneath their unit; a rep their own unit's
(a plan-wide replay is their unit's); admins and viewers everything.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Final, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Response

from api import schemas as s
from api.auth import Guard
from api.deps import CutDep, GuardDep, KnownDep, ServicesDep, reading, stamp
from api.errors import PROBLEM_RESPONSES, ApiProblem
from api.openapi import POSITIONED
from domain import values as v
from domain.plan import Plan
from projections.history import Cut
from projections.queries.attribution import Attribution, attribute_change, known_cut, version_cut
from projections.queries.baseline import BaselineReport, plan_baseline
from projections.queries.replay import QuarterReplay, quarter_replay, step_bounds
from projections.queries.revisions import revision_reasons

router = APIRouter(tags=["retrospective"], responses={**PROBLEM_RESPONSES, **POSITIONED})

PROGRESS_AND_CLOCK: Final = ("progress", "log_clock")
BASELINE: Final = ("progress", "revision_reasons")
REASONS: Final = ("revision_reasons",)
MAX_STEPS: Final = 400



def _plan_scope(guard: Guard, plan_id: UUID, *, target_id: UUID | None = None, unit_id: UUID | None = None,
                member_id: UUID | None = None) -> Plan:
    """The plan (404 if unknown), once the caller may read the scope asked about (the plan's unit by default)."""
    plan = guard.planning.get(Plan, plan_id)
    if target_id is not None and target_id in plan.targets:
        scope = v.Scope.from_dict(plan.targets[target_id]["scope"])
        unit_id, member_id = scope.unit_id, scope.member_id
    if member_id is not None:
        guard.read_scope(member_id=member_id)
    else:
        guard.read_scope(unit_id or plan.unit_id, parameter="unit_id" if unit_id else "plan_id")
    return plan


def _end_of(day: date) -> datetime:
    """A date as a cut: its last instant (UTC)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, microseconds=-1)


@router.get("/plans/{plan_id}/replay")
def get_replay(
    plan_id: UUID, services: ServicesDep, guard: GuardDep, response: Response, cut_query: KnownDep,
    span: Annotated[s.PeriodKey | None, Query(description="Default: the plan's span")] = None,
    unit_id: UUID | None = None, member_id: UUID | None = None, metric: s.Metric = "revenue",
    step: Literal["day", "week"] = "day",
    known: Annotated[Literal["then", "now"], Query(description="Each step as known at its end, or as known now")
                     ] = "now",
) -> QuarterReplay:
    """How a span unfolded for the plan (or a unit or member of it), step by step, as known then or now."""
    if guard.role == "rep" and unit_id is None and member_id is None:
        unit_id = guard.rep_unit()  # a rep replays their own unit
    plan = _plan_scope(guard, plan_id, unit_id=unit_id, member_id=member_id)
    steps = len(step_bounds(v.Period.parse(span or plan.span, "span"), step))
    if steps > MAX_STEPS:
        raise ApiProblem(422, "replay.too_many_steps", f"{steps} steps: a replay has at most {MAX_STEPS}",
                         parameter="step", max_steps=MAX_STEPS)
    with reading(services, PROGRESS_AND_CLOCK, cut_query) as (conn, cut):
        replay = quarter_replay(conn, plan_id=plan_id, span=span or plan.span, unit_id=unit_id, member_id=member_id,
                                metric=metric, step=step, known=known, position=cut.position, now=datetime.now(UTC),
                                config=services.measure_config())
    stamp(response, replay.position)
    return replay


@router.get("/plans/{plan_id}/baseline")
def get_baseline(plan_id: UUID, services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep
                 ) -> BaselineReport:
    """Every target: its baseline (v1), each later version, its current value, the actual and why it moved."""
    _plan_scope(guard, plan_id)
    with reading(services, BASELINE, cut_query) as (conn, cut):
        report = plan_baseline(conn, plan_id=plan_id, position=cut.position, now=cut_query.at, as_of=cut.as_of,
                               config=services.measure_config())
    stamp(response, report.position)
    return report


@router.get("/plans/{plan_id}/attribution")
def get_attribution(
    plan_id: UUID, services: ServicesDep, guard: GuardDep, response: Response, cut_query: KnownDep,
    from_: Annotated[s.Day | None, Query(alias="from", description="Cut A: this day's end, as known then")] = None,
    to: Annotated[s.Day | None, Query(description="Cut B: this day's end, as known then")] = None,
    from_version: Annotated[int | None, Query(ge=1, le=1_000_000, description="Cut A: when this version was published")
                            ] = None,
    to_version: Annotated[int | None, Query(ge=1, le=1_000_000, description="Cut B: when this version was published")
                          ] = None,
    target_id: UUID | None = None, unit_id: UUID | None = None, member_id: UUID | None = None,
    metric: s.Metric | None = None, period: Annotated[s.PeriodKey | None, Query()] = None,
    known: Annotated[Literal["then", "now"], Query(
        description="Each dated cut as known on that date (then), or as known now: late entries then count "
                    "where they belong")] = "then",
) -> Attribution:
    """Why attainment and forecast moved between two cuts (dates or versions), by cause; the parts sum exactly."""
    for day, version, name in ((from_, from_version, "from"), (to, to_version, "to")):
        if (day is None) == (version is None):
            raise ApiProblem(422, "attribution.cut", f"give exactly one of {name} or {name}_version", parameter=name)
    _plan_scope(guard, plan_id, target_id=target_id, unit_id=unit_id, member_id=member_id)
    with reading(services, PROGRESS_AND_CLOCK, cut_query) as (conn, cut):

        def cut_at(day: date | None, version: int | None) -> Cut:
            if day is not None:
                return known_cut(conn, _end_of(day), position=cut.position, known=known)
            assert version is not None
            return version_cut(conn, plan_id=plan_id, version=version, position=cut.position)

        result = attribute_change(conn, plan_id=plan_id, a=cut_at(from_, from_version), b=cut_at(to, to_version),
                                  now=datetime.now(UTC), target_id=target_id, unit_id=unit_id, member_id=member_id,
                                  metric=metric, period=period, config=services.measure_config())
    stamp(response, result.position)
    return result


@router.get("/plans/{plan_id}/revision-reasons")
def get_revision_reasons(plan_id: UUID, services: ServicesDep, guard: GuardDep, response: Response,
                         cut_query: KnownDep, target_id: UUID | None = None) -> s.RevisionReasonsOut:
    """Every change to the plan's targets (or one target's): who, when, from what to what, and why."""
    _plan_scope(guard, plan_id, target_id=target_id)
    with reading(services, REASONS, cut_query) as (conn, cut):
        reasons = revision_reasons(conn, plan_id=plan_id, position=cut.position,
                                   target_ids=None if target_id is None else [target_id])
    stamp(response, cut.position)
    return s.RevisionReasonsOut(position=cut.position, plan_id=plan_id,
                                reasons=[s.RevisionReasonOut.model_validate(r, from_attributes=True) for r in reasons])


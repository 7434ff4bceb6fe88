"""Quarter replay: how a span unfolded step by step, as it was known then or as it is known now.

Each step (a day, or a week ending on Sunday) is one progress query at a cut:

- effective cut: the end of the step (the last microsecond of it; ``now`` for the step in
  progress); pace is measured there;
- log position: "as known now" reads every step at the given ``position``; "as known then"
  reads each step at the position the log had reached by the step's end on the recorded
  clock (``position_known_at``), never beyond ``position``. The answer is therefore a
  function of (``position``, ``now``, the arguments) alone: stamped with ``position``, it can
  be reproduced exactly while the projections are at or past it.

A scope (the plan, a unit or a member) may hold several targets for one metric and span: a
company target decomposed into regions, a member's own target beside her team's. The
targets that stand for a scope are chosen so that no part of the organisation counts twice
(``covering_targets``): the scope's own target when it has one, otherwise the targets of its
members and sub-units, recursively. Ratio metrics never sum: only the scope's own target.

The markers are the plan's publications and every change to its targets after the first
publication (the revisions), read from the progress history rows.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Protocol, TypeVar
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.errors import NotFound, RuleViolation, ValidationError
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.measure.cuts import position_known_at
from projections.queries.progress import (
    Organisation,
    ProgressConfig,
    ProgressFilter,
    ProgressRow,
    _ratio,
    _round,
    pace_status,
    progress,
)

STEPS: Final = ("day", "week")
KNOWN: Final = ("then", "now")
TICK: Final = timedelta(microseconds=1)  # a cut includes its instant: a step [start, end) ends a tick before end

PUBLISHED: Final = "published"
ADDED: Final = "added"
REVISED: Final = "revised"
REMOVED: Final = "removed"


# --- which targets stand for a scope ------------------------------------------------------


class ScopedTarget(Protocol):
    @property
    def target_id(self) -> UUID: ...
    @property
    def parent_id(self) -> UUID | None: ...
    @property
    def unit_id(self) -> UUID | None: ...
    @property
    def member_id(self) -> UUID | None: ...
    @property
    def product_line(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def segment(self) -> str | None: ...


T = TypeVar("T", bound=ScopedTarget)


def covering_targets(
    targets: Sequence[T], org: Organisation, at: datetime, *, unit_id: UUID | None = None,
    member_id: UUID | None = None, additive: bool = True,
) -> list[T]:
    """The targets (of one metric and period) that stand for a unit or a member, none counted twice.

    A scope's own un-narrowed target wins; else its narrowed targets that are not nested in
    one another (a decomposition by product line, say). A unit without targets of its own is
    covered by its members' targets (members placed by their unit at ``at``) and its
    sub-units', recursively. Ratio metrics (``additive=False``) never roll up: only the
    scope's own single target counts.
    """
    if (unit_id is None) == (member_id is None):
        raise ValidationError("scope.owner", "name exactly one of unit_id or member_id", "unit_id")
    if member_id is not None:
        return _own([t for t in targets if t.member_id == member_id], additive)
    if not additive:
        return _own([t for t in targets if t.unit_id == unit_id], additive)
    children: dict[UUID, list[UUID]] = defaultdict(list)
    for unit, parent in org.parent.items():
        if parent is not None:
            children[parent].append(unit)
    members_in: dict[UUID, list[UUID]] = defaultdict(list)
    for member in {t.member_id for t in targets if t.member_id is not None}:
        placed = org.unit_of(member, at)
        if placed is not None:
            members_in[placed].append(member)
    seen: set[UUID] = set()

    def walk(unit: UUID) -> list[T]:
        seen.add(unit)
        own = [t for t in targets if t.unit_id == unit]
        if own:
            return _own(own, additive)
        found: list[T] = []
        for member in sorted(members_in[unit], key=str):
            found += _own([t for t in targets if t.member_id == member], additive)
        for child in sorted(children[unit], key=str):
            if child not in seen:
                found += walk(child)
        return found

    assert unit_id is not None
    return walk(unit_id)


def _own(targets: list[T], additive: bool) -> list[T]:
    plain = [t for t in targets if t.product_line is None and t.region is None and t.segment is None]
    if plain:
        return plain  # at most one: a plan holds one target per metric, period and scope
    # A narrowing keeps the owner and the period, so a nested target's parent is in this same set.
    ids = {t.target_id for t in targets}
    roots = [t for t in targets if t.parent_id not in ids]
    return roots if additive or len(roots) == 1 else []


# --- one step ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """A scope's standing at one cut: its covering targets summed (additive metrics)."""

    target_ids: tuple[UUID, ...]
    target: Decimal | None
    actual: Decimal | None
    expected_to_date: Decimal | None
    attainment: Decimal | None
    pace: Decimal | None
    pace_status: str
    weighted_pipeline: Decimal | None
    forecast: Decimal | None


def standing(rows: Sequence[ProgressRow], metric: str, period: v.Period, at: datetime,
             config: ProgressConfig) -> Standing:
    """Sum the covering targets' progress rows; pace is recomputed from the sums."""
    if not rows:
        return Standing((), None, None, None, None, None, "no_target", None, None)
    ids = tuple(r.target_id for r in rows)
    if metric in v.RATIO_METRICS:
        (r,) = rows
        return Standing(ids, r.committed, r.actual, r.expected_to_date, r.attainment, r.pace, r.pace_status,
                        r.weighted_pipeline, r.forecast)
    target = sum((r.committed for r in rows), Decimal(0))
    actual = sum((r.actual for r in rows), Decimal(0))
    weighted = None if any(r.weighted_pipeline is None for r in rows) else sum(
        (r.weighted_pipeline or Decimal(0) for r in rows), Decimal(0))
    forecast = None if any(r.forecast is None for r in rows) else sum(
        (r.forecast or Decimal(0) for r in rows), Decimal(0))
    share = period.elapsed_share(at)
    pace = _ratio(actual, target * share) if share > 0 else None
    return Standing(
        target_ids=ids, target=target, actual=actual, expected_to_date=_round(metric, target * share),
        attainment=_ratio(actual, target), pace=pace, pace_status=pace_status(pace, config) if target else "no_target",
        weighted_pipeline=weighted, forecast=forecast,
    )


@dataclass(frozen=True)
class ReplayStep:
    """One step of the replay: the days [start, end), read at (``position``, ``as_of``)."""

    start: date
    end: date
    as_of: datetime
    position: int
    standing: Standing


@dataclass(frozen=True)
class ReplayMarker:
    """A publication of the plan, or a change to one of its targets after the first publication."""

    kind: str  # published | added | revised | removed
    position: int
    effective_at: datetime
    recorded_at: datetime
    version: int | None  # the version a publication froze
    target_id: UUID | None
    metric: str | None
    period: str | None
    unit_id: UUID | None
    member_id: UUID | None
    before: Decimal | None
    after: Decimal | None
    before_stretch: Decimal | None
    after_stretch: Decimal | None


@dataclass(frozen=True)
class QuarterReplay:
    plan_id: UUID
    span: str
    metric: str
    step: str
    known: str
    unit_id: UUID | None
    member_id: UUID | None
    position: int  # every step was read at or before this log position
    now: datetime
    steps: tuple[ReplayStep, ...]
    markers: tuple[ReplayMarker, ...]


def step_bounds(period: v.Period, step: str) -> list[tuple[date, date]]:
    """Days, or weeks ending on Sunday (the first and last may be short), tiling the period."""
    if step == "day":
        days = (period.end - period.start).days
        return [(period.start + timedelta(days=i), period.start + timedelta(days=i + 1)) for i in range(days)]
    cuts = [period.start]
    monday = period.start + timedelta(days=(7 - period.start.weekday()) % 7 or 7)
    while monday < period.end:
        cuts.append(monday)
        monday += timedelta(days=7)
    cuts.append(period.end)
    return list(itertools.pairwise(cuts))


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True)
class PlanFacts:
    """What never changes about a plan once drafted: its span, currency and owning unit."""

    plan_id: UUID
    span: str
    currency: str
    unit_id: UUID


def plan_facts(conn: Connection, plan_id: UUID, position: int) -> PlanFacts:
    p = LIVE.plans.c
    row = conn.execute(sa.select(p.span, p.currency, p.unit_id).where(p.plan_id == plan_id, p.position <= position)
                       .order_by(p.position).limit(1)).first()
    if row is None:
        raise NotFound("plan", plan_id, "plan_id")
    return PlanFacts(plan_id, row.span, row.currency, row.unit_id)


def quarter_replay(
    conn: Connection, *, plan_id: UUID, span: str, unit_id: UUID | None = None, member_id: UUID | None = None,
    metric: str = "revenue", step: str = "day", known: str = "now", position: int, now: datetime,
    config: ProgressConfig = ProgressConfig(),
) -> QuarterReplay:
    """How ``span`` unfolded for the plan (or one unit or member of it), step by step, on either clock."""
    if step not in STEPS:
        raise ValidationError("replay.step", "step must be day or week", "step", allowed=list(STEPS))
    if known not in KNOWN:
        raise ValidationError("replay.known", "known must be then or now", "known", allowed=list(KNOWN))
    if unit_id is not None and member_id is not None:
        raise ValidationError("scope.owner", "name at most one of unit_id or member_id", "unit_id")
    v.metric(metric)
    period = v.Period.parse(span, "span")
    plan = plan_facts(conn, plan_id, position)
    if not v.Period.parse(plan.span).contains(period):
        raise RuleViolation("replay.span_outside_plan", f"{span} is outside the plan's span {plan.span}", "span")
    owner = unit_id if unit_id is not None or member_id is not None else plan.unit_id
    filters = ProgressFilter(plan_id=plan_id, metric=metric, period=span, unit_id=unit_id, member_id=member_id)
    memberships = _Memberships(conn, position)
    steps: list[ReplayStep] = []
    for start, end in step_bounds(period, step):
        if midnight(start) > now:
            break
        as_of = min(midnight(end) - TICK, now)
        read_at = min(position_known_at(conn, as_of), position) if known == "then" else position
        cut = Cut(read_at, as_of)
        rows = progress(conn, cut=cut, now=now, filters=filters, config=config).rows
        org = _OrganisationAt(_unit_parents(conn, cut), memberships.at(read_at))
        chosen = covering_targets(rows, org, as_of, unit_id=owner if member_id is None else None,
                                  member_id=member_id, additive=metric in v.ADDITIVE_METRICS)
        steps.append(ReplayStep(start, end, as_of, read_at, standing(chosen, metric, period, as_of, config)))
    return QuarterReplay(
        plan_id=plan_id, span=span, metric=metric, step=step, known=known, unit_id=unit_id, member_id=member_id,
        position=position, now=now, steps=tuple(steps),
        markers=tuple(plan_markers(conn, plan_id=plan_id, period=period, position=position)),
    )


class _OrganisationAt(Organisation):
    """progress's Organisation (same placement rules), built from rows the replay reads once for all steps."""

    def __init__(self, parent: dict[UUID, UUID | None], memberships: dict[UUID, list[tuple[datetime, UUID]]]) -> None:
        self.parent = parent
        self.memberships = memberships


class _Memberships:
    """Every membership row up to a position, read once; a step takes the prefix its own position allows."""

    def __init__(self, conn: Connection, position: int) -> None:
        m = LIVE.members.c
        self.rows = list(conn.execute(sa.select(m.member_id, m.position, m.effective_at, m.unit_id)
                                      .where(m.position <= position).order_by(m.member_id, m.position)))
        self.cache: dict[int, dict[UUID, list[tuple[datetime, UUID]]]] = {}

    def at(self, position: int) -> dict[UUID, list[tuple[datetime, UUID]]]:
        if position not in self.cache:
            found: dict[UUID, list[tuple[datetime, UUID]]] = defaultdict(list)
            for row in self.rows:
                if row.position <= position:
                    found[row.member_id].append((row.effective_at, row.unit_id))
            self.cache[position] = dict(found)
        return self.cache[position]


def _unit_parents(conn: Connection, cut: Cut) -> dict[UUID, UUID | None]:
    u = LIVE.units
    return {r.unit_id: r.parent_id for r in conn.execute(sa.select(u.c.unit_id, u.c.parent_id).where(cut.where(u)))}


# --- markers ----------------------------------------------------------------------------------


def published_versions(conn: Connection, plan_id: UUID, position: int) -> list[tuple[int, Any]]:
    """(version, the plan's history row of that publication), oldest first."""
    p = LIVE.plans.c
    found: list[tuple[int, Any]] = []
    last = 0
    for row in conn.execute(sa.select(LIVE.plans).where(p.plan_id == plan_id, p.position <= position)
                            .order_by(p.position)):
        if row.published_version > last:
            found.append((int(row.published_version), row))
            last = row.published_version
    return found


def plan_markers(conn: Connection, *, plan_id: UUID, period: v.Period, position: int) -> list[ReplayMarker]:
    """Publications and post-baseline target changes effective or recorded within ``period``."""

    def within(row: Any) -> bool:
        return any(period.start_at <= when < period.end_at for when in (row.effective_at, row.recorded_at))

    versions = published_versions(conn, plan_id, position)
    markers = [
        ReplayMarker(PUBLISHED, int(row.position), row.effective_at, row.recorded_at, version, None, None, None, None,
                     None, None, None, None, None)
        for version, row in versions if within(row)
    ]
    if versions:
        baseline = int(versions[0][1].position)
        t = LIVE.targets.c
        previous: Any = None
        for row in conn.execute(sa.select(LIVE.targets).where(t.plan_id == plan_id, t.position <= position)
                                .order_by(t.target_id, t.position)):
            before = previous if previous is not None and previous.target_id == row.target_id else None
            previous = row
            if row.position <= baseline or not within(row):
                continue
            if before is None:
                kind = ADDED
            elif row.removed and not before.removed:
                kind = REMOVED
            else:
                kind = REVISED
            markers.append(ReplayMarker(
                kind, int(row.position), row.effective_at, row.recorded_at, None, row.target_id, row.metric, row.period,
                row.unit_id, row.member_id,
                before=None if before is None else before.committed,
                after=None if kind == REMOVED else row.committed,
                before_stretch=None if before is None else before.stretch,
                after_stretch=None if kind == REMOVED else row.stretch,
            ))
    return sorted(markers, key=lambda m: (m.position, m.kind != PUBLISHED, str(m.target_id)))

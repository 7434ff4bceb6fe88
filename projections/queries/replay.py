"""Quarter replay: how a span unfolded step by step, as it was known then or as it is known now.

Each step (a day, or a week ending on Sunday) is the scope's standing at one cut:

- effective cut: the end of the step (the last microsecond of it; ``now`` for the step in
  progress); pace is measured there;
- log position: "as known now" reads every step at the given ``position``; "as known then"
  reads each step at the position the log had reached by the step's end on the recorded
  clock (``position_known_at``), never beyond ``position``. The answer is therefore a
  function of (``position``, ``now``, the arguments) alone: stamped with ``position``, it can
  be reproduced exactly while the projections are at or past it.

The standing of a scope (the plan's unit, a unit or a member) follows the roll-up rule
(``projections.measure.targets``): its target is the sum of the targets that stand for it at
that step, its actual and forecast are its own facts at that step — the same figures
``/progress`` and ``/baseline`` report at that cut. Every fact is read once for all the steps
(``projections.measure.series``).

The markers are the plan's publications and every change to its targets after the first
publication (the revisions), read from the progress history rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.errors import RuleViolation, ValidationError
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig, figures
from projections.measure.cuts import position_known_at
from projections.measure.facts import Tally
from projections.measure.organisation import SpanOverride, UnitHistory, member_spans
from projections.measure.series import Step, series
from projections.measure.targets import Rollup, Target, TargetHistory, midnight, narrowings_of, scope_cell
from projections.queries.plans import find_plan, publications

__all__ = ["QuarterReplay", "ReplayMarker", "ReplayStep", "Standing", "plan_markers", "quarter_replay",
           "replay_cuts", "scope_series", "scope_standing", "step_bounds"]

STEPS: Final = ("day", "week")
KNOWN: Final = ("then", "now")
TICK: Final = timedelta(microseconds=1)  # a cut includes its instant: a step [start, end) ends a tick before end

PUBLISHED: Final = "published"
ADDED: Final = "added"
REVISED: Final = "revised"
REMOVED: Final = "removed"


@dataclass(frozen=True)
class Standing:
    """A scope's standing at one cut: the targets that stand for it, summed, against its own facts."""

    target_ids: tuple[UUID, ...]
    target: Decimal | None
    actual: Decimal
    expected_to_date: Decimal | None
    attainment: Decimal | None
    pace: Decimal | None
    pace_status: str
    weighted_pipeline: Decimal | None
    forecast: Decimal | None


def scope_standing(metric: str, start: datetime, end: datetime, chosen: Sequence[Target], counted: Tally,
                   at: datetime, config: MeasureConfig) -> Standing:
    """The roll-up's figures: the standing targets' committed values summed, the scope's facts counted once."""
    target = sum((t.committed for t in chosen), Decimal(0)) if chosen else None
    f = figures(metric, target or Decimal(0), None, counted, start, end, at, config)
    return Standing(
        target_ids=tuple(t.target_id for t in chosen), target=target, actual=f.actual,
        expected_to_date=f.expected_to_date if chosen else None, attainment=f.attainment if chosen else None,
        pace=f.pace if chosen else None, pace_status=f.pace_status if chosen else "no_target",
        weighted_pipeline=f.weighted_pipeline, forecast=f.forecast,
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


def quarter_replay(
    conn: Connection, *, plan_id: UUID, span: str, unit_id: UUID | None = None, member_id: UUID | None = None,
    metric: str = "revenue", step: str = "day", known: str = "now", position: int, now: datetime,
    config: MeasureConfig = MeasureConfig(),
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
    plan = find_plan(conn, plan_id, position)
    if not v.Period.parse(plan.span).contains(period):
        raise RuleViolation("replay.span_outside_plan", f"{span} is outside the plan's span {plan.span}", "span")
    bounds = step_bounds(period, step)
    cuts = replay_cuts(conn, bounds, known, position, now)
    history = TargetHistory(conn, plan_id=plan_id, position=position, metric=metric, period=span)
    standings = scope_series(conn, history, cuts, metric=metric, start=period.start_at, end=period.end_at,
                             currency=plan.currency, owner=member_id or unit_id or plan.unit_id,
                             member=member_id is not None, config=config)
    steps = tuple(ReplayStep(b[0], b[1], c.as_of, c.position, s)
                  for b, c, s in zip(bounds, cuts, standings, strict=False))
    return QuarterReplay(
        plan_id=plan_id, span=span, metric=metric, step=step, known=known, unit_id=unit_id, member_id=member_id,
        position=position, now=now, steps=steps,
        markers=tuple(plan_markers(conn, plan_id=plan_id, period=period, position=position)),
    )


def replay_cuts(conn: Connection, bounds: Sequence[tuple[date, date]], known: str, position: int, now: datetime
                ) -> list[Step]:
    """One cut per step begun by ``now``: the step's end (or now), as known then or as known now."""
    cuts = []
    for start, end in bounds:
        if midnight(start) > now:
            break
        as_of = min(midnight(end) - TICK, now)
        read_at = min(position_known_at(conn, as_of), position) if known == "then" else position
        cuts.append(Step(read_at, as_of))
    return cuts


def scope_series(conn: Connection, history: TargetHistory, cuts: Sequence[Step], *, metric: str, start: datetime,
                 end: datetime, currency: str, owner: UUID, member: bool, config: MeasureConfig,
                 overrides: Sequence[SpanOverride] = ()) -> list[Standing]:
    """A scope's standing at each cut: the targets standing for it then, against its own facts then."""
    if not cuts:
        return []
    last = cuts[-1].position
    units = UnitHistory(conn, last)
    members = {r.member_id for rows in history.rows.values() for r in rows if r.member_id is not None}
    found = member_spans(conn, last, members, overrides)
    window = (metric, start, end)
    chosen_at = []
    for c in cuts:
        cut = Cut(c.position, c.as_of)
        rollup = Rollup([t for t in history.at(cut) if t.window == window], units.at(cut), found)
        chosen_at.append(rollup.covering(window, member_id=owner) if member else rollup.covering(window, unit_id=owner))
    # Each narrowing any step's standing targets plan for gets a cell; a step sums the ones it needs.
    wanted_at = [narrowings_of(chosen) for chosen in chosen_at]
    narrowings = sorted({n for wanted in wanted_at for n in wanted}, key=str)
    cells = {n: scope_cell(f"scope/{i}", metric, owner, start, end, currency, n) for i, n in enumerate(narrowings)}
    counted = series(conn, list(cells.values()), cuts, overrides)
    standings = []
    for i, (c, chosen, wanted) in enumerate(zip(cuts, chosen_at, wanted_at, strict=True)):
        total = Tally()
        for n in wanted:
            total = total + counted[cells[n].key][i]
        standings.append(scope_standing(metric, start, end, chosen, total, c.as_of, config))
    return standings


# --- markers ----------------------------------------------------------------------------------


def plan_markers(conn: Connection, *, plan_id: UUID, period: v.Period, position: int) -> list[ReplayMarker]:
    """Publications and post-baseline target changes effective or recorded within ``period``."""

    def within(row: Any) -> bool:
        return any(period.start_at <= when < period.end_at for when in (row.effective_at, row.recorded_at))

    versions = publications(conn, plan_id, position)
    markers = [
        ReplayMarker(PUBLISHED, p.position, p.effective_at, p.recorded_at, p.version, None, None, None, None,
                     None, None, None, None, None)
        for p in versions if within(p)
    ]
    if versions:
        baseline = versions[0].position
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

"""Progress: where every target stands against plan and pace, at any cut on both clocks.

"Now", "as of 31 March" and "31 March as known on 31 March" are the same question at
different cuts. Each target is measured through the core (``projections.measure``): its cell's
facts counted in the database, its figures by the one arithmetic. Pace is measured at the
cut's effective time, or at ``now`` when the cut has none.

Filters: a plan, a metric, a period, target ids, a member (their own targets) or a unit (the
targets of the unit's subtree: unit targets by their unit, member targets by the unit the
member was in at the target window's start — the same placement the roll-ups use).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from sqlalchemy.engine import Connection

from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig, figures
from projections.measure.facts import tally
from projections.measure.organisation import SpanOverride, member_names, member_spans, placements, tree_at
from projections.measure.targets import Target, cell, in_subtree, targets_at
from projections.queries.plans import plan_info

__all__ = ["ProgressFilter", "ProgressReport", "ProgressRow", "progress", "progress_rows"]


@dataclass(frozen=True)
class ProgressFilter:
    plan_id: UUID | None = None
    unit_id: UUID | None = None
    member_id: UUID | None = None
    period: str | None = None
    metric: str | None = None
    target_ids: frozenset[UUID] | None = None


@dataclass(frozen=True)
class ProgressRow:
    """One target's standing at a cut, with the names a reader needs to show it."""

    target_id: UUID
    plan_id: UUID
    plan_name: str
    parent_id: UUID | None
    metric: str
    period: str
    window_start: datetime
    window_end: datetime
    unit_id: UUID | None
    unit_name: str | None
    member_id: UUID | None
    member_name: str | None
    product_line: str | None
    region: str | None
    segment: str | None
    currency: str
    committed: Decimal
    stretch: Decimal | None
    actual: Decimal
    attainment: Decimal | None
    stretch_attainment: Decimal | None
    expected_to_date: Decimal
    pace: Decimal | None
    pace_status: str
    gap: Decimal
    weighted_pipeline: Decimal | None
    forecast: Decimal | None
    coverage: Decimal | None


@dataclass(frozen=True)
class ProgressReport:
    position: int
    as_of: datetime  # where pace was measured
    effective_cut: datetime | None
    rows: list[ProgressRow]


def progress(
    conn: Connection, *, cut: Cut, now: datetime, filters: ProgressFilter = ProgressFilter(),
    config: MeasureConfig = MeasureConfig(), overrides: Sequence[SpanOverride] = (),
) -> ProgressReport:
    """Every matching target's standing at ``cut`` (pace measured at ``cut.as_of`` or ``now``)."""
    at = cut.as_of or now
    targets = targets_at(
        conn, cut, plan_ids=None if filters.plan_id is None else [filters.plan_id], metric=filters.metric,
        period=filters.period, target_ids=filters.target_ids,
    )
    if filters.member_id is not None:
        targets = [t for t in targets if t.member_id == filters.member_id]
    if filters.unit_id is not None:
        units = tree_at(conn, cut).subtree(filters.unit_id)
        starts = _placements_by_start(conn, cut.position, targets, overrides)
        targets = [t for t in targets if in_subtree(t, units, starts.get(t.start, {}))]
    return ProgressReport(cut.position, at, cut.as_of, progress_rows(conn, targets, cut=cut, at=at, config=config,
                                                                     overrides=overrides))


def progress_rows(conn: Connection, targets: Sequence[Target], *, cut: Cut, at: datetime, config: MeasureConfig,
                  overrides: Sequence[SpanOverride] = ()) -> list[ProgressRow]:
    """``targets`` (from anywhere: the live plan, a version, a scenario) measured at ``cut``."""
    if not targets:
        return []
    # A plan's name and currency never change: read them as recorded, whatever the cut's effective time.
    plans = plan_info(conn, Cut(cut.position), [t.plan_id for t in targets])
    # Labels are the names as known at the position (a rename effective later still names the row).
    labels = tree_at(conn, Cut(cut.position))
    names = member_names(conn, Cut(cut.position), [t.member_id for t in targets if t.member_id is not None])
    counted = tally(conn, [cell(t, plans[t.plan_id].currency if t.plan_id in plans else "") for t in targets], cut,
                    at=at, overrides=overrides)
    rows = []
    for t in targets:
        plan = plans.get(t.plan_id)
        f = figures(t.metric, t.committed, t.stretch, counted[str(t.target_id)], t.start, t.end, at, config)
        rows.append(ProgressRow(
            target_id=t.target_id, plan_id=t.plan_id, plan_name=plan.name if plan else "", parent_id=t.parent_id,
            metric=t.metric, period=t.period, window_start=t.start, window_end=t.end, unit_id=t.unit_id,
            unit_name=labels.name(t.unit_id), member_id=t.member_id,
            member_name=names.get(t.member_id) if t.member_id else None, product_line=t.product_line,
            region=t.region, segment=t.segment, currency=plan.currency if plan else "", committed=f.committed,
            stretch=f.stretch, actual=f.actual, attainment=f.attainment, stretch_attainment=f.stretch_attainment,
            expected_to_date=f.expected_to_date, pace=f.pace, pace_status=f.pace_status, gap=f.gap,
            weighted_pipeline=f.weighted_pipeline, forecast=f.forecast, coverage=f.coverage,
        ))
    return rows


def _placements_by_start(conn: Connection, position: int, targets: Sequence[Target],
                         overrides: Sequence[SpanOverride]) -> dict[datetime, dict[UUID, UUID]]:
    members: dict[datetime, set[UUID]] = defaultdict(set)
    for t in targets:
        if t.member_id is not None:
            members[t.start].add(t.member_id)
    found = member_spans(conn, position, {m for ms in members.values() for m in ms}, overrides)
    return {start: placements({m: found.get(m, []) for m in ms}, start) for start, ms in members.items()}

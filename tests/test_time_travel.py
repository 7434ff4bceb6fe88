"""The heart of the retrospective: progress at any cut equals replaying the log with those cut-offs.

The reference here shares no code with the projection: it reads the raw log, keeps the events
recorded up to position P and effective up to T, folds them through the aggregates' own
``mutate`` (the write model's logic), and computes actuals with plain loops.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from domain.application import SalesPlanning
from domain.deal import Activity, Deal
from domain.organisation import Member, Unit
from domain.plan import Plan
from domain.values import OPEN_STAGES, Period
from projections.engine import ProjectionEngine
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig
from projections.measure.cuts import position_known_at
from projections.queries.progress import ProgressFilter, progress
from projections.registry import all_projections
from tests.history_generator import generate_history

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass
class Replayed:
    aggregates: dict[UUID, Any]
    opened_at: dict[UUID, datetime]
    opened_by: dict[UUID, UUID]
    closed_at: dict[UUID, datetime]
    memberships: dict[UUID, list[tuple[datetime, UUID]]]


def replay(app: SalesPlanning, position: int, as_of: datetime | None) -> Replayed:
    aggregates: dict[UUID, Any] = {}
    opened_at: dict[UUID, datetime] = {}
    opened_by: dict[UUID, UUID] = {}
    closed_at: dict[UUID, datetime] = {}
    memberships: dict[UUID, list[tuple[datetime, UUID]]] = defaultdict(list)
    for n in app.recorder.select_notifications(start=1, limit=10**9, stop=position):
        event = app.mapper.to_domain_event(n)
        if as_of is not None and event.effective_at > as_of:
            continue
        aggregates[event.originator_id] = event.mutate(aggregates.get(event.originator_id))
        if isinstance(event, Deal.Opened):
            opened_at[event.originator_id] = event.effective_at
            opened_by[event.originator_id] = event.owner_id
        elif isinstance(event, (Deal.Won, Deal.Lost)):
            closed_at[event.originator_id] = event.effective_at
        elif isinstance(event, Deal.Reopened):
            closed_at.pop(event.originator_id, None)
        elif isinstance(event, Member.Added | Member.Moved):
            memberships[event.originator_id].append((event.effective_at, event.unit_id))
    return Replayed(aggregates, opened_at, opened_by, closed_at, memberships)


def expected_actuals(r: Replayed, as_of: datetime | None) -> dict[UUID, tuple[Decimal, Decimal | None, Decimal]]:
    """target id → (actual, weighted pipeline, committed), by brute force."""
    at = as_of or NOW
    units = {k: a for k, a in r.aggregates.items() if isinstance(a, Unit)}
    plans = [a for a in r.aggregates.values() if isinstance(a, Plan)]
    deals = [a for a in r.aggregates.values() if isinstance(a, Deal)]
    activities = [a for a in r.aggregates.values() if isinstance(a, Activity)]
    probabilities = MeasureConfig().stage_probabilities

    def unit_of(member: UUID, when: datetime) -> UUID:
        history = r.memberships[member]
        chosen = history[0][1]
        for effective, unit in history:
            if effective <= when:
                chosen = unit
        return chosen

    def under(unit: UUID | None, root: UUID) -> bool:
        while unit is not None:
            if unit == root:
                return True
            unit = units[unit].parent_id
        return False

    def in_scope(target: dict[str, Any], owner: UUID, when: datetime, line: str, region: str, segment: str) -> bool:
        scope = target["scope"]
        if scope["member_id"] is not None and owner != scope["member_id"]:
            return False
        if scope["unit_id"] is not None and not under(unit_of(owner, when), scope["unit_id"]):
            return False
        return all(scope[k] is None or scope[k] == v
                   for k, v in (("product_line", line), ("region", region), ("segment", segment)))

    result = {}
    for plan in plans:
        for target in plan.targets.values():
            period = Period.parse(target["period"])
            metric = target["metric"]

            def within(when: datetime | None, p: Period = period) -> bool:
                return when is not None and p.start_at <= when < p.end_at

            won = [d for d in deals if d.stage == "won" and within(r.closed_at.get(d.id))
                   and in_scope(target, d.owner_id, r.closed_at[d.id], d.product_line, d.region, d.segment)]
            lost = [d for d in deals if d.stage == "lost" and within(r.closed_at.get(d.id))
                    and in_scope(target, d.owner_id, r.closed_at[d.id], d.product_line, d.region, d.segment)]
            open_due = [d for d in deals if d.stage in OPEN_STAGES and period.contains_date(d.expected_close)
                        and in_scope(target, d.owner_id, at, d.product_line, d.region, d.segment)]
            weighted: Decimal | None = None
            if metric == "revenue":
                actual = sum((d.amount for d in won if d.currency == plan.currency), Decimal(0))
                weighted = sum((d.amount * probabilities[d.stage] for d in open_due if d.currency == plan.currency),
                               Decimal(0))
            elif metric == "deals_won":
                actual = Decimal(len(won))
                weighted = sum((probabilities[d.stage] for d in open_due), Decimal(0))
            elif metric == "new_deals":
                # A new deal counts for the member who opened it, even after a reassignment.
                actual = Decimal(len([d for d in deals if within(r.opened_at[d.id]) and in_scope(
                    target, r.opened_by[d.id], r.opened_at[d.id], d.product_line, d.region, d.segment)]))
            elif metric == "activities":
                actual = Decimal(len([a for a in activities if within(a.last_effective_at) and in_scope(
                    target, a.member_id, a.last_effective_at, "", "", "")]))
            elif metric == "win_rate":
                closed = len(won) + len(lost)
                actual = (Decimal(len(won)) / closed if closed else Decimal(0)).quantize(Decimal("0.0001"))
            else:
                money = [d.amount for d in won if d.currency == plan.currency]
                actual = (sum(money, Decimal(0)) / len(money) if money else Decimal(0)).quantize(Decimal("0.01"))
            result[target["target_id"]] = (
                actual, None if weighted is None else weighted.quantize(Decimal("0.01")), target["committed"]
            )
    return result


def test_progress_at_every_cut_equals_a_replay_of_the_log(app: SalesPlanning) -> None:
    history = generate_history(app, seed=11, commands=260)
    engine = ProjectionEngine(app, all_projections(), batch_size=37)  # odd size: batches cut through commands
    engine.setup()
    engine.catch_up()
    head = engine.head()
    rnd = random.Random(5)
    first, last = history.effective_times[0], history.effective_times[-1]
    cuts: list[tuple[int, datetime | None]] = [(head, None), (head, last)]
    for _ in range(8):
        as_of = first + timedelta(seconds=rnd.uniform(0, (last - first).total_seconds()))
        cuts.append((rnd.randint(1, head), rnd.choice([None, as_of])))
    # Cuts right at and just before business facts, where an off-by-one on either clock shows.
    facts = [(n.id, app.mapper.to_domain_event(n)) for n in app.recorder.select_notifications(start=1, limit=10**6)]
    closing = [(p, e) for p, e in facts if isinstance(e, Deal.Won | Deal.Lost | Deal.Reopened | Member.Moved)]
    for position, event in rnd.sample(closing, 8):
        cuts.append((head, event.effective_at))
        cuts.append((head, event.effective_at - timedelta(microseconds=1)))
        cuts.append((position, event.effective_at))
        cuts.append((position - 1, None))
    checked = 0
    with app.database.engine.connect() as conn:
        for position, as_of in cuts:
            report = progress(conn, cut=Cut(position, as_of), now=NOW)
            assert report.position == position
            got = {row.target_id: (row.actual, row.weighted_pipeline, row.committed) for row in report.rows}
            want = expected_actuals(replay(app, position, as_of), as_of)
            assert got == want, f"cut position={position} as_of={as_of}"
            checked += sum(1 for a, _w, _c in want.values() if a)
    # The history must actually exercise the comparison: many non-zero actuals across the cuts.
    assert checked > 20


def test_known_at_turns_a_recorded_time_into_the_position_reached_then(app: SalesPlanning) -> None:
    generate_history(app, seed=3, commands=30)
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    notifications = app.recorder.select_notifications(start=1, limit=10**6)
    middle = notifications[len(notifications) // 2]
    recorded = app.mapper.to_domain_event(middle).timestamp
    with app.database.engine.connect() as conn:
        assert position_known_at(conn, recorded) >= middle.id
        assert position_known_at(conn, recorded - timedelta(days=3650)) == 0
        known = position_known_at(conn, recorded)
        later = [n for n in notifications if n.id > known]
        assert all(app.mapper.to_domain_event(n).timestamp > recorded for n in later)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_filtered_report_is_the_matching_slice_of_the_full_one(app: SalesPlanning, seed: int) -> None:
    history = generate_history(app, seed=seed, commands=80)
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    cut = Cut(engine.head())
    with app.database.engine.connect() as conn:
        full = progress(conn, cut=cut, now=NOW, filters=ProgressFilter(plan_id=history.plan_id))
        revenue = progress(conn, cut=cut, now=NOW, filters=ProgressFilter(plan_id=history.plan_id, metric="revenue"))
    assert revenue.rows == [row for row in full.rows if row.metric == "revenue"]
    assert revenue.rows

"""Queries over the progress projection's tables (``projections.folds.progress``)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from projections.folds.progress import LIVE, ProgressProjection
from projections.history import Cut

# --- the query -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressConfig:
    """Pace thresholds (actual / expected to date) and stage win probabilities."""

    ahead: Decimal = Decimal("1.10")
    on_track: Decimal = Decimal("0.95")
    at_risk: Decimal = Decimal("0.80")
    stage_probabilities: dict[str, Decimal] = field(default_factory=lambda: dict(v.DEFAULT_STAGE_PROBABILITIES))


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
    target_id: UUID
    plan_id: UUID
    parent_id: UUID | None
    metric: str
    period: str
    unit_id: UUID | None
    member_id: UUID | None
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
    as_of: datetime
    effective_cut: datetime | None
    rows: list[ProgressRow]


def pace_status(pace: Decimal | None, config: ProgressConfig) -> str:
    if pace is None:
        return "not_started"
    if pace >= config.ahead:
        return "ahead"
    if pace >= config.on_track:
        return "on_track"
    if pace >= config.at_risk:
        return "at_risk"
    return "behind"


def _ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    return None if denominator == 0 else (numerator / denominator).quantize(Decimal("0.0001"))


def _round(metric: str, value: Decimal) -> Decimal:
    if metric in v.MONEY_METRICS:
        return value.quantize(Decimal("0.01"))
    if metric == "win_rate":
        return value.quantize(Decimal("0.0001"))
    return value.quantize(Decimal("0.01")) if value != value.to_integral_value() else value.quantize(Decimal(1))


@dataclass
class _Fact:
    at: datetime
    member_id: UUID
    product_line: str | None
    region: str | None
    segment: str | None
    currency: str | None
    amount: Decimal
    kind: str  # won | lost | opened | activity | open (pipeline)
    weight: Decimal = Decimal(1)


class _Index:
    """Facts bucketed by member and by every unit above the member at the fact's time, sorted by time."""

    def __init__(self) -> None:
        self.by_owner: dict[tuple[str, UUID], list[_Fact]] = defaultdict(list)

    def add(self, fact: _Fact, units: Iterable[UUID]) -> None:
        self.by_owner[("member", fact.member_id)].append(fact)
        for unit in units:
            self.by_owner[("unit", unit)].append(fact)

    def sort(self) -> None:
        for facts in self.by_owner.values():
            facts.sort(key=lambda f: f.at)

    def select(self, kind: str, owner: UUID, start: datetime, end: datetime) -> list[_Fact]:
        facts = self.by_owner.get((kind, owner), [])
        lo = bisect.bisect_left(facts, start, key=lambda f: f.at)
        hi = bisect.bisect_left(facts, end, key=lambda f: f.at)
        return facts[lo:hi]


class Organisation:
    """The unit tree and every member's unit over time, as known at a cut."""

    def __init__(self, conn: Connection, cut: Cut, tables: ProgressProjection = LIVE) -> None:
        t = tables
        self.parent: dict[UUID, UUID | None] = {
            r.unit_id: r.parent_id for r in conn.execute(sa.select(t.units.c.unit_id, t.units.c.parent_id)
                                                          .where(cut.where(t.units)))
        }
        # Every membership row known at the cut's position, in effective order per member.
        self.memberships: dict[UUID, list[tuple[datetime, UUID]]] = defaultdict(list)
        rows = conn.execute(
            sa.select(t.members.c.member_id, t.members.c.effective_at, t.members.c.unit_id)
            .where(t.members.c.position <= cut.position)
            .order_by(t.members.c.member_id, t.members.c.position)
        )
        for row in rows:
            self.memberships[row.member_id].append((row.effective_at, row.unit_id))

    def unit_of(self, member_id: UUID, at: datetime) -> UUID | None:
        history = self.memberships.get(member_id)
        if not history:
            return None
        i = bisect.bisect_right(history, at, key=lambda h: h[0])
        return history[max(i - 1, 0)][1] if i > 0 else history[0][1]

    def ancestors(self, unit_id: UUID | None) -> list[UUID]:
        chain: list[UUID] = []
        while unit_id is not None and unit_id not in chain:
            chain.append(unit_id)
            unit_id = self.parent.get(unit_id)
        return chain

    def subtree(self, unit_id: UUID) -> set[UUID]:
        return {u for u in self.parent if unit_id in self.ancestors(u)}


def progress(
    conn: Connection, *, cut: Cut, now: datetime, filters: ProgressFilter = ProgressFilter(),
    config: ProgressConfig = ProgressConfig(), tables: ProgressProjection = LIVE,
) -> ProgressReport:
    """Every matching target's standing at ``cut`` (pace measured at ``cut.as_of`` or ``now``)."""
    t = tables
    at = cut.as_of or now
    query = sa.select(t.targets).where(cut.where(t.targets), t.targets.c.removed.is_(False))
    if filters.plan_id is not None:
        query = query.where(t.targets.c.plan_id == filters.plan_id)
    if filters.metric is not None:
        query = query.where(t.targets.c.metric == filters.metric)
    if filters.period is not None:
        query = query.where(t.targets.c.period == filters.period)
    if filters.target_ids is not None:
        query = query.where(t.targets.c.target_id.in_(list(filters.target_ids)))
    targets = list(conn.execute(query.order_by(t.targets.c.plan_id, t.targets.c.period_start,
                                               t.targets.c.metric, t.targets.c.position)).mappings())
    org = Organisation(conn, cut, t)
    if filters.member_id is not None:
        targets = [r for r in targets if r["member_id"] == filters.member_id]
    if filters.unit_id is not None:
        within = org.subtree(filters.unit_id) | {filters.unit_id}
        targets = [r for r in targets if r["unit_id"] in within
                   or (r["member_id"] is not None and org.unit_of(r["member_id"], at) in within)]
    if not targets:
        return ProgressReport(cut.position, at, cut.as_of, [])
    plan_ids = {r["plan_id"] for r in targets}
    currencies = {
        r.plan_id: r.currency for r in conn.execute(
            sa.select(t.plans.c.plan_id, t.plans.c.currency).where(cut.where(t.plans), t.plans.c.plan_id.in_(plan_ids))
        )
    }
    start = min(r["period_start"] for r in targets)
    end = max(r["period_end"] for r in targets)
    facts = _facts(conn, cut, org, _midnight(start), _midnight(end), at, config, t)
    rows = [_row(r, currencies.get(r["plan_id"], ""), facts, org, at, config) for r in targets]
    return ProgressReport(cut.position, at, cut.as_of, rows)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _facts(conn: Connection, cut: Cut, org: Organisation, start: datetime, end: datetime, at: datetime,
           config: ProgressConfig, t: ProgressProjection) -> _Index:
    index = _Index()
    d = t.deals.c
    columns = [d.owner_id, d.product_line, d.region, d.segment, d.currency, d.amount, d.stage, d.opened_at,
               d.closed_at, d.expected_close]
    closed = conn.execute(sa.select(*columns).where(
        cut.where(t.deals), d.closed_at >= start, d.closed_at < end))
    for r in closed:
        fact = _Fact(r.closed_at, r.owner_id, r.product_line, r.region, r.segment, r.currency, r.amount, r.stage)
        index.add(fact, org.ancestors(org.unit_of(r.owner_id, r.closed_at)))
    opened = conn.execute(sa.select(*columns).where(cut.where(t.deals), d.opened_at >= start, d.opened_at < end))
    for r in opened:
        fact = _Fact(r.opened_at, r.owner_id, r.product_line, r.region, r.segment, r.currency, r.amount, "opened")
        index.add(fact, org.ancestors(org.unit_of(r.owner_id, r.opened_at)))
    pipeline = conn.execute(sa.select(*columns).where(
        cut.where(t.deals), d.stage.in_(v.OPEN_STAGES), d.expected_close >= start.date(), d.expected_close < end.date()))
    for r in pipeline:
        weight = config.stage_probabilities.get(r.stage, Decimal(0))
        fact = _Fact(_midnight(r.expected_close), r.owner_id, r.product_line, r.region, r.segment, r.currency,
                     r.amount, "open", weight)
        index.add(fact, org.ancestors(org.unit_of(r.owner_id, at)))
    a = t.activities.c
    for r in conn.execute(sa.select(a.member_id, a.effective_at).where(
            cut.where(t.activities), a.effective_at >= start, a.effective_at < end)):
        fact = _Fact(r.effective_at, r.member_id, None, None, None, None, Decimal(1), "activity")
        index.add(fact, org.ancestors(org.unit_of(r.member_id, r.effective_at)))
    index.sort()
    return index


def _matches(target: Any, fact: _Fact) -> bool:
    return all(
        target[k] is None or (getattr(fact, k) is not None and target[k] == getattr(fact, k))
        for k in ("product_line", "region", "segment")
    )


def _row(target: Any, currency: str, index: _Index, org: Organisation, at: datetime, config: ProgressConfig
         ) -> ProgressRow:
    metric: str = target["metric"]
    period = v.Period.parse(target["period"])
    owner_kind, owner = ("member", target["member_id"]) if target["member_id"] else ("unit", target["unit_id"])
    selected: Callable[[str], list[_Fact]] = lambda kind: [  # noqa: E731
        f for f in index.select(owner_kind, owner, period.start_at, period.end_at)
        if f.kind == kind and _matches(target, f)
    ]
    money_only: Callable[[list[_Fact]], list[_Fact]] = lambda fs: [f for f in fs if f.currency == currency]  # noqa: E731
    won = selected("won")
    weighted: Decimal | None = None
    if metric == "revenue":
        actual = sum((f.amount for f in money_only(won)), Decimal(0))
        weighted = sum((f.amount * f.weight for f in money_only(selected("open"))), Decimal(0))
    elif metric == "deals_won":
        actual = Decimal(len(won))
        weighted = sum((f.weight for f in selected("open")), Decimal(0))
    elif metric == "new_deals":
        actual = Decimal(len(selected("opened")))
    elif metric == "activities":
        actual = Decimal(len(selected("activity")))
    elif metric == "win_rate":
        closed = len(won) + len(selected("lost"))
        actual = Decimal(len(won)) / closed if closed else Decimal(0)
    else:  # average_order_value
        won_money = money_only(won)
        actual = sum((f.amount for f in won_money), Decimal(0)) / len(won_money) if won_money else Decimal(0)
    actual = _round(metric, actual)
    committed: Decimal = target["committed"]
    stretch: Decimal | None = target["stretch"]
    if metric in v.RATIO_METRICS:
        expected = committed
        pace = _ratio(actual, committed) if period.start_at <= at else None
    else:
        share = period.elapsed_share(at)
        expected = _round(metric, committed * share)
        pace = _ratio(actual, committed * share) if share > 0 else None
    gap = committed - actual
    forecast = None if weighted is None else _round(metric, actual + weighted)
    return ProgressRow(
        target_id=target["target_id"], plan_id=target["plan_id"], parent_id=target["parent_id"], metric=metric,
        period=target["period"], unit_id=target["unit_id"], member_id=target["member_id"],
        product_line=target["product_line"], region=target["region"], segment=target["segment"],
        currency=currency, committed=committed, stretch=stretch, actual=actual,
        attainment=_ratio(actual, committed), stretch_attainment=_ratio(actual, stretch) if stretch else None,
        expected_to_date=expected, pace=pace, pace_status=pace_status(pace, config) if committed else "no_target",
        gap=gap, weighted_pipeline=None if weighted is None else _round(metric, weighted), forecast=forecast,
        coverage=_ratio(weighted, gap) if weighted is not None and gap > 0 else None,
    )

"""Progress: where every target stands against plan and pace, on both clocks.

The projection keeps the history of every unit, member, plan, target, deal and activity
(one row per change, see ``projections.history``). A progress query takes a cut — events
recorded up to a log position and effective up to a time — reads the rows valid at that cut
and computes, per target: actual, attainment, expected to date, pace, gap, weighted open
pipeline, forecast and coverage. "Now" and "31 March as known on 31 March" are the same
query with different cut-offs.

Actuals follow DOMAIN.md: revenue is the sum of won amounts, deals won and new deals count
deals closed won / opened in the period, activities count logged activities; a deal counts
for the unit its owner belonged to when it was won (opened, for new deals), so moving a
member mid-quarter never rewrites history.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.deal import Activity, Deal
from domain.organisation import Member, Unit
from domain.plan import Plan
from projections.engine import Envelope, Projection
from projections.folds import evolve_member, evolve_unit
from projections.history import Cut, HistoryWriter, history_columns
from projections.sqltypes import Money, UTCDateTime

# --- pure folds: (state before, event) -> state after --------------------------------------

State = dict[str, Any]


def evolve_plan(state: State | None, event: Any) -> State:
    if isinstance(event, Plan.Drafted):
        return {"name": event.name, "span": event.span, "currency": event.currency, "unit_id": event.unit_id,
                "status": "draft", "published_version": 0}
    assert state is not None
    if isinstance(event, Plan.Published):
        return {**state, "status": "published", "published_version": event.version}
    if isinstance(event, Plan.Closed):
        return {**state, "status": "closed"}
    return state


def new_target(plan_id: UUID, metric: str, period: str, scope: dict[str, Any], committed: Decimal,
               stretch: Decimal | None, parent_id: UUID | None) -> State:
    p = v.Period.parse(period)
    return {
        "plan_id": plan_id, "metric": metric, "period": period, "period_start": p.start, "period_end": p.end,
        "unit_id": scope.get("unit_id"), "member_id": scope.get("member_id"),
        "product_line": scope.get("product_line"), "region": scope.get("region"), "segment": scope.get("segment"),
        "committed": committed, "stretch": stretch, "parent_id": parent_id, "removed": False,
    }


def evolve_target(state: State, event: Any) -> State:
    if isinstance(event, Plan.TargetRevised):
        return {**state, "committed": event.committed, "stretch": event.stretch}
    if isinstance(event, Plan.TargetRemoved):
        return {**state, "removed": True}
    raise TypeError(f"unexpected target event {type(event).__qualname__}")


def evolve_deal(state: State | None, event: Any) -> State:
    if isinstance(event, Deal.Opened):
        return {
            "name": event.name, "owner_id": event.owner_id, "account_id": event.account_id,
            "product_id": event.product_id, "product_line": event.product_line, "region": event.region,
            "segment": event.segment, "currency": event.currency, "amount": event.amount, "stage": event.stage,
            "expected_close": event.expected_close, "opened_at": event.effective_at, "closed_at": None,
        }
    assert state is not None
    if isinstance(event, Deal.StageChanged):
        return {**state, "stage": event.stage}
    if isinstance(event, Deal.AmountChanged):
        return {**state, "amount": event.amount}
    if isinstance(event, Deal.ExpectedCloseChanged):
        return {**state, "expected_close": event.expected_close}
    if isinstance(event, Deal.Reassigned):
        return {**state, "owner_id": event.owner_id}
    if isinstance(event, Deal.Won):
        return {**state, "stage": "won", "amount": event.amount, "owner_id": event.owner_id,
                "closed_at": event.effective_at}
    if isinstance(event, Deal.Lost):
        return {**state, "stage": "lost", "closed_at": event.effective_at}
    if isinstance(event, Deal.Reopened):
        return {**state, "stage": event.stage, "closed_at": None}
    raise TypeError(f"unexpected deal event {type(event).__qualname__}")


def evolve_activity(event: Activity.Logged) -> State:
    return {"member_id": event.member_id, "kind": event.kind, "deal_id": event.deal_id}


# --- the view ------------------------------------------------------------------------------

UNIT_EVENTS = (Unit.Added, Unit.Renamed, Unit.Moved, Unit.Deactivated)
MEMBER_EVENTS = (Member.Added, Member.Renamed, Member.Moved, Member.Deactivated)
PLAN_EVENTS = (Plan.Drafted, Plan.Published, Plan.Closed)
TARGET_EVENTS = (Plan.TargetSet, Plan.TargetDecomposed, Plan.TargetRevised, Plan.TargetRemoved)
CREATION_EVENTS = (Unit.Added, Member.Added, Plan.Drafted, Deal.Opened)
DEAL_EVENTS = (Deal.Opened, Deal.StageChanged, Deal.AmountChanged, Deal.ExpectedCloseChanged, Deal.Reassigned,
               Deal.Won, Deal.Lost, Deal.Reopened)


class ProgressProjection(Projection):
    """Answers "where do we stand": every target's actual, pace and forecast, at any cut."""

    name = "progress"
    fold_version = 1
    topics = (*UNIT_EVENTS, *MEMBER_EVENTS, *PLAN_EVENTS, *TARGET_EVENTS, *DEAL_EVENTS, Activity.Logged)

    def define_tables(self) -> None:
        self.units = self.table(
            "progress_units", *history_columns("unit_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("parent_id", sa.Uuid, nullable=True),
            sa.Column("active", sa.Boolean, nullable=False),
        )
        self.members = self.table(
            "progress_members", *history_columns("member_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("role", sa.String(20), nullable=False),
            sa.Column("unit_id", sa.Uuid, nullable=False),
            sa.Column("active", sa.Boolean, nullable=False),
        )
        self.plans = self.table(
            "progress_plans", *history_columns("plan_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("span", sa.String(10), nullable=False),
            sa.Column("currency", sa.String(3), nullable=False),
            sa.Column("unit_id", sa.Uuid, nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("published_version", sa.Integer, nullable=False),
        )
        self.targets = self.table(
            "progress_targets", *history_columns("target_id"),
            sa.Column("plan_id", sa.Uuid, nullable=False),
            sa.Column("metric", sa.String(30), nullable=False),
            sa.Column("period", sa.String(10), nullable=False),
            sa.Column("period_start", sa.Date, nullable=False),
            sa.Column("period_end", sa.Date, nullable=False),
            sa.Column("unit_id", sa.Uuid, nullable=True),
            sa.Column("member_id", sa.Uuid, nullable=True),
            sa.Column("product_line", sa.String(100), nullable=True),
            sa.Column("region", sa.String(100), nullable=True),
            sa.Column("segment", sa.String(100), nullable=True),
            sa.Column("committed", Money, nullable=False),
            sa.Column("stretch", Money, nullable=True),
            sa.Column("parent_id", sa.Uuid, nullable=True),
            sa.Column("removed", sa.Boolean, nullable=False),
            indexes=[("plan_id", "position")],
        )
        self.deals = self.table(
            "progress_deals", *history_columns("deal_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("owner_id", sa.Uuid, nullable=False),
            sa.Column("account_id", sa.Uuid, nullable=True),
            sa.Column("product_id", sa.Uuid, nullable=False),
            sa.Column("product_line", sa.String(200), nullable=False),
            sa.Column("region", sa.String(200), nullable=False),
            sa.Column("segment", sa.String(200), nullable=False),
            sa.Column("currency", sa.String(3), nullable=False),
            sa.Column("amount", Money, nullable=False),
            sa.Column("stage", sa.String(20), nullable=False),
            sa.Column("expected_close", sa.Date, nullable=False),
            sa.Column("opened_at", UTCDateTime, nullable=False),
            sa.Column("closed_at", UTCDateTime, nullable=True),
            indexes=[("closed_at",), ("opened_at",), ("expected_close",)],
        )
        self.activities = self.table(
            "progress_activities", *history_columns("activity_id"),
            sa.Column("member_id", sa.Uuid, nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("deal_id", sa.Uuid, nullable=True),
            indexes=[("effective_at",)],
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        units = HistoryWriter(conn, self.units, "unit_id")
        members = HistoryWriter(conn, self.members, "member_id")
        plans = HistoryWriter(conn, self.plans, "plan_id")
        targets = HistoryWriter(conn, self.targets, "target_id")
        deals = HistoryWriter(conn, self.deals, "deal_id")
        activities = HistoryWriter(conn, self.activities, "activity_id")
        self._prefetch(batch, units, members, plans, targets, deals)
        for envelope in batch:
            e = envelope.event
            stamp = (envelope.position, e.effective_at, envelope.recorded_at)
            if isinstance(e, UNIT_EVENTS):
                units.append(e.originator_id, evolve_unit(_before(units, e), e), *stamp)
            elif isinstance(e, MEMBER_EVENTS):
                members.append(e.originator_id, evolve_member(_before(members, e), e), *stamp)
            elif isinstance(e, PLAN_EVENTS):
                plans.append(e.originator_id, evolve_plan(_before(plans, e), e), *stamp)
            elif isinstance(e, Plan.TargetSet):
                targets.append(e.target_id, new_target(e.originator_id, e.metric, e.period, e.scope, e.committed,
                                                       e.stretch, e.parent_id), *stamp)
            elif isinstance(e, Plan.TargetDecomposed):
                parent = targets.current(e.parent_id)
                assert parent is not None, f"decomposed target {e.parent_id} was never set"
                for child in e.children:
                    targets.append(child["target_id"], new_target(
                        e.originator_id, parent["metric"], child["period"], child["scope"], child["committed"],
                        child["stretch"], e.parent_id), *stamp)
            elif isinstance(e, Plan.TargetRevised):
                targets.append(e.target_id, evolve_target(_known(targets, e.target_id), e), *stamp)
            elif isinstance(e, Plan.TargetRemoved):
                for target_id in e.removed_ids:
                    targets.append(target_id, evolve_target(_known(targets, target_id), e), *stamp)
            elif isinstance(e, DEAL_EVENTS):
                deals.append(e.originator_id, evolve_deal(_before(deals, e), e), *stamp)
            elif isinstance(e, Activity.Logged):
                activities.append(e.originator_id, evolve_activity(e), *stamp)
        for writer in (units, members, plans, targets, deals, activities):
            writer.flush()

    @staticmethod
    def _prefetch(batch: Sequence[Envelope], units: HistoryWriter, members: HistoryWriter, plans: HistoryWriter,
                  targets: HistoryWriter, deals: HistoryWriter) -> None:
        ids: dict[str, set[Any]] = defaultdict(set)
        for envelope in batch:
            e = envelope.event
            if isinstance(e, UNIT_EVENTS) and not isinstance(e, Unit.Added):
                ids["units"].add(e.originator_id)
            elif isinstance(e, MEMBER_EVENTS) and not isinstance(e, Member.Added):
                ids["members"].add(e.originator_id)
            elif isinstance(e, PLAN_EVENTS) and not isinstance(e, Plan.Drafted):
                ids["plans"].add(e.originator_id)
            elif isinstance(e, Plan.TargetDecomposed):
                ids["targets"].add(e.parent_id)
            elif isinstance(e, Plan.TargetRevised):
                ids["targets"].add(e.target_id)
            elif isinstance(e, Plan.TargetRemoved):
                ids["targets"].update(e.removed_ids)
            elif isinstance(e, DEAL_EVENTS) and not isinstance(e, Deal.Opened):
                ids["deals"].add(e.originator_id)
        units.prefetch(ids["units"])
        members.prefetch(ids["members"])
        plans.prefetch(ids["plans"])
        targets.prefetch(ids["targets"])
        deals.prefetch(ids["deals"])


def _before(writer: HistoryWriter, event: Any) -> State | None:
    """The entity's state before ``event``: nothing to look up for the event that creates it."""
    if isinstance(event, CREATION_EVENTS):
        return None
    return writer.current(event.originator_id)


def _known(writer: HistoryWriter, entity_id: Any) -> State:
    state = writer.current(entity_id)
    assert state is not None, f"{writer.table.name}: {entity_id} was never created"
    return state


LIVE = ProgressProjection()
"""The live tables, for queries."""


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

"""Queries over the pipeline projection's tables (``projections.folds.pipeline``)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.errors import ValidationError
from domain.task import TASK_STATUSES
from projections.folds.pipeline import LIVE, PipelineProjection
from projections.history import Cut

# --- the queries -----------------------------------------------------------------------------

DEAL_STATUSES: Final = ("open", "won", "lost")
_TWO_PLACES: Final = Decimal("0.01")
_SECONDS_PER_DAY: Final = Decimal(86400)


@dataclass(frozen=True)
class StageStay:
    """One stay of a deal in a stage; ``left_at`` is None while the deal was still there at the cut."""

    stage: str
    reason: str
    entered_at: datetime
    left_at: datetime | None
    days: Decimal  # to left_at, or to ``at`` while open; two places


@dataclass(frozen=True)
class PipelineDeal:
    """A deal as it stood at a cut, with every stay in a stage visible at that cut."""

    deal_id: UUID
    name: str
    owner_id: UUID
    account_id: UUID | None
    product_id: UUID
    product_line: str
    region: str
    segment: str
    currency: str
    amount: Decimal
    stage: str
    status: str  # open | won | lost
    expected_close: date
    opened_at: datetime
    closed_at: datetime | None
    stage_entered_at: datetime
    last_stage_change_at: datetime | None  # None while the deal is in the stage it opened in
    days_in_stage: Decimal
    position: int  # log position of the change that produced this state
    changed_at: datetime  # effective time of that change
    stages: tuple[StageStay, ...]


@dataclass(frozen=True)
class StageSummaryRow:
    """Deals in one stage and currency at a cut (amounts in different currencies never add up)."""

    currency: str
    stage: str
    count: int
    amount: Decimal
    weighted_amount: Decimal
    average_days_in_stage: Decimal | None  # of the current stays, measured at ``at``; None when empty


@dataclass(frozen=True)
class TaskView:
    task_id: UUID
    title: str
    assignee_id: UUID
    due: date
    plan_id: UUID | None
    target_id: UUID | None
    status: str
    progress: int
    created_at: datetime
    completed_at: datetime | None
    overdue: bool
    position: int


@dataclass(frozen=True)
class MemberTaskSummary:
    member_id: UUID
    name: str
    unit_id: UUID | None  # the member's unit at ``at``
    open: int
    overdue: int
    done: int
    cancelled: int


def pipeline_deals(
    conn: Connection, *, cut: Cut, at: datetime, owner_id: UUID | None = None, unit_id: UUID | None = None,
    stage: str | None = None, status: str | None = None, expected_close_from: date | None = None,
    expected_close_to: date | None = None, limit: int = 100, after: UUID | None = None,
    tables: PipelineProjection = LIVE,
) -> list[PipelineDeal]:
    """Deals at ``cut`` ordered by expected close then id; ``after`` is the last deal of the previous page.

    ``unit_id`` selects deals whose owner was in that unit's subtree (at ``at``, or when the
    deal closed); the expected-close bounds are inclusive.
    """
    _check_at(cut, at)
    if limit < 1:
        raise ValidationError("query.limit", "limit must be at least 1", "limit")
    t = tables
    d = t.deals.c
    query = sa.select(t.deals).where(cut.where(t.deals))
    if owner_id is not None:
        query = query.where(d.owner_id == owner_id)
    if stage is not None:
        query = query.where(d.stage == v.stage(stage))
    if status is not None:
        query = query.where(_status_clause(t, status))
    if expected_close_from is not None:
        query = query.where(d.expected_close >= expected_close_from)
    if expected_close_to is not None:
        query = query.where(d.expected_close <= expected_close_to)
    if after is not None:
        key = conn.execute(sa.select(d.expected_close).where(cut.where(t.deals), d.deal_id == after)).scalar()
        if key is None:
            raise ValidationError("pipeline.after_unknown", f"deal {after} is not known at this cut", "after")
        query = query.where(sa.or_(d.expected_close > key, sa.and_(d.expected_close == key, d.deal_id > after)))
    query = query.order_by(d.expected_close, d.deal_id)
    if unit_id is None:
        rows = list(conn.execute(query.limit(limit)).mappings())
    else:
        org = Organisation(conn, cut, at, t)
        within = org.subtree(unit_id)
        owners = org.members_ever_in(within)
        if not owners:
            return []
        # The SQL filter keeps only possible owners; the exact test depends on each deal's close time.
        result = conn.execute(query.where(d.owner_id.in_(sorted(owners)))).mappings()
        rows = []
        try:
            for row in result:
                if org.unit_of(row["owner_id"], row["closed_at"] or at) in within:
                    rows.append(row)
                    if len(rows) == limit:
                        break
        finally:
            result.close()
    return _with_stays(conn, rows, cut, at, t)


def deal_detail(
    conn: Connection, deal_id: UUID, *, cut: Cut, at: datetime, tables: PipelineProjection = LIVE
) -> PipelineDeal | None:
    """One deal as it stood at ``cut`` with its stage history; None if it was not known there."""
    _check_at(cut, at)
    t = tables
    rows = list(conn.execute(
        sa.select(t.deals).where(cut.where(t.deals), t.deals.c.deal_id == deal_id)
    ).mappings())
    deals = _with_stays(conn, rows, cut, at, t)
    return deals[0] if deals else None


def stage_summary(
    conn: Connection, *, cut: Cut, at: datetime, unit_id: UUID | None = None,
    probabilities: Mapping[str, Decimal] = v.DEFAULT_STAGE_PROBABILITIES, tables: PipelineProjection = LIVE,
) -> list[StageSummaryRow]:
    """Per currency and stage: how many deals, their amount, weighted amount and average days in the stage."""
    _check_at(cut, at)
    t = tables
    d = t.deals.c
    query = sa.select(d.owner_id, d.currency, d.amount, d.stage, d.stage_entered_at, d.closed_at).where(
        cut.where(t.deals))
    org = Organisation(conn, cut, at, t) if unit_id is not None else None
    within: set[UUID] = set()
    if org is not None and unit_id is not None:
        within = org.subtree(unit_id)
        owners = org.members_ever_in(within)
        if not owners:
            return []
        query = query.where(d.owner_id.in_(sorted(owners)))
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in conn.execute(query):
        if org is None or org.unit_of(row.owner_id, row.closed_at or at) in within:
            groups[(row.currency, row.stage)].append(row)
    result = []
    for currency in sorted({c for c, _ in groups}):
        for stage in v.STAGES:
            deals = groups.get((currency, stage), [])
            amount = sum((r.amount for r in deals), Decimal(0))
            days = sum((_days(at - r.stage_entered_at) for r in deals), Decimal(0))
            result.append(StageSummaryRow(
                currency=currency, stage=stage, count=len(deals), amount=amount,
                weighted_amount=(amount * probabilities.get(stage, Decimal(0))).quantize(_TWO_PLACES),
                average_days_in_stage=(days / len(deals)).quantize(_TWO_PLACES) if deals else None,
            ))
    return result


def tasks(
    conn: Connection, *, cut: Cut, at: datetime, assignee_id: UUID | None = None, unit_id: UUID | None = None,
    status: str | None = None, overdue_only: bool = False, tables: PipelineProjection = LIVE,
) -> list[TaskView]:
    """Tasks at ``cut`` ordered by due date; overdue = open and due before ``at.date()``.

    ``unit_id`` selects tasks whose assignee was in that unit's subtree at ``at``.
    """
    _check_at(cut, at)
    t = tables
    c = t.tasks.c
    today = at.date()
    query = sa.select(t.tasks).where(cut.where(t.tasks))
    if assignee_id is not None:
        query = query.where(c.assignee_id == assignee_id)
    if status is not None:
        query = query.where(c.status == _task_status(status))
    if overdue_only:
        query = query.where(c.status == "open", c.due < today)
    rows = list(conn.execute(query.order_by(c.due, c.task_id)).mappings())
    if unit_id is not None:
        org = Organisation(conn, cut, at, t)
        within = org.subtree(unit_id)
        rows = [r for r in rows if org.unit_of(r["assignee_id"], at) in within]
    return [
        TaskView(
            task_id=r["task_id"], title=r["title"], assignee_id=r["assignee_id"], due=r["due"], plan_id=r["plan_id"],
            target_id=r["target_id"], status=r["status"], progress=r["progress"], created_at=r["created_at"],
            completed_at=r["completed_at"], overdue=r["status"] == "open" and r["due"] < today, position=r["position"],
        )
        for r in rows
    ]


def task_summary(
    conn: Connection, *, cut: Cut, at: datetime, unit_id: UUID | None = None, tables: PipelineProjection = LIVE
) -> list[MemberTaskSummary]:
    """Per member with tasks at ``cut``: how many are open, overdue (at ``at``), done and cancelled."""
    _check_at(cut, at)
    t = tables
    c = t.tasks.c
    today = at.date()
    counts: dict[UUID, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("open", "overdue", "done", "cancelled"), 0))
    for row in conn.execute(sa.select(c.assignee_id, c.status, c.due).where(cut.where(t.tasks))):
        tally = counts[row.assignee_id]
        tally[row.status] += 1
        if row.status == "open" and row.due < today:
            tally["overdue"] += 1
    org = Organisation(conn, cut, at, t)
    within = org.subtree(unit_id) if unit_id is not None else None
    m = t.members.c
    names = {
        r.member_id: r.name for r in conn.execute(
            sa.select(m.member_id, m.name).where(cut.where(t.members), m.member_id.in_(sorted(counts)))
        )
    } if counts else {}
    result = []
    for member_id, tally in counts.items():
        unit = org.unit_of(member_id, at)
        if within is not None and unit not in within:
            continue
        result.append(MemberTaskSummary(member_id=member_id, name=names.get(member_id, ""), unit_id=unit, **tally))
    return sorted(result, key=lambda s: (s.name, s.member_id))


# --- helpers ---------------------------------------------------------------------------------


def _check_at(cut: Cut, at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValidationError("query.at_naive", "at must carry a timezone offset", "at")
    if cut.as_of is not None and at < cut.as_of:
        raise ValidationError("query.at_before_cut", "at must not precede the cut's effective time", "at")


def _status_clause(t: PipelineProjection, status: str) -> sa.ColumnElement[bool]:
    if status not in DEAL_STATUSES:
        raise ValidationError("pipeline.status", f"status must be one of {', '.join(DEAL_STATUSES)}", "status",
                              allowed=list(DEAL_STATUSES))
    return t.deals.c.stage.in_(v.OPEN_STAGES) if status == "open" else t.deals.c.stage == status


def _task_status(status: str) -> str:
    if status not in TASK_STATUSES:
        raise ValidationError("task.status", f"status must be one of {', '.join(TASK_STATUSES)}", "status",
                              allowed=list(TASK_STATUSES))
    return status


def _days(span: timedelta) -> Decimal:
    """Exact days in ``span``; a stay that begins after ``at`` (cut without effective bound) has not begun."""
    seconds = Decimal(span.days * 86400 + span.seconds) + Decimal(span.microseconds).scaleb(-6)
    return max(seconds, Decimal(0)) / _SECONDS_PER_DAY


def _stays_at(cut: Cut, table: sa.Table) -> sa.ColumnElement[bool]:
    c = table.c
    if cut.as_of is None:
        return c.entered_position <= cut.position
    return sa.and_(c.entered_position <= cut.position, c.entered_at <= cut.as_of)


def _stay(row: Any, cut: Cut, at: datetime) -> StageStay:
    left = row["left_position"] is not None and row["left_position"] <= cut.position and (
        cut.as_of is None or row["left_at"] <= cut.as_of)
    left_at: datetime | None = row["left_at"] if left else None
    return StageStay(stage=row["stage"], reason=row["reason"], entered_at=row["entered_at"], left_at=left_at,
                     days=_days((left_at or at) - row["entered_at"]).quantize(_TWO_PLACES))


def _with_stays(conn: Connection, rows: Sequence[Any], cut: Cut, at: datetime, t: PipelineProjection
                ) -> list[PipelineDeal]:
    s = t.stays.c
    ids = [r["deal_id"] for r in rows]
    stays: dict[UUID, list[StageStay]] = defaultdict(list)
    for i in range(0, len(ids), 500):
        for stay in conn.execute(
            sa.select(t.stays).where(s.deal_id.in_(ids[i : i + 500]), _stays_at(cut, t.stays))
            .order_by(s.deal_id, s.entered_position)
        ).mappings():
            stays[stay["deal_id"]].append(_stay(stay, cut, at))
    return [
        PipelineDeal(
            deal_id=r["deal_id"], name=r["name"], owner_id=r["owner_id"], account_id=r["account_id"],
            product_id=r["product_id"], product_line=r["product_line"], region=r["region"], segment=r["segment"],
            currency=r["currency"], amount=r["amount"], stage=r["stage"],
            status=r["stage"] if r["stage"] in v.CLOSED_STAGES else "open", expected_close=r["expected_close"],
            opened_at=r["opened_at"], closed_at=r["closed_at"], stage_entered_at=r["stage_entered_at"],
            last_stage_change_at=r["last_stage_change_at"],
            days_in_stage=_days(at - r["stage_entered_at"]).quantize(_TWO_PLACES), position=r["position"],
            changed_at=r["effective_at"], stages=tuple(stays[r["deal_id"]]),
        )
        for r in rows
    ]


class Organisation:
    """The unit tree at ``at``, every member's unit over time and the names, as visible at a cut."""

    def __init__(self, conn: Connection, cut: Cut, at: datetime, tables: PipelineProjection | None = None) -> None:
        t = tables or LIVE
        tree_cut = Cut(cut.position, at if cut.as_of is None else min(at, cut.as_of))
        self.children: dict[UUID, list[UUID]] = defaultdict(list)
        self.unit_names: dict[UUID, str] = {}
        for row in conn.execute(sa.select(t.units.c.unit_id, t.units.c.parent_id, t.units.c.name)
                                .where(tree_cut.where(t.units))):
            self.unit_names[row.unit_id] = row.name
            if row.parent_id is not None:
                self.children[row.parent_id].append(row.unit_id)
        m = t.members.c
        visible = m.position <= cut.position if cut.as_of is None else sa.and_(
            m.position <= cut.position, m.effective_at <= cut.as_of)
        self.memberships: dict[UUID, list[tuple[datetime, UUID]]] = defaultdict(list)
        self.member_names: dict[UUID, str] = {}
        for row in conn.execute(sa.select(m.member_id, m.effective_at, m.unit_id, m.name).where(visible)
                                .order_by(m.member_id, m.position)):
            self.memberships[row.member_id].append((row.effective_at, row.unit_id))
            self.member_names[row.member_id] = row.name

    def unit_of(self, member_id: UUID, when: datetime) -> UUID | None:
        history = self.memberships.get(member_id)
        if not history:
            return None
        i = bisect.bisect_right(history, when, key=lambda h: h[0])
        # Before the member was added (back-dated facts) they count in their first unit.
        return history[i - 1][1] if i > 0 else history[0][1]

    def subtree(self, unit_id: UUID) -> set[UUID]:
        found = {unit_id}
        stack = [unit_id]
        while stack:
            for child in self.children.get(stack.pop(), []):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def members_ever_in(self, units: set[UUID]) -> set[UUID]:
        return {member for member, history in self.memberships.items() if any(u in units for _, u in history)}

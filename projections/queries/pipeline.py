"""Pipeline and tasks: where every deal stands and how long it sat in each stage; who owes which task.

Deals are read from the ledger (``projections.folds.progress``), their stays in each stage and
the tasks from the pipeline projection (``projections.folds.pipeline``), the organisation from
the measurement core. Every query takes a cut and reads only what was visible at it.

Queries never read the clock: where time matters they take ``at``, the business instant the
question is asked at. Stays still open at the cut are measured up to ``at``, a task is
overdue when it is open and due before ``at.date()``, and a member belongs to the unit they
were in at ``at``. A closed deal belongs to the unit its owner was in when it closed (a deal
won in March counts for the unit the rep was in in March), as every question places it.
``at`` may not precede the cut's effective time: stays entered in between would have
negative lengths.
"""

from __future__ import annotations

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
from projections.folds.catalogue import LIVE as CATALOGUE
from projections.folds.pipeline import LIVE as PIPELINE
from projections.folds.progress import LIVE as LEDGER
from projections.history import Cut
from projections.measure.organisation import Organisation

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
    owner_name: str | None
    unit_id: UUID | None  # where the deal counts: its owner's unit when it closed, or at ``at``
    unit_name: str | None
    account_id: UUID | None
    account_name: str | None
    product_id: UUID
    product_name: str | None
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
) -> list[PipelineDeal]:
    """Deals at ``cut`` ordered by expected close then id; ``after`` is the last deal of the previous page.

    ``unit_id`` selects deals whose owner was in that unit's subtree (at ``at``, or when the
    deal closed); the expected-close bounds are inclusive.
    """
    _check_at(cut, at)
    if limit < 1:
        raise ValidationError("query.limit", "limit must be at least 1", "limit")
    deals = LEDGER.deals
    d = deals.c
    query = sa.select(deals).where(cut.where(deals))
    if owner_id is not None:
        query = query.where(d.owner_id == owner_id)
    if stage is not None:
        query = query.where(d.stage == v.stage(stage))
    if status is not None:
        query = query.where(_status_clause(status))
    if expected_close_from is not None:
        query = query.where(d.expected_close >= expected_close_from)
    if expected_close_to is not None:
        query = query.where(d.expected_close <= expected_close_to)
    if after is not None:
        key = conn.execute(sa.select(d.expected_close).where(cut.where(deals), d.deal_id == after)).scalar()
        if key is None:
            raise ValidationError("pipeline.after_unknown", f"deal {after} is not known at this cut", "after")
        query = query.where(sa.or_(d.expected_close > key, sa.and_(d.expected_close == key, d.deal_id > after)))
    query = query.order_by(d.expected_close, d.deal_id)
    if unit_id is None:
        rows = list(conn.execute(query.limit(limit)).mappings())
    else:
        org = Organisation(conn, cut)
        within = org.tree.subtree(unit_id)
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
    return _with_stays(conn, rows, cut, at)


def deal_detail(conn: Connection, deal_id: UUID, *, cut: Cut, at: datetime) -> PipelineDeal | None:
    """One deal as it stood at ``cut`` with its stage history; None if it was not known there."""
    _check_at(cut, at)
    rows = list(conn.execute(
        sa.select(LEDGER.deals).where(cut.where(LEDGER.deals), LEDGER.deals.c.deal_id == deal_id)
    ).mappings())
    deals = _with_stays(conn, rows, cut, at)
    return deals[0] if deals else None


def stage_summary(
    conn: Connection, *, cut: Cut, at: datetime, unit_id: UUID | None = None,
    probabilities: Mapping[str, Decimal] = v.DEFAULT_STAGE_PROBABILITIES,
) -> list[StageSummaryRow]:
    """Per currency and stage: how many deals, their amount, weighted amount and average days in the stage."""
    _check_at(cut, at)
    d = LEDGER.deals.c
    query = sa.select(d.owner_id, d.currency, d.amount, d.stage, d.stage_entered_at, d.closed_at).where(
        cut.where(LEDGER.deals))
    org = Organisation(conn, cut) if unit_id is not None else None
    within: set[UUID] = set()
    if org is not None and unit_id is not None:
        within = org.tree.subtree(unit_id)
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
    status: str | None = None, overdue_only: bool = False,
) -> list[TaskView]:
    """Tasks at ``cut`` ordered by due date; overdue = open and due before ``at.date()``.

    ``unit_id`` selects tasks whose assignee was in that unit's subtree at ``at``.
    """
    _check_at(cut, at)
    c = PIPELINE.tasks.c
    today = at.date()
    query = sa.select(PIPELINE.tasks).where(cut.where(PIPELINE.tasks))
    if assignee_id is not None:
        query = query.where(c.assignee_id == assignee_id)
    if status is not None:
        query = query.where(c.status == _task_status(status))
    if overdue_only:
        query = query.where(c.status == "open", c.due < today)
    rows = list(conn.execute(query.order_by(c.due, c.task_id)).mappings())
    if unit_id is not None:
        org = Organisation(conn, cut, {r["assignee_id"] for r in rows})
        within = org.tree.subtree(unit_id)
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
    conn: Connection, *, cut: Cut, at: datetime, unit_id: UUID | None = None
) -> list[MemberTaskSummary]:
    """Per member with tasks at ``cut``: how many are open, overdue (at ``at``), done and cancelled."""
    _check_at(cut, at)
    c = PIPELINE.tasks.c
    today = at.date()
    counts: dict[UUID, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("open", "overdue", "done", "cancelled"), 0))
    for row in conn.execute(sa.select(c.assignee_id, c.status, c.due).where(cut.where(PIPELINE.tasks))):
        tally = counts[row.assignee_id]
        tally[row.status] += 1
        if row.status == "open" and row.due < today:
            tally["overdue"] += 1
    org = Organisation(conn, cut, counts)
    within = org.tree.subtree(unit_id) if unit_id is not None else None
    result = []
    for member_id, tally in counts.items():
        unit = org.unit_of(member_id, at)
        if within is not None and unit not in within:
            continue
        result.append(MemberTaskSummary(member_id=member_id, name=org.member_name(member_id) or "", unit_id=unit,
                                        **tally))
    return sorted(result, key=lambda s: (s.name, s.member_id))


# --- helpers ---------------------------------------------------------------------------------


def _check_at(cut: Cut, at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValidationError("query.at_naive", "at must carry a timezone offset", "at")
    if cut.as_of is not None and at < cut.as_of:
        raise ValidationError("query.at_before_cut", "at must not precede the cut's effective time", "at")


def _status_clause(status: str) -> sa.ColumnElement[bool]:
    if status not in DEAL_STATUSES:
        raise ValidationError("pipeline.status", f"status must be one of {', '.join(DEAL_STATUSES)}", "status",
                              allowed=list(DEAL_STATUSES))
    stage = LEDGER.deals.c.stage
    return stage.in_(v.OPEN_STAGES) if status == "open" else stage == status


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


def _with_stays(conn: Connection, rows: Sequence[Any], cut: Cut, at: datetime) -> list[PipelineDeal]:
    stays_table = PIPELINE.stays
    s = stays_table.c
    ids = [r["deal_id"] for r in rows]
    stays: dict[UUID, list[StageStay]] = defaultdict(list)
    for i in range(0, len(ids), 500):
        for stay in conn.execute(
            sa.select(stays_table).where(s.deal_id.in_(ids[i : i + 500]), _stays_at(cut, stays_table))
            .order_by(s.deal_id, s.entered_position)
        ).mappings():
            stays[stay["deal_id"]].append(_stay(stay, cut, at))
    org = Organisation(conn, cut, {r["owner_id"] for r in rows})
    # Labels are the names as known at the position, like every read's.
    labels = Cut(cut.position)
    products = _names(conn, CATALOGUE.products, "product_id", labels, {r["product_id"] for r in rows})
    accounts = _names(conn, CATALOGUE.accounts, "account_id", labels, {r["account_id"] for r in rows} - {None})
    deals = []
    for r in rows:
        unit = org.unit_of(r["owner_id"], r["closed_at"] or at)
        deals.append(PipelineDeal(
            deal_id=r["deal_id"], name=r["name"], owner_id=r["owner_id"], owner_name=org.member_name(r["owner_id"]),
            unit_id=unit, unit_name=org.tree.name(unit), account_id=r["account_id"],
            account_name=accounts.get(r["account_id"]) if r["account_id"] else None, product_id=r["product_id"],
            product_name=products.get(r["product_id"]), product_line=r["product_line"], region=r["region"],
            segment=r["segment"],
            currency=r["currency"], amount=r["amount"], stage=r["stage"],
            status=r["stage"] if r["stage"] in v.CLOSED_STAGES else "open", expected_close=r["expected_close"],
            opened_at=r["opened_at"], closed_at=r["closed_at"], stage_entered_at=r["stage_entered_at"],
            last_stage_change_at=r["last_stage_change_at"],
            days_in_stage=_days(at - r["stage_entered_at"]).quantize(_TWO_PLACES), position=r["position"],
            changed_at=r["effective_at"], stages=tuple(stays[r["deal_id"]]),
        ))
    return deals


def _names(conn: Connection, table: sa.Table, key: str, cut: Cut, ids: set[Any]) -> dict[UUID, str]:
    found: dict[UUID, str] = {}
    ordered = sorted(ids, key=str)
    for i in range(0, len(ordered), 500):
        found.update({row[0]: row[1] for row in conn.execute(
            sa.select(table.c[key], table.c.name).where(cut.where(table), table.c[key].in_(ordered[i:i + 500])))})
    return found

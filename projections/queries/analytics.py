"""Pipeline analytics: how deals flow through the stages, how fast, and where they get stuck.

A query over the pipeline projection's tables (``projections.pipeline``): it reads, never
writes, and never reads the clock. Every answer is computed at a cut (events recorded up
to a log position, effective up to a time) and carries that position; ``at`` is the business
instant the question is asked at (open stays are measured up to it).

Definitions used by ``funnel`` (the span is half-open: ``span_start <= t < span_end``):

- **entered[stage]**: distinct deals with a stay in that stage that began in the span (a
  deal that bounces back into a stage counts once; opening a deal enters its first stage).
- **reached**: the open stages and ``won`` form a ladder lead < qualified < needs_analysis <
  proposal < negotiation < won (``lost`` is not on it). A deal *reaches* rung k when it first
  enters rung k *or any rung above it*: a deal that jumps from lead to proposal has reached
  qualified and needs_analysis at that moment. ``reached_at(k)`` is that first instant.
- **conversion k → k+1** = (deals whose ``reached_at(k)`` lies in the span and that have
  reached k+1 by the cut) ÷ (deals whose ``reached_at(k)`` lies in the span). Because
  reaching k+1 implies reaching k, ``reached_at(k+1) >= reached_at(k)``: "later reached".
  None when no deal reached k in the span.
- **win rate** = won ÷ (won + lost), over deals whose state at the cut is won or lost with
  a close time in the span (a deal reopened since does not count: as ``progress`` does).
- **average order value**, per currency (amounts in different currencies never add up):
  won amount ÷ deals won in the span.
- **sales cycle**: average days from opening to winning, over deals won in the span.
- **average days in stage**: average length of the stays in each open stage that *ended*
  in the span (per stay, not per deal: a deal that went through a stage twice counts twice);
  stays still open are not finished and show up as stalled instead.
- **stalled**: deals open at the cut whose stage has not changed for ``stalled_after_days``
  days or more at ``at`` (independent of the span).

A deal belongs to the unit its owner was in when it closed, or at ``at`` while open (the
pipeline projection's rule); to its owner at the cut for ``group_by="member"``; and to the
product line, region and segment it was opened with.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.errors import ValidationError
from projections.folds.pipeline import LIVE as PIPELINE
from projections.folds.progress import LIVE as LEDGER
from projections.history import Cut
from projections.measure.organisation import Organisation

GroupBy = Literal["unit", "member", "product_line", "region", "segment"]
GROUP_BYS: Final = ("unit", "member", "product_line", "region", "segment")
LADDER: Final = (*v.OPEN_STAGES, "won")
ALL: Final = "all"

_RATE: Final = Decimal("0.0001")
_TWO: Final = Decimal("0.01")
_DAY_SECONDS: Final = Decimal(86400)


@dataclass(frozen=True)
class StageConversion:
    """Of the deals that reached ``from_stage`` in the span, how many reached ``to_stage`` by the cut."""

    from_stage: str
    to_stage: str
    reached: int
    converted: int
    rate: Decimal | None  # converted / reached, four places; None when nothing reached from_stage


@dataclass(frozen=True)
class StalledDeal:
    deal_id: UUID
    name: str
    owner_id: UUID
    stage: str
    stage_entered_at: datetime
    days_in_stage: Decimal  # at ``at``, two places
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class FunnelGroup:
    """The funnel of one group (a unit, a member, a product line, region or segment; or ``all``)."""

    key: str
    name: str
    entered: dict[str, int]  # every stage, in ladder order then lost
    conversion: list[StageConversion]
    won: int
    lost: int
    win_rate: Decimal | None
    won_amount: dict[str, Decimal]  # per currency
    average_order_value: dict[str, Decimal]  # per currency
    average_sales_cycle_days: Decimal | None
    average_days_in_stage: dict[str, Decimal | None]  # per open stage
    stalled: list[StalledDeal]


@dataclass(frozen=True)
class Funnel:
    position: int
    as_of: datetime | None
    at: datetime
    span_start: datetime
    span_end: datetime
    group_by: str | None
    unit_id: UUID | None
    stalled_after_days: int
    groups: list[FunnelGroup]


# --- shared checks and helpers ----------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """An answer (dataclasses of Decimal, UUID, datetime …) as plain JSON values; money stays exact as text."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(x) for x in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    return value


def check_at(cut: Cut, at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValidationError("query.at_naive", "at must carry a timezone offset", "at")
    if cut.as_of is not None and at < cut.as_of:
        raise ValidationError("query.at_before_cut", "at must not precede the cut's effective time", "at")


def days_between(start: datetime, end: datetime) -> Decimal:
    """Exact days from ``start`` to ``end`` (never negative), unrounded."""
    span = end - start
    seconds = Decimal(span.days * 86400 + span.seconds) + Decimal(span.microseconds).scaleb(-6)
    return max(seconds, Decimal(0)) / _DAY_SECONDS


def rate(numerator: int, denominator: int) -> Decimal | None:
    return None if denominator == 0 else (Decimal(numerator) / Decimal(denominator)).quantize(_RATE)


def _mean(values: Sequence[Decimal]) -> Decimal | None:
    return (sum(values, Decimal(0)) / len(values)).quantize(_TWO) if values else None


def stays_visible(cut: Cut, table: sa.Table) -> sa.ColumnElement[bool]:
    """Stays whose entry is visible at the cut (their exit may not be: see ``left_at_cut``)."""
    c = table.c
    if cut.as_of is None:
        return c.entered_position <= cut.position
    return sa.and_(c.entered_position <= cut.position, c.entered_at <= cut.as_of)


def left_at_cut(stay: Any, cut: Cut) -> datetime | None:
    """When the deal left this stay, if that is visible at the cut."""
    if stay.left_position is None or stay.left_position > cut.position:
        return None
    if cut.as_of is not None and stay.left_at > cut.as_of:
        return None
    left: datetime = stay.left_at
    return left


def stalled_deals(conn: Connection, *, cut: Cut, at: datetime, after_days: int) -> list[StalledDeal]:
    """Deals open at ``cut`` whose stage has not changed for ``after_days`` days or more at ``at``."""
    check_at(cut, at)
    if after_days < 1:
        raise ValidationError("query.stalled_after_days", "stalled_after_days must be at least 1", "stalled_after_days")
    d = LEDGER.deals.c
    rows = conn.execute(sa.select(LEDGER.deals).where(
        cut.where(LEDGER.deals), d.stage.in_(v.OPEN_STAGES), d.stage_entered_at <= at - timedelta(days=after_days),
    ).order_by(d.stage_entered_at, d.deal_id))
    return [_stalled(r, at) for r in rows]


def _stalled(row: Any, at: datetime) -> StalledDeal:
    return StalledDeal(
        deal_id=row.deal_id, name=row.name, owner_id=row.owner_id, stage=row.stage,
        stage_entered_at=row.stage_entered_at, days_in_stage=days_between(row.stage_entered_at, at).quantize(_TWO),
        amount=row.amount, currency=row.currency,
    )


# --- the funnel --------------------------------------------------------------------------------------


def funnel(
    conn: Connection, *, cut: Cut, at: datetime, span_start: datetime, span_end: datetime,
    group_by: GroupBy | None = None, unit_id: UUID | None = None, stalled_after_days: int = 14,
) -> Funnel:
    """How deals moved through the stages in a span, per group: entries, conversion, wins, speed, stalls.

    See the module docstring for the exact definitions.
    """
    check_at(cut, at)
    for name, value in (("span_start", span_start), ("span_end", span_end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError("query.span_naive", f"{name} must carry a timezone offset", name)
    if span_end <= span_start:
        raise ValidationError("query.span_empty", "span_end must be after span_start", "span_end")
    if group_by is not None and group_by not in GROUP_BYS:
        raise ValidationError("funnel.group_by", f"group_by must be one of {', '.join(GROUP_BYS)}", "group_by",
                              allowed=list(GROUP_BYS))
    if stalled_after_days < 1:
        raise ValidationError("query.stalled_after_days", "stalled_after_days must be at least 1", "stalled_after_days")
    d, s = LEDGER.deals.c, PIPELINE.stays.c
    org = Organisation(conn, cut)

    # Only deals with something in the span, or open now (stalled), can contribute.
    moved_in_span = sa.select(s.deal_id).where(stays_visible(cut, PIPELINE.stays), sa.or_(
        sa.and_(s.entered_at >= span_start, s.entered_at < span_end),
        sa.and_(s.left_at >= span_start, s.left_at < span_end),
    ))
    deals = list(conn.execute(sa.select(LEDGER.deals).where(
        cut.where(LEDGER.deals), sa.or_(d.deal_id.in_(moved_in_span), d.stage.in_(v.OPEN_STAGES)))))
    within = org.tree.subtree(unit_id) if unit_id is not None else None
    if within is not None:
        deals = [r for r in deals if org.unit_of(r.owner_id, r.closed_at or at) in within]
    stays: dict[UUID, list[Any]] = defaultdict(list)
    ids = sorted(r.deal_id for r in deals)
    for i in range(0, len(ids), 500):
        for stay in conn.execute(sa.select(PIPELINE.stays).where(s.deal_id.in_(ids[i : i + 500]),
                                                                 stays_visible(cut, PIPELINE.stays))
                                 .order_by(s.deal_id, s.entered_position)):
            stays[stay.deal_id].append(stay)

    key_of, name_of = _grouping(group_by, org, at)
    grouped: dict[str, list[Any]] = defaultdict(list)
    for deal in deals:
        grouped[key_of(deal)].append(deal)
    if group_by is None:
        grouped.setdefault(ALL, [])
    span = (span_start, span_end)
    groups = [
        _group(key, name_of(key), grouped[key], stays, cut, at, span, stalled_after_days)
        for key in sorted(grouped, key=lambda k: (name_of(k), k))
    ]
    return Funnel(position=cut.position, as_of=cut.as_of, at=at, span_start=span_start, span_end=span_end,
                  group_by=group_by, unit_id=unit_id, stalled_after_days=stalled_after_days, groups=groups)


def _grouping(group_by: str | None, org: Organisation, at: datetime) -> tuple[Callable[[Any], str], Callable[[str], str]]:
    if group_by is None:
        return (lambda _deal: ALL), (lambda _key: ALL)
    if group_by == "unit":
        def unit_key(deal: Any) -> str:
            unit = org.unit_of(deal.owner_id, deal.closed_at or at)
            return "" if unit is None else str(unit)
        return unit_key, lambda key: (org.tree.name(UUID(key)) or key) if key else ""
    if group_by == "member":
        return (lambda deal: str(deal.owner_id)), lambda key: org.member_name(UUID(key)) or key
    return (lambda deal: str(getattr(deal, group_by))), lambda key: key


def _in(span: tuple[datetime, datetime], when: datetime | None) -> bool:
    return when is not None and span[0] <= when < span[1]


def _group(key: str, name: str, deals: Iterable[Any], stays: dict[UUID, list[Any]], cut: Cut, at: datetime,
           span: tuple[datetime, datetime], stalled_after_days: int) -> FunnelGroup:
    entered: dict[str, set[UUID]] = {stage: set() for stage in (*LADDER, "lost")}
    reached_in_span: list[set[UUID]] = [set() for _ in LADDER]
    reached_ever: list[set[UUID]] = [set() for _ in LADDER]
    lengths: dict[str, list[Decimal]] = {stage: [] for stage in v.OPEN_STAGES}
    won: list[Any] = []
    lost = 0
    stalled: list[StalledDeal] = []
    stalled_before = at - timedelta(days=stalled_after_days)
    for deal in deals:
        first_reached: list[datetime | None] = [None] * len(LADDER)
        for stay in stays.get(deal.deal_id, []):
            if _in(span, stay.entered_at):
                entered[stay.stage].add(deal.deal_id)
            if stay.stage in LADDER:
                for k in range(LADDER.index(stay.stage) + 1):
                    earliest = first_reached[k]
                    if earliest is None or stay.entered_at < earliest:
                        first_reached[k] = stay.entered_at
            left = left_at_cut(stay, cut)
            if stay.stage in lengths and _in(span, left):
                assert left is not None
                lengths[stay.stage].append(days_between(stay.entered_at, left))
        for k, when in enumerate(first_reached):
            if when is not None:
                reached_ever[k].add(deal.deal_id)
                if _in(span, when):
                    reached_in_span[k].add(deal.deal_id)
        if _in(span, deal.closed_at):
            if deal.stage == "won":
                won.append(deal)
            elif deal.stage == "lost":
                lost += 1
        if deal.stage in v.OPEN_STAGES and deal.stage_entered_at <= stalled_before:
            stalled.append(_stalled(deal, at))
    conversion = []
    for k in range(len(LADDER) - 1):
        cohort = reached_in_span[k]
        converted = len(cohort & reached_ever[k + 1])
        conversion.append(StageConversion(LADDER[k], LADDER[k + 1], len(cohort), converted, rate(converted, len(cohort))))
    won_amount: dict[str, Decimal] = defaultdict(Decimal)
    won_count: dict[str, int] = defaultdict(int)
    for deal in won:
        won_amount[deal.currency] += deal.amount
        won_count[deal.currency] += 1
    return FunnelGroup(
        key=key, name=name, entered={stage: len(ids) for stage, ids in entered.items()}, conversion=conversion,
        won=len(won), lost=lost, win_rate=rate(len(won), len(won) + lost),
        won_amount={c: won_amount[c].quantize(_TWO) for c in sorted(won_amount)},
        average_order_value={c: (won_amount[c] / won_count[c]).quantize(_TWO) for c in sorted(won_amount)},
        average_sales_cycle_days=_mean([days_between(deal.opened_at, deal.closed_at) for deal in won]),
        average_days_in_stage={stage: _mean(values) for stage, values in lengths.items()},
        stalled=sorted(stalled, key=lambda sd: (sd.stage_entered_at, sd.deal_id)),
    )

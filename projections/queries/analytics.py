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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
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
from projections.measure.organisation import Organisation, closure, spans
from projections.sqltypes import UTCDateTime

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
    org = Organisation(conn, cut)
    deals = _candidates(cut, at, span_start, span_end, group_by, unit_id, conn.dialect.name)
    groups: dict[str, _Tallies] = {}

    def group(key: Any) -> _Tallies:
        return groups.setdefault("" if key is None else str(key), _Tallies())

    for key in conn.execute(sa.select(deals.c.key).distinct()).scalars():
        group(key)
    if group_by is None:
        group(ALL)
    s = PIPELINE.stays
    st = s.c
    visible = stays_visible(cut, s)
    entered_in_span = sa.and_(st.entered_at >= span_start, st.entered_at < span_end)
    for row in conn.execute(sa.select(deals.c.key, st.stage, sa.func.count(sa.distinct(st.deal_id)))
                            .join(deals, deals.c.deal_id == st.deal_id).where(visible, entered_in_span)
                            .group_by(deals.c.key, st.stage)):
        group(row[0]).entered[row[1]] = int(row[2])
    # reached_at(k): a deal's first entry into rung k or above.
    rank = sa.case(*((st.stage == stage, i) for i, stage in enumerate(LADDER)), else_=-1)
    firsts = sa.select(deals.c.key, *(sa.func.min(sa.case((rank >= k, st.entered_at), else_=sa.null())).label(f"r{k}")
                                      for k in range(len(LADDER)))).join(deals, deals.c.deal_id == st.deal_id).where(
        visible).group_by(st.deal_id, deals.c.key).subquery("firsts")

    def reached_in_span(k: int) -> sa.ColumnElement[bool]:
        return sa.and_(firsts.c[f"r{k}"] >= span_start, firsts.c[f"r{k}"] < span_end)

    rungs = len(LADDER) - 1
    counts = [sa.func.sum(sa.case((reached_in_span(k), 1), else_=0)) for k in range(rungs)]
    converted = [sa.func.sum(sa.case((sa.and_(reached_in_span(k), firsts.c[f"r{k + 1}"].is_not(None)), 1), else_=0))
                 for k in range(rungs)]
    for row in conn.execute(sa.select(firsts.c.key, *counts, *converted).group_by(firsts.c.key)):
        group(row[0]).reached = [(int(row[1 + k] or 0), int(row[1 + rungs + k] or 0)) for k in range(rungs)]
    # Stays that ended in the span, as far as the cut shows their end: their lengths, exactly.
    left = sa.and_(st.left_position.is_not(None), st.left_position <= cut.position, st.left_at >= span_start,
                   st.left_at < span_end, *(() if cut.as_of is None else (st.left_at <= cut.as_of,)))
    length = _micros_between(st.entered_at, st.left_at, conn.dialect.name)
    for row in conn.execute(sa.select(deals.c.key, st.stage, sa.func.count(), sa.func.sum(length))
                            .join(deals, deals.c.deal_id == st.deal_id)
                            .where(visible, left, st.stage.in_(v.OPEN_STAGES)).group_by(deals.c.key, st.stage)):
        group(row[0]).stays[row[1]] = (int(row[2]), int(row[3]))
    c = deals.c
    for row in conn.execute(sa.select(c.key, c.stage, c.currency, c.amount_cents, c.opened_at, c.closed_at).where(
            c.stage.in_(v.CLOSED_STAGES), c.closed_at >= span_start, c.closed_at < span_end)):
        tallies = group(row.key)
        if row.stage == "won":
            tallies.won.append((row.currency, row.amount_cents, days_between(row.opened_at, row.closed_at)))
        else:
            tallies.lost += 1
    stalled_before = at - timedelta(days=stalled_after_days)
    for row in conn.execute(sa.select(deals).where(c.stage.in_(v.OPEN_STAGES), c.stage_entered_at <= stalled_before)
                            .order_by(c.stage_entered_at, c.deal_id)):
        group(row.key).stalled.append(_stalled(row, at))
    name_of = _names(group_by, org)
    result = [groups[key].funnel_group(key, name_of(key)) for key in sorted(groups, key=lambda k: (name_of(k), k))]
    return Funnel(position=cut.position, as_of=cut.as_of, at=at, span_start=span_start, span_end=span_end,
                  group_by=group_by, unit_id=unit_id, stalled_after_days=stalled_after_days, groups=result)


def _candidates(cut: Cut, at: datetime, span_start: datetime, span_end: datetime, group_by: str | None,
                unit_id: UUID | None, dialect: str) -> sa.CTE:
    """The deals that can count (a stay entered or left in the span, or open at the cut), each with its group key.

    A deal is placed as every question places it: in the unit its owner was in when it closed, or at ``at``.
    """
    d, s = LEDGER.deals, PIPELINE.stays
    dc, st = d.c, s.c
    moved = sa.select(st.deal_id).where(stays_visible(cut, s), sa.or_(
        sa.and_(st.entered_at >= span_start, st.entered_at < span_end),
        sa.and_(st.left_at >= span_start, st.left_at < span_end),
    ))
    sp = spans(cut.position, (), dialect)
    placed_at = sa.func.coalesce(dc.closed_at, sa.literal(at, UTCDateTime))
    key: sa.ColumnElement[Any]
    if group_by is None:
        key = sa.literal(ALL, sa.String)
    elif group_by == "unit":
        key = sp.c.unit_id
    elif group_by == "member":
        key = dc.owner_id
    else:
        key = dc[group_by]
    query = (
        sa.select(dc.deal_id, dc.name, dc.owner_id, dc.stage, dc.amount, dc.amount_cents, dc.currency, dc.opened_at,
                  dc.closed_at, dc.stage_entered_at, key.label("key"))
        .select_from(d.outerjoin(sp, sa.and_(
            sp.c.member_id == dc.owner_id, sa.or_(sp.c.valid_from.is_(None), sp.c.valid_from <= placed_at),
            sa.or_(sp.c.valid_to.is_(None), placed_at < sp.c.valid_to))))
        .where(cut.where(d), sa.or_(dc.deal_id.in_(moved), dc.stage.in_(v.OPEN_STAGES)))
    )
    if unit_id is not None:
        tree = closure(cut)
        query = query.where(sp.c.unit_id.in_(sa.select(tree.c.descendant).where(tree.c.ancestor == unit_id)))
    return query.cte("funnel_deals")


def _micros_between(start: Any, end: Any, dialect: str) -> sa.ColumnElement[int]:
    """``end − start`` in whole microseconds, computed by the database, exactly."""
    if dialect == "postgresql":
        return sa.cast(sa.func.extract("epoch", end - start) * 1_000_000, sa.BigInteger)
    # SQLite keeps times as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): whole seconds, then the microseconds.
    seconds = sa.cast(sa.func.strftime("%s", end), sa.Integer) - sa.cast(sa.func.strftime("%s", start), sa.Integer)
    micros = sa.cast(sa.func.substr(end, 21, 6), sa.Integer) - sa.cast(sa.func.substr(start, 21, 6), sa.Integer)
    return seconds * 1_000_000 + micros


def _names(group_by: str | None, org: Organisation) -> Callable[[str], str]:
    if group_by == "unit":
        return lambda key: (org.tree.name(UUID(key)) or key) if key else ""
    if group_by == "member":
        return lambda key: (org.member_name(UUID(key)) or key) if key else ""
    return lambda key: key


@dataclass
class _Tallies:
    """What one group counted."""

    entered: dict[str, int] = field(default_factory=dict)
    reached: list[tuple[int, int]] = field(default_factory=list)  # per rung k: (reached k in span, then k+1)
    stays: dict[str, tuple[int, int]] = field(default_factory=dict)  # per open stage: (ended in span, micros)
    won: list[tuple[str, int, Decimal]] = field(default_factory=list)  # (currency, cents, days from opening)
    lost: int = 0
    stalled: list[StalledDeal] = field(default_factory=list)

    def funnel_group(self, key: str, name: str) -> FunnelGroup:
        reached = self.reached or [(0, 0)] * (len(LADDER) - 1)
        conversion = [StageConversion(LADDER[k], LADDER[k + 1], n, m, rate(m, n)) for k, (n, m) in enumerate(reached)]
        amounts: dict[str, int] = defaultdict(int)
        counts: dict[str, int] = defaultdict(int)
        for currency, cents, _days in self.won:
            amounts[currency] += cents
            counts[currency] += 1
        won = len(self.won)
        return FunnelGroup(
            key=key, name=name, entered={stage: self.entered.get(stage, 0) for stage in (*LADDER, "lost")},
            conversion=conversion, won=won, lost=self.lost, win_rate=rate(won, won + self.lost),
            won_amount={c: (Decimal(amounts[c]) / 100).quantize(_TWO) for c in sorted(amounts)},
            average_order_value={c: (Decimal(amounts[c]) / 100 / counts[c]).quantize(_TWO) for c in sorted(amounts)},
            average_sales_cycle_days=_mean([days for _c, _a, days in self.won]),
            average_days_in_stage={
                stage: (Decimal(self.stays[stage][1]) / 1_000_000 / _DAY_SECONDS / self.stays[stage][0]).quantize(_TWO)
                if stage in self.stays else None
                for stage in v.OPEN_STAGES},
            stalled=sorted(self.stalled, key=lambda sd: (sd.stage_entered_at, sd.deal_id)),
        )

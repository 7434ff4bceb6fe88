"""The facts every figure is made of, counted where the data is.

A **fact** is one deal won, lost or opened, one deal open in the pipeline, or one activity,
visible at a cut (see ``projections.history.Cut``):

    kind      member it counts for         when (placed / in the window)
    won       the owner who won it          closed_at / closed_at
    lost      the owner when it was lost    closed_at / closed_at
    opened    the owner when it opened      opened_at / opened_at
    open      its owner at the cut          ``at`` / expected_close (the deal is open at the cut)
    activity  the member who logged it      effective_at / effective_at

Each fact also carries a *detail*: an open deal's stage, an activity's kind, a closed or opened
deal's currency — so a tally can say how much of each.

A fact counts for its member and for the unit the member was in when it was *placed*, and
every unit above that one (``projections.measure.organisation``). A **cell** asks for the
facts of some kinds in a window ``[start, end)`` for one owner (a member or a unit), optionally
narrowed to a product line, region and segment; money only in the cell's currency. ``tally``
answers any number of cells at one cut with one statement: the database filters by the cut,
places, expands owners up the tree, joins the cells and sums. Sums are exact integers (cents).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.measure.organisation import SpanOverride, closure, spans
from projections.measure.rows import Column, json_rows
from projections.sqltypes import UTCDateTime

__all__ = ["FACT_KINDS", "METRIC_KINDS", "Bucket", "Cell", "Tally", "contributions", "tally"]

WON: Final = "won"
LOST: Final = "lost"
OPENED: Final = "opened"
OPEN: Final = "open"
ACTIVITY: Final = "activity"
FACT_KINDS: Final = (WON, LOST, OPENED, OPEN, ACTIVITY)

METRIC_KINDS: Final[Mapping[str, tuple[str, ...]]] = {
    "revenue": (WON, OPEN),
    "deals_won": (WON, OPEN),
    "new_deals": (OPENED,),
    "activities": (ACTIVITY,),
    "win_rate": (WON, LOST),
    "average_order_value": (WON,),
}
"""The facts each metric is measured from (open deals feed the weighted forecast)."""


@dataclass(frozen=True)
class Cell:
    """One owner's facts of some kinds in a window, optionally narrowed; money in ``currency``."""

    key: str
    kinds: tuple[str, ...]
    owner_id: UUID  # a member or a unit (ids never collide)
    start: datetime
    end: datetime
    currency: str
    product_line: str | None = None
    region: str | None = None
    segment: str | None = None


@dataclass
class Bucket:
    count: int = 0  # facts, in any currency
    in_currency: int = 0  # facts in the cell's currency
    cents: int = 0  # their amount, in the cell's currency
    cents_any: int = 0  # the amount of all of them, whatever their currency (split by currency in the detail)

    def __add__(self, other: Bucket) -> Bucket:
        return Bucket(self.count + other.count, self.in_currency + other.in_currency, self.cents + other.cents,
                      self.cents_any + other.cents_any)

    def __sub__(self, other: Bucket) -> Bucket:
        return Bucket(self.count - other.count, self.in_currency - other.in_currency, self.cents - other.cents,
                      self.cents_any - other.cents_any)


@dataclass
class Tally:
    """What a cell counted: per fact kind and detail."""

    buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)

    def add(self, kind: str, detail: str, bucket: Bucket) -> None:
        key = (kind, detail)
        self.buckets[key] = self.buckets.get(key, Bucket()) + bucket

    def of(self, kind: str) -> Bucket:
        total = Bucket()
        for (k, _detail), bucket in self.buckets.items():
            if k == kind:
                total = total + bucket
        return total

    def details(self, kind: str) -> dict[str, Bucket]:
        """A kind's buckets by detail: open deals by stage, activities by kind, closed deals by currency."""
        return {detail: b for (k, detail), b in self.buckets.items() if k == kind}

    def __add__(self, other: Tally) -> Tally:
        result = Tally(dict(self.buckets))
        for (kind, detail), bucket in other.buckets.items():
            result.add(kind, detail, bucket)
        return result


# --- the statement ---------------------------------------------------------------------------------

_CHUNK: Final = 2000  # cells per statement (one JSON parameter): keeps each statement's span of facts short


def tally(conn: Connection, cells: Sequence[Cell], cut: Cut, *, at: datetime,
          overrides: Sequence[SpanOverride] = ()) -> dict[str, Tally]:
    """Every cell's facts at ``cut``; open deals are placed by their owner's unit at ``at``."""
    result = {c.key: Tally() for c in cells}
    for chunk in _chunks(cells):
        for row in conn.execute(_statement(chunk, cut, at, overrides, by_fact=False, dialect=conn.dialect.name)):
            result[row.key].add(row.kind, row.detail or "", _bucket(row))
    return result


def contributions(conn: Connection, cells: Sequence[Cell], cut: Cut, *, at: datetime,
                  overrides: Sequence[SpanOverride] = ()) -> dict[str, dict[UUID, Tally]]:
    """``tally`` broken down by contributor: what each deal (or activity) adds to each cell at ``cut``."""
    result: dict[str, dict[UUID, Tally]] = {c.key: {} for c in cells}
    for chunk in _chunks(cells):
        for row in conn.execute(_statement(chunk, cut, at, overrides, by_fact=True, dialect=conn.dialect.name)):
            result[row.key].setdefault(row.fact_id, Tally()).add(row.kind, row.detail or "", _bucket(row))
    return result


def _chunks(cells: Sequence[Cell]) -> list[Sequence[Cell]]:
    # In window order, so that each statement reads the facts of as short a span as it can.
    ordered = sorted(cells, key=lambda c: (c.start, c.end))
    return [ordered[i:i + _CHUNK] for i in range(0, len(ordered), _CHUNK)]


def _bucket(row: Any) -> Bucket:
    return Bucket(int(row.n), int(row.n_in or 0), int(row.cents or 0), int(row.cents_any or 0))


def _statement(cells: Sequence[Cell], cut: Cut, at: datetime, overrides: Sequence[SpanOverride], *,
               by_fact: bool, dialect: str) -> sa.Select[tuple[object, ...]]:
    kinds = {k for c in cells for k in c.kinds}
    lo, hi = min(c.start for c in cells), max(c.end for c in cells)
    wanted = _cells(cells, dialect)
    tree = closure(cut)
    s = spans(cut.position, overrides, dialect)
    # Only the facts of members who can count for a cell: its member owners, and whoever was ever in a unit
    # owner's subtree (as known at the cut). A team's question never reads the whole company's facts.
    owner_ids = sa.select(wanted.c.owner_id)
    members = sa.union(
        owner_ids,
        sa.select(s.c.member_id).join(tree, tree.c.descendant == s.c.unit_id).where(tree.c.ancestor.in_(owner_ids)),
    )
    facts = _facts(kinds, cut, at, lo, hi, members)
    placed = (
        sa.select(facts, s.c.unit_id)
        .select_from(facts.outerjoin(s, sa.and_(
            s.c.member_id == facts.c.member_id,
            sa.or_(s.c.valid_from.is_(None), s.c.valid_from <= facts.c.placed_at),
            sa.or_(s.c.valid_to.is_(None), facts.c.placed_at < s.c.valid_to),
        )))
        .cte("placed")
    )
    columns = [placed.c[n] for n in ("fact_id", "kind", "detail", "happened_at", "due", "product_line", "region",
                                     "segment", "currency", "cents")]
    owners = sa.union_all(
        sa.select(*columns, placed.c.member_id.label("owner_id")),
        sa.select(*columns, tree.c.ancestor.label("owner_id")).join(tree, tree.c.descendant == placed.c.unit_id),
    ).subquery("owners")
    o, c = owners.c, wanted.c
    in_currency = sa.case((o.currency == c.currency, 1), else_=0)
    keys = [c.key, o.kind, o.detail, *([o.fact_id] if by_fact else [])]
    return (
        sa.select(
            *keys, sa.func.count().label("n"), sa.func.sum(in_currency).label("n_in"),
            sa.func.sum(sa.case((o.currency == c.currency, o.cents), else_=0)).label("cents"),
            sa.func.sum(o.cents).label("cents_any"),
        )
        .select_from(owners.join(wanted, sa.and_(
            o.owner_id == c.owner_id, o.kind == c.kind,
            sa.or_(
                sa.and_(o.happened_at >= c.start, o.happened_at < c.end),
                sa.and_(o.due >= c.start_day, o.due < c.end_day),
            ),
            *(sa.or_(c[k].is_(None), c[k] == o[k]) for k in ("product_line", "region", "segment")),
        )))
        .group_by(*keys)
    )


def _facts(kinds: Iterable[str], cut: Cut, at: datetime, lo: datetime, hi: datetime,
           members: sa.CompoundSelect[tuple[UUID]]) -> sa.CTE:
    """The facts of ``kinds`` visible at the cut that may fall in [lo, hi), of the given members."""
    d, a = LIVE.deals.c, LIVE.activities.c
    deals_at = cut.where(LIVE.deals)
    none_text = sa.cast(sa.null(), sa.String)
    no_day = sa.cast(sa.null(), sa.Date)
    no_time = sa.cast(sa.null(), UTCDateTime)
    selects: list[sa.Select[tuple[object, ...]]] = []

    def deal_fact(kind: sa.ColumnElement[str], detail: sa.ColumnElement[str], member: sa.ColumnElement[UUID],
                  placed_at: sa.ColumnElement[datetime], happened_at: sa.ColumnElement[datetime],
                  due: sa.ColumnElement[date]) -> sa.Select[tuple[object, ...]]:
        return sa.select(
            d.deal_id.label("fact_id"), kind.label("kind"), detail.label("detail"), member.label("member_id"),
            placed_at.label("placed_at"),
            happened_at.label("happened_at"), due.label("due"), d.product_line, d.region, d.segment, d.currency,
            d.amount_cents.label("cents"),
        )

    closed = [k for k in (WON, LOST) if k in kinds]
    if closed:
        selects.append(deal_fact(d.stage, d.currency, d.owner_id, d.closed_at, d.closed_at, no_day).where(
            deals_at, d.stage.in_(closed), d.closed_at >= lo, d.closed_at < hi, d.owner_id.in_(members)))
    if OPENED in kinds:
        selects.append(deal_fact(sa.literal(OPENED, sa.String), d.currency, d.opened_by, d.opened_at, d.opened_at,
                                 no_day).where(deals_at, d.opened_at >= lo, d.opened_at < hi, d.opened_by.in_(members)))
    if OPEN in kinds:
        selects.append(deal_fact(sa.literal(OPEN, sa.String), d.stage, d.owner_id, sa.literal(at, UTCDateTime),
                                 no_time, d.expected_close).where(
            deals_at, d.stage.in_(v.OPEN_STAGES), d.expected_close >= lo.date(), d.expected_close < hi.date(),
            d.owner_id.in_(members)))
    if ACTIVITY in kinds:
        selects.append(sa.select(
            a.activity_id.label("fact_id"), sa.literal(ACTIVITY, sa.String).label("kind"), a.kind.label("detail"),
            a.member_id,
            a.effective_at.label("placed_at"), a.effective_at.label("happened_at"), no_day.label("due"),
            none_text.label("product_line"), none_text.label("region"), none_text.label("segment"),
            none_text.label("currency"), sa.cast(sa.literal(0), sa.BigInteger).label("cents"),
        ).where(cut.where(LIVE.activities), a.effective_at >= lo, a.effective_at < hi, a.member_id.in_(members)))
    if not selects:
        raise ValueError(f"no fact kinds among {sorted(kinds)}")
    return (selects[0] if len(selects) == 1 else sa.union_all(*selects)).cte("facts")


_CELL_COLUMNS: Final[tuple[Column, ...]] = (
    ("key", "text"), ("kind", "text"), ("owner_id", "uuid"), ("start", "time"), ("end", "time"), ("start_day", "day"),
    ("end_day", "day"), ("currency", "text"), ("product_line", "text"), ("region", "text"), ("segment", "text"),
)


def _cells(cells: Sequence[Cell], dialect: str) -> sa.CTE:
    rows = [
        (c.key, kind, c.owner_id, c.start, c.end, c.start.date(), c.end.date(), c.currency, c.product_line,
         c.region, c.segment)
        for c in cells for kind in c.kinds
    ]
    return json_rows("cells", _CELL_COLUMNS, rows, dialect)

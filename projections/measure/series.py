"""The same facts at many cuts at once: burn-ups, replays, forecast histories.

A series asks ``tally`` at every step of a sequence of cuts that never go back on either clock
(positions and effective times both non-decreasing). Asking the database once per step would
read every fact once per step; here each row is read once. Every history row — a deal's, an
activity's, a membership's, a unit's — is visible on a contiguous run of steps: for a row
written at position p, effective at e, and superseded by a row at (p', e'), it is visible at
step i exactly when P_i ≥ p, T_i ≥ e and not (P_i ≥ p' and T_i ≥ e'), which for monotone
steps is the run [max(first P ≥ p, first T ≥ e), max(first P ≥ p', first T ≥ e')). A fact
contributes to its cells over the intersection of its own run, its membership span's run and
the unit tree's; the contributions are added as differences and summed once per step.

The result equals ``tally`` at each step's cut (the tests compare them on generated
histories); the definitions of facts and placement are those of ``projections.measure.facts``.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from projections.folds.progress import LIVE
from projections.measure.facts import ACTIVITY, LOST, OPEN, OPENED, WON, Bucket, Cell, Tally
from projections.measure.organisation import SpanOverride

__all__ = ["Step", "series"]


@dataclass(frozen=True)
class Step:
    """One cut of a series: recorded up to ``position``, effective up to ``as_of`` (open deals placed then)."""

    position: int
    as_of: datetime


class _Runs:
    """Maps a history row's validity to the run of steps it is visible on."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.positions = [s.position for s in steps]
        self.times = [s.as_of for s in steps]
        self.n = len(steps)

    def first_p(self, position: int | None) -> int:
        return self.n if position is None else bisect.bisect_left(self.positions, position)

    def first_t(self, when: datetime | None) -> int:
        return 0 if when is None else bisect.bisect_left(self.times, when)

    def visible(self, position: int, effective: datetime | None, next_position: int | None,
                next_effective: datetime | None) -> tuple[int, int]:
        start = max(self.first_p(position), self.first_t(effective))
        end = self.n if next_position is None else max(self.first_p(next_position), self.first_t(next_effective))
        return start, max(start, end)


@dataclass(frozen=True)
class _SpanRow:
    unit_id: UUID
    position: int
    valid_from: datetime | None
    next_position: int | None
    next_effective: datetime | None


def series(conn: Connection, cells: Sequence[Cell], steps: Sequence[Step],
           overrides: Sequence[SpanOverride] = ()) -> dict[str, list[Tally]]:
    """Every cell's tally at every step (steps non-decreasing on both clocks)."""
    if not steps or not cells:
        return {c.key: [Tally() for _ in steps] for c in cells}
    for a, b in itertools.pairwise(steps):
        if b.position < a.position or b.as_of < a.as_of:
            raise ValueError("a series' steps must not go back on either clock")
    runs = _Runs(steps)
    last = steps[-1].position
    kinds = {k for c in cells for k in c.kinds}
    lo, hi = min(c.start for c in cells), max(c.end for c in cells)
    trees = _TreeRuns(conn, last, runs)
    members = _candidate_members(conn, cells, last, trees, overrides)
    member_spans = _spans(conn, last, members, overrides)
    by_owner: dict[tuple[UUID, str], list[Cell]] = defaultdict(list)
    for c in cells:
        for kind in c.kinds:
            by_owner[(c.owner_id, kind)].append(c)
    diffs: dict[str, dict[int, Tally]] = {c.key: defaultdict(Tally) for c in cells}

    def contribute(owners: Iterable[UUID], fact: _Fact, start: int, end: int) -> None:
        if start >= end:
            return
        for owner in owners:
            for c in by_owner.get((owner, fact.kind), ()):
                if not fact.in_window(c) or not fact.narrowed_like(c):
                    continue
                inside = fact.currency == c.currency
                bucket = Bucket(1, int(inside), fact.cents if inside else 0, fact.cents)
                diffs[c.key][start].add(fact.kind, fact.detail, bucket)
                diffs[c.key][end].add(fact.kind, fact.detail, Bucket() - bucket)

    for fact, start, end in _facts(conn, kinds, last, lo, hi, members, runs):
        contribute([fact.member_id], fact, start, end)
        for span in member_spans.get(fact.member_id, ()):
            if fact.placed_at is not None:  # placed when it happened
                if span.valid_from is not None and span.valid_from > fact.placed_at:
                    continue
                ends = span.next_position is not None and span.next_effective is not None \
                    and span.next_effective <= fact.placed_at
                s_start, s_end = runs.first_p(span.position), runs.first_p(span.next_position) if ends else runs.n
            else:  # an open deal: placed at each step's own time
                s_start, s_end = runs.visible(span.position, span.valid_from, span.next_position, span.next_effective)
            lo_i, hi_i = max(start, s_start), min(end, s_end)
            for t_start, t_end, ancestors in trees.segments(lo_i, hi_i):
                contribute(ancestors(span.unit_id), fact, t_start, t_end)

    result: dict[str, list[Tally]] = {}
    for c in cells:
        running = Tally()
        points = diffs[c.key]
        out = []
        for i in range(len(steps)):
            if i in points:
                running = running + points[i]
            out.append(Tally({k: b for k, b in running.buckets.items() if b != Bucket()}))
        result[c.key] = out
    return result


@dataclass(frozen=True)
class _Fact:
    kind: str
    detail: str  # an open deal's stage, an activity's kind, a closed or opened deal's currency
    member_id: UUID
    placed_at: datetime | None  # None: placed at each step's time (open deals)
    happened_at: datetime | None
    due: date | None
    product_line: str | None
    region: str | None
    segment: str | None
    currency: str | None
    cents: int

    def in_window(self, c: Cell) -> bool:
        if self.due is not None:
            return c.start.date() <= self.due < c.end.date()
        assert self.happened_at is not None
        return c.start <= self.happened_at < c.end

    def narrowed_like(self, c: Cell) -> bool:
        return all(want is None or want == have for want, have in (
            (c.product_line, self.product_line), (c.region, self.region), (c.segment, self.segment)))


def _facts(conn: Connection, kinds: set[str], last: int, lo: datetime, hi: datetime, members: set[UUID] | None,
           runs: _Runs) -> Iterable[tuple[_Fact, int, int]]:
    """Every fact row (up to ``last``) that may fall in [lo, hi), with the run of steps it is visible on."""
    d, a = LIVE.deals.c, LIVE.activities.c
    deal_kinds = kinds & {WON, LOST, OPENED, OPEN}
    if deal_kinds:
        wanted = []
        if kinds & {WON, LOST}:
            wanted.append(sa.and_(d.stage.in_([k for k in (WON, LOST) if k in kinds]), d.closed_at >= lo,
                                  d.closed_at < hi))
        if OPENED in kinds:
            wanted.append(sa.and_(d.opened_at >= lo, d.opened_at < hi))
        if OPEN in kinds:
            wanted.append(sa.and_(d.stage.in_(v.OPEN_STAGES), d.expected_close >= lo.date(),
                                  d.expected_close < hi.date()))
        query = sa.select(d.position, d.effective_at, d.next_position, d.next_effective_at, d.stage, d.owner_id,
                          d.opened_by, d.opened_at, d.closed_at, d.expected_close, d.product_line, d.region,
                          d.segment, d.currency, d.amount_cents).where(d.position <= last, sa.or_(*wanted))
        for row in _in_members(conn, query, d.owner_id, d.opened_by, members):
            start, end = runs.visible(row.position, row.effective_at, row.next_position, row.next_effective_at)
            if start >= end:
                continue
            for fact in _deal_facts(row, kinds, lo, hi):
                yield fact, start, end
    if ACTIVITY in kinds:
        query = sa.select(a.position, a.effective_at, a.next_position, a.next_effective_at, a.member_id, a.kind).where(
            a.position <= last, a.effective_at >= lo, a.effective_at < hi)
        for row in _in_members(conn, query, a.member_id, None, members):
            start, end = runs.visible(row.position, row.effective_at, row.next_position, row.next_effective_at)
            if start < end:
                yield _Fact(ACTIVITY, row.kind, row.member_id, row.effective_at, row.effective_at, None, None, None,
                            None, None, 0), start, end


def _deal_facts(row: Any, kinds: set[str], lo: datetime, hi: datetime) -> Iterable[_Fact]:
    narrowing = (row.product_line, row.region, row.segment, row.currency, row.amount_cents)
    if row.stage in (WON, LOST) and row.stage in kinds and row.closed_at is not None and lo <= row.closed_at < hi:
        yield _Fact(row.stage, row.currency, row.owner_id, row.closed_at, row.closed_at, None, *narrowing)
    if OPENED in kinds and lo <= row.opened_at < hi:
        yield _Fact(OPENED, row.currency, row.opened_by, row.opened_at, row.opened_at, None, *narrowing)
    if OPEN in kinds and row.stage in v.OPEN_STAGES and lo.date() <= row.expected_close < hi.date():
        yield _Fact(OPEN, row.stage, row.owner_id, None, None, row.expected_close, *narrowing)


def _in_members(conn: Connection, query: sa.Select[Any], column: Any, other: Any, members: set[UUID] | None
                ) -> Iterable[Any]:
    if members is None:
        yield from conn.execute(query)
        return
    ids = sorted(members, key=str)
    seen: set[tuple[Any, ...]] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        condition = column.in_(chunk) if other is None else sa.or_(column.in_(chunk), other.in_(chunk))
        for row in conn.execute(query.where(condition)):
            key = tuple(row)
            if key not in seen:  # a row whose owner and opener fall in different chunks comes twice
                seen.add(key)
                yield row


class _TreeRuns:
    """The unit tree at every step, as runs of steps over which it does not change."""

    def __init__(self, conn: Connection, last: int, runs: _Runs) -> None:
        u = LIVE.units.c
        rows = list(conn.execute(sa.select(u.unit_id, u.parent_id, u.position, u.effective_at, u.next_position,
                                           u.next_effective_at).where(u.position <= last)))
        visible = [(r.unit_id, r.parent_id, *runs.visible(r.position, r.effective_at, r.next_position,
                                                          r.next_effective_at)) for r in rows]
        cuts = sorted({0, runs.n} | {s for _, _, s, _ in visible} | {e for _, _, _, e in visible})
        self.runs: list[tuple[int, int, dict[UUID, UUID | None]]] = []
        for start, end in itertools.pairwise(cuts):
            if start >= runs.n:
                break
            parents = {unit: parent for unit, parent, s, e in visible if s <= start < e}
            self.runs.append((start, end, parents))
        self._chains: dict[tuple[int, UUID], list[UUID]] = {}

    def units_ever(self) -> set[UUID]:
        return {u for _, _, parents in self.runs for u in parents}

    def subtrees_ever(self, roots: set[UUID]) -> set[UUID]:
        found: set[UUID] = set()
        for i, (_, _, parents) in enumerate(self.runs):
            for unit in parents:
                if set(self._ancestors(i, unit)) & roots:
                    found.add(unit)
        return found

    def _ancestors(self, run: int, unit: UUID) -> list[UUID]:
        key = (run, unit)
        if key not in self._chains:
            parents = self.runs[run][2]
            chain: list[UUID] = []
            current: UUID | None = unit
            while current is not None and current in parents and current not in chain:
                chain.append(current)
                current = parents[current]
            self._chains[key] = chain
        return self._chains[key]

    def segments(self, start: int, end: int) -> Iterable[tuple[int, int, Any]]:
        for i, (s, e, _) in enumerate(self.runs):
            lo, hi = max(s, start), min(e, end)
            if lo < hi:
                yield lo, hi, lambda unit, i=i: self._ancestors(i, unit)


def _candidate_members(conn: Connection, cells: Sequence[Cell], last: int, trees: _TreeRuns,
                       overrides: Sequence[SpanOverride]) -> set[UUID] | None:
    """Members whose facts may count for a cell: its member owners, and whoever was ever in a unit owner's subtree."""
    unit_owners = {c.owner_id for c in cells} & trees.units_ever()
    member_owners = {c.owner_id for c in cells} - unit_owners
    if not unit_owners:
        return member_owners
    units = trees.subtrees_ever(unit_owners)
    if units >= trees.units_ever():
        return None  # the whole organisation: no filter
    m = LIVE.members.c
    found = set(member_owners)
    ids = sorted(units, key=str)
    for i in range(0, len(ids), 500):
        found.update(conn.execute(sa.select(m.member_id).where(m.position <= last, m.unit_id.in_(ids[i:i + 500])))
                     .scalars())
    for o in overrides:
        if any(s.unit_id in units for s in o.spans):
            found.add(o.member_id)
    return found


def _spans(conn: Connection, last: int, members: set[UUID] | None, overrides: Sequence[SpanOverride]
           ) -> dict[UUID, list[_SpanRow]]:
    m = LIVE.members.c
    query = sa.select(m.member_id, m.unit_id, m.position, m.valid_from, m.next_position, m.next_effective_at).where(
        m.position <= last)
    found: dict[UUID, list[_SpanRow]] = defaultdict(list)
    for row in _in_members(conn, query, m.member_id, None, members):
        found[row.member_id].append(_SpanRow(row.unit_id, row.position, row.valid_from, row.next_position,
                                             row.next_effective_at))
    for o in overrides:
        # A counterfactual's spans hold from the start of the log: they replace the member's history.
        found[o.member_id] = [_SpanRow(s.unit_id, 0, s.valid_from, None if s.valid_to is None else 0, s.valid_to)
                              for s in o.spans]
    return dict(found)


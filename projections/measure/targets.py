"""Targets as the measurement sees them, and the one roll-up rule every total follows.

A target, wherever it comes from (the live plan at a cut, a published version, a scenario),
is measured through its ``cell``: its owner's facts of its metric's kinds in its window,
narrowed like it, in its plan's currency.

**The roll-up rule.** For one metric and one window, the targets that stand for a scope are:

- a member: the member's own un-narrowed target; else their narrowed targets that are not
  nested in one another (a split by segment counts once, by its parts);
- a unit: the same for the unit's own targets; a unit without targets of its own is covered
  by its members' targets (each member placed in the unit they belonged to at the window's
  start) and its sub-units', recursively.

So a parent and its children by owner or narrowing never add up twice, and a target
decomposed two ways (by quarter and by rep) counts once per window. Ratio metrics never sum:
only the scope's own single target stands for it. A roll-up's *actual* is not a sum of
targets' actuals: it is the scope's own cell (every fact of the unit's subtree, placed where
its member was when it happened), so a member's move never moves history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.measure.facts import METRIC_KINDS, Cell
from projections.measure.organisation import Span, Tree, placements

__all__ = [
    "UNNARROWED", "Narrowing", "Rollup", "ScopedTarget", "Target", "TargetHistory", "Window", "additive", "cell",
    "covering", "from_period", "in_subtree", "metric_order", "midnight", "narrowing", "narrowings_of", "scope_cell",
    "targets_at", "window_order",
]


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True)
class Target:
    """One target: a metric for a window and a scope, with its committed and stretch values."""

    target_id: UUID
    plan_id: UUID
    parent_id: UUID | None
    metric: str
    period: str
    start: datetime
    end: datetime
    unit_id: UUID | None
    member_id: UUID | None
    product_line: str | None
    region: str | None
    segment: str | None
    committed: Decimal
    stretch: Decimal | None

    @property
    def owner_id(self) -> UUID:
        owner = self.member_id or self.unit_id
        assert owner is not None
        return owner

    @property
    def window(self) -> tuple[str, datetime, datetime]:
        return self.metric, self.start, self.end


def cell(target: Target, currency: str) -> Cell:
    return Cell(key=str(target.target_id), kinds=METRIC_KINDS[target.metric], owner_id=target.owner_id,
                start=target.start, end=target.end, currency=currency, product_line=target.product_line,
                region=target.region, segment=target.segment)


def targets_at(conn: Connection, cut: Cut, *, plan_ids: Iterable[UUID] | None = None, metric: str | None = None,
               period: str | None = None, target_ids: Iterable[UUID] | None = None) -> list[Target]:
    """The targets in force at the cut (removed ones excluded), in plan, window and metric order."""
    t = LIVE.targets
    c = t.c
    query = sa.select(t).where(cut.where(t), c.removed.is_(False))
    if plan_ids is not None:
        query = query.where(c.plan_id.in_(sorted(set(plan_ids), key=str)))
    if metric is not None:
        query = query.where(c.metric == metric)
    if period is not None:
        query = query.where(c.period == period)
    if target_ids is not None:
        query = query.where(c.target_id.in_(sorted(set(target_ids), key=str)))
    rows = conn.execute(query.order_by(c.plan_id, c.period_start, c.metric, c.position, c.target_id))
    return [
        Target(r.target_id, r.plan_id, r.parent_id, r.metric, r.period, midnight(r.period_start),
               midnight(r.period_end), r.unit_id, r.member_id, r.product_line, r.region, r.segment, r.committed,
               r.stretch)
        for r in rows
    ]


class ScopedTarget(Protocol):
    @property
    def target_id(self) -> UUID: ...
    @property
    def parent_id(self) -> UUID | None: ...
    @property
    def unit_id(self) -> UUID | None: ...
    @property
    def member_id(self) -> UUID | None: ...
    @property
    def product_line(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def segment(self) -> str | None: ...


T = TypeVar("T", bound=ScopedTarget)


def covering(targets: Sequence[T], *, tree: Tree, placed: dict[UUID, UUID], unit_id: UUID | None = None,
             member_id: UUID | None = None, additive: bool = True) -> list[T]:
    """The targets (of one metric and window) that stand for a unit or a member, none counted twice.

    ``placed`` gives each member's unit at the window's start (``organisation.placements``).
    """
    if (unit_id is None) == (member_id is None):
        raise ValueError("name exactly one of unit_id or member_id")
    if member_id is not None:
        return _own([t for t in targets if t.member_id == member_id], additive)
    if not additive:
        return _own([t for t in targets if t.unit_id == unit_id], additive)
    by_unit: dict[UUID, list[T]] = {}
    by_member: dict[UUID, list[T]] = {}
    for t in targets:
        if t.unit_id is not None:
            by_unit.setdefault(t.unit_id, []).append(t)
        elif t.member_id is not None:
            by_member.setdefault(t.member_id, []).append(t)
    members_in: dict[UUID, list[UUID]] = {}
    for member in sorted(by_member, key=str):
        unit = placed.get(member)
        if unit is not None:
            members_in.setdefault(unit, []).append(member)
    seen: set[UUID] = set()

    def walk(unit: UUID) -> list[T]:
        seen.add(unit)
        if unit in by_unit:
            return _own(by_unit[unit], additive)
        found: list[T] = []
        for member in members_in.get(unit, []):
            found += _own(by_member[member], additive)
        for child in tree.children(unit):
            if child not in seen:
                found += walk(child)
        return found

    assert unit_id is not None
    return walk(unit_id)


def _own(targets: list[T], additive: bool) -> list[T]:
    plain = [t for t in targets if t.product_line is None and t.region is None and t.segment is None]
    if plain:
        return plain[:1]  # a plan holds one target per metric, window and scope
    # A narrowing keeps the owner and the window, so a nested target's parent is in this same set.
    ids = {t.target_id for t in targets}
    roots = [t for t in targets if t.parent_id not in ids]
    return roots if additive or len(roots) == 1 else []


def in_subtree(target: ScopedTarget, units: set[UUID], placed: dict[UUID, UUID]) -> bool:
    """Whether a target belongs to a unit subtree: its unit, or its member's unit at the window's start."""
    if target.unit_id is not None:
        return target.unit_id in units
    return target.member_id is not None and placed.get(target.member_id) in units


def additive(metric: str) -> bool:
    return metric in v.ADDITIVE_METRICS


def from_period(*, target_id: UUID, plan_id: UUID, parent_id: UUID | None, metric: str, period: str,
                unit_id: UUID | None, member_id: UUID | None, product_line: str | None, region: str | None,
                segment: str | None, committed: Decimal, stretch: Decimal | None) -> Target:
    """A target whose window is its whole period (a version's or a scenario's target)."""
    p = v.Period.parse(period)
    return Target(target_id, plan_id, parent_id, metric, period, p.start_at, p.end_at, unit_id, member_id,
                  product_line, region, segment, committed, stretch)


Window = tuple[str, datetime, datetime]  # metric, start, end


class Rollup:
    """The roll-up rule over one set of targets (one plan, one version…): who stands for a scope in each window."""

    def __init__(self, targets: Sequence[Target], tree: Tree, spans: Mapping[UUID, Sequence[Span]]) -> None:
        self.tree = tree
        self._spans = spans
        self.groups: dict[Window, list[Target]] = {}
        for t in targets:
            self.groups.setdefault(t.window, []).append(t)
        self._placed: dict[datetime, dict[UUID, UUID]] = {}

    def windows(self) -> list[Window]:
        return sorted(self.groups, key=window_order)

    def placed(self, start: datetime) -> dict[UUID, UUID]:
        if start not in self._placed:
            self._placed[start] = placements(self._spans, start)
        return self._placed[start]

    def covering(self, window: Window, *, unit_id: UUID | None = None, member_id: UUID | None = None) -> list[Target]:
        return covering(self.groups.get(window, []), tree=self.tree, placed=self.placed(window[1]), unit_id=unit_id,
                        member_id=member_id, additive=additive(window[0]))


def metric_order(metric: str) -> int:
    return v.METRICS.index(metric) if metric in v.METRICS else len(v.METRICS)


def window_order(window: Window) -> tuple[int, datetime, float]:
    """Metrics as the domain lists them, then windows by start, the longer first (a year before its quarters)."""
    return metric_order(window[0]), window[1], -window[2].timestamp()


Narrowing = tuple[str | None, str | None, str | None]  # product line, region, segment
UNNARROWED: Narrowing = (None, None, None)


def narrowing(target: ScopedTarget) -> Narrowing:
    return target.product_line, target.region, target.segment


def narrowings_of(covering_targets: Sequence[ScopedTarget]) -> list[Narrowing]:
    """What a roll-up's actual counts: every fact of the scope when any standing target is unnarrowed
    (or none stands), else the facts in each distinct narrowing its targets plan for."""
    found = {narrowing(t) for t in covering_targets}
    return [UNNARROWED] if not found or UNNARROWED in found else sorted(found, key=str)


def scope_cell(key: str, metric: str, owner_id: UUID, start: datetime, end: datetime, currency: str,
               narrowed: Narrowing = UNNARROWED) -> Cell:
    """The scope's own facts (its whole subtree, each fact placed where its member was when it happened)."""
    return Cell(key=key, kinds=METRIC_KINDS[metric], owner_id=owner_id, start=start, end=end, currency=currency,
                product_line=narrowed[0], region=narrowed[1], segment=narrowed[2])


class TargetHistory:
    """Every row of some targets up to a position, to read them at many cuts without asking again."""

    def __init__(self, conn: Connection, *, plan_id: UUID, position: int, metric: str | None = None,
                 period: str | None = None) -> None:
        t = LIVE.targets
        c = t.c
        query = sa.select(t).where(c.plan_id == plan_id, c.position <= position)
        if metric is not None:
            query = query.where(c.metric == metric)
        if period is not None:
            query = query.where(c.period == period)
        self.rows: dict[UUID, list[Any]] = {}
        for row in conn.execute(query.order_by(c.target_id, c.position)):
            self.rows.setdefault(row.target_id, []).append(row)
        self.plan_id = plan_id

    def at(self, cut: Cut) -> list[Target]:
        """The targets in force at the cut (the visible rows of each are a prefix of its history)."""
        found = []
        for history in self.rows.values():
            row = None
            for r in history:
                if r.position > cut.position or (cut.as_of is not None and r.effective_at > cut.as_of):
                    break
                row = r
            if row is not None and not row.removed:
                found.append(Target(row.target_id, self.plan_id, row.parent_id, row.metric, row.period,
                                    midnight(row.period_start), midnight(row.period_end), row.unit_id,
                                    row.member_id, row.product_line, row.region, row.segment, row.committed,
                                    row.stretch))
        return found

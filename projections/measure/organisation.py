"""The organisation at a cut: the unit tree, who was in which unit when, and the names to show.

Two rules, used by every question:

- **The tree** is the one visible at the cut (units valid at its position and effective time).
- **Placement**: a fact counts for the unit its member belonged to *when the fact happened*
  (a deal won in March counts for the unit the rep was in in March), as known at the cut's
  position. Membership rows form spans ``[valid_from, valid_to)``: ``valid_from`` is NULL on a
  member's first row (so a fact back-dated before the member was added still has a unit), and
  ``valid_to`` is the next row's effective time once that row is visible at the position.

``spans`` and ``closure`` are the same rules as SQL, for the statements that measure in the
database; ``Tree``, ``member_spans`` and ``placements`` are them in Python, for the few rows a
roll-up needs.
A counterfactual may replace a member's spans (``SpanOverride``): nothing else changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.folds.progress import LIVE
from projections.history import Cut
from projections.measure.rows import json_rows

__all__ = [
    "Organisation", "Span", "SpanOverride", "Tree", "UnitHistory", "UnitNode", "closure", "member_names", "member_spans",
    "placements", "spans", "tree_at", "unit_at",
]


@dataclass(frozen=True)
class UnitNode:
    unit_id: UUID
    parent_id: UUID | None
    name: str
    active: bool


@dataclass(frozen=True)
class Tree:
    """The unit tree at a cut; walks are cycle-safe (a unit is never visited twice)."""

    nodes: Mapping[UUID, UnitNode]
    _children: dict[UUID | None, list[UUID]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        children: dict[UUID | None, list[UUID]] = defaultdict(list)
        for node in self.nodes.values():
            parent = node.parent_id if node.parent_id in self.nodes else None
            children[parent].append(node.unit_id)
        for ids in children.values():
            ids.sort(key=str)
        self._children.update(children)

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self.nodes

    def name(self, unit_id: UUID | None) -> str | None:
        node = self.nodes.get(unit_id) if unit_id is not None else None
        return node.name if node else None

    def children(self, unit_id: UUID | None) -> list[UUID]:
        return self._children.get(unit_id, [])

    def ancestors(self, unit_id: UUID | None) -> list[UUID]:
        """The unit and every unit above it, nearest first."""
        chain: list[UUID] = []
        while unit_id is not None and unit_id in self.nodes and unit_id not in chain:
            chain.append(unit_id)
            unit_id = self.nodes[unit_id].parent_id
        return chain

    def subtree(self, unit_id: UUID) -> set[UUID]:
        """The unit and every unit beneath it."""
        found: set[UUID] = set()
        stack = [unit_id] if unit_id in self.nodes else []
        while stack:
            unit = stack.pop()
            if unit not in found:
                found.add(unit)
                stack.extend(self.children(unit))
        return found

    def walk(self, root: UUID | None = None) -> Iterator[tuple[UnitNode, int]]:
        """Depth first from ``root`` (default: every top unit), children in id order, with depth."""
        seen: set[UUID] = set()
        stack = [(u, 0) for u in reversed([root] if root is not None else self.children(None))]
        while stack:
            unit, depth = stack.pop()
            if unit in seen or unit not in self.nodes:
                continue
            seen.add(unit)
            yield self.nodes[unit], depth
            stack.extend((child, depth + 1) for child in reversed(self.children(unit)))


def tree_at(conn: Connection, cut: Cut) -> Tree:
    u = LIVE.units
    rows = conn.execute(sa.select(u.c.unit_id, u.c.parent_id, u.c.name, u.c.active).where(cut.where(u)))
    return Tree({r.unit_id: UnitNode(r.unit_id, r.parent_id, r.name, r.active) for r in rows})


def member_names(conn: Connection, cut: Cut, member_ids: Iterable[UUID] | None = None) -> dict[UUID, str]:
    """Each member's name at the cut (all members when ``member_ids`` is None)."""
    m = LIVE.members
    query = sa.select(m.c.member_id, m.c.name).where(cut.where(m))
    ids = None if member_ids is None else sorted(set(member_ids), key=str)
    if ids is None:
        return {r.member_id: r.name for r in conn.execute(query)}
    names: dict[UUID, str] = {}
    for i in range(0, len(ids), 500):
        names.update({r.member_id: r.name for r in conn.execute(query.where(m.c.member_id.in_(ids[i:i + 500])))})
    return names


# --- spans: who was where when ----------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A member in a unit over ``[valid_from, valid_to)``; None is unbounded on that side."""

    unit_id: UUID
    valid_from: datetime | None
    valid_to: datetime | None

    def covers(self, when: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= when) and (self.valid_to is None or when < self.valid_to)


@dataclass(frozen=True)
class SpanOverride:
    """A member's spans replaced wholesale: the counterfactual "what if she had moved on another date"."""

    member_id: UUID
    spans: tuple[Span, ...]


def spans(position: int, overrides: Sequence[SpanOverride] = (), dialect: str = "") -> sa.Subquery:
    """Every membership span as known at ``position`` (member_id, unit_id, valid_from, valid_to)."""
    m = LIVE.members.c
    known = sa.select(
        m.member_id, m.unit_id, m.valid_from,
        sa.case((m.next_position <= position, m.next_effective_at), else_=sa.null()).label("valid_to"),
    ).where(m.position <= position)
    if not overrides:
        return known.subquery("spans")
    known = known.where(m.member_id.not_in([o.member_id for o in overrides]))
    rows = [(o.member_id, s.unit_id, s.valid_from, s.valid_to) for o in overrides for s in o.spans]
    if not rows:
        return known.subquery("spans")
    given = json_rows("given_spans", (("member_id", "uuid"), ("unit_id", "uuid"), ("valid_from", "time"),
                                      ("valid_to", "time")), rows, dialect)
    return sa.union_all(known, sa.select(given)).subquery("spans")


def closure(cut: Cut) -> sa.CTE:
    """(descendant, ancestor) for every unit at the cut, itself included: who a unit's facts count for."""
    u = LIVE.units.c
    units = sa.select(u.unit_id, u.parent_id).where(cut.where(LIVE.units)).cte("units_at")
    pairs = sa.select(units.c.unit_id.label("descendant"), units.c.unit_id.label("ancestor")).cte(
        "closure", recursive=True)
    parent = units.alias("parent_unit")
    # UNION, not UNION ALL: duplicates are dropped, so even a cyclic mix of two clocks terminates.
    return pairs.union(
        sa.select(pairs.c.descendant, parent.c.parent_id)
        .join(parent, parent.c.unit_id == pairs.c.ancestor)
        .where(parent.c.parent_id.is_not(None))
    )


def member_spans(conn: Connection, position: int, member_ids: Iterable[UUID],
                 overrides: Sequence[SpanOverride] = ()) -> dict[UUID, list[Span]]:
    """Each member's spans as known at ``position`` (overrides replace a member's spans)."""
    replaced = {o.member_id: list(o.spans) for o in overrides}
    ids = sorted(set(member_ids) - set(replaced), key=str)
    s = spans(position)
    found: dict[UUID, list[Span]] = defaultdict(list)
    for i in range(0, len(ids), 500):
        for r in conn.execute(sa.select(s).where(s.c.member_id.in_(ids[i:i + 500]))):
            found[r.member_id].append(Span(r.unit_id, r.valid_from, r.valid_to))
    found.update({m: replaced[m] for m in set(member_ids) & set(replaced)})
    return dict(found)


def unit_at(member_spans: Sequence[Span], when: datetime) -> UUID | None:
    for span in member_spans:
        if span.covers(when):
            return span.unit_id
    return None


def placements(found: Mapping[UUID, Sequence[Span]], when: datetime) -> dict[UUID, UUID]:
    """The unit each member was in at ``when`` (absent: no span covers it)."""
    placed = {}
    for member, member_spans in found.items():
        unit = unit_at(member_spans, when)
        if unit is not None:
            placed[member] = unit
    return placed


class UnitHistory:
    """Every unit row up to a position, to read the tree at many cuts without asking again."""

    def __init__(self, conn: Connection, position: int) -> None:
        u = LIVE.units.c
        self.rows = list(conn.execute(
            sa.select(u.unit_id, u.parent_id, u.name, u.active, u.position, u.effective_at)
            .where(u.position <= position).order_by(u.unit_id, u.position)))
        self._trees: dict[tuple[tuple[UUID, int], ...], Tree] = {}

    def at(self, cut: Cut) -> Tree:
        """The tree at the cut (each unit's visible rows are a prefix of its history)."""
        latest: dict[UUID, Any] = {}
        for r in self.rows:
            if r.position <= cut.position and (cut.as_of is None or r.effective_at <= cut.as_of):
                latest[r.unit_id] = r
        key = tuple(sorted(((u, r.position) for u, r in latest.items()), key=str))
        if key not in self._trees:
            self._trees[key] = Tree({u: UnitNode(u, r.parent_id, r.name, r.active) for u, r in latest.items()})
        return self._trees[key]


class Organisation:
    """The organisation at a cut, in Python: the tree, every member's spans as known at its position, the names.

    For the questions that place a handful of rows themselves (lists of deals and tasks, reports,
    alerts); measuring many facts is done in the database with ``spans`` and ``closure``.
    """

    def __init__(self, conn: Connection, cut: Cut, member_ids: Iterable[UUID] | None = None,
                 overrides: Sequence[SpanOverride] = ()) -> None:
        self.cut = cut
        self.tree = tree_at(conn, cut)
        m = LIVE.members.c
        ids = None if member_ids is None else set(member_ids)
        if ids is None:
            ids = set(conn.execute(sa.select(m.member_id).where(m.position <= cut.position).distinct()).scalars())
        self.spans = member_spans(conn, cut.position, ids, overrides)
        self._names = member_names(conn, Cut(cut.position), ids)

    def unit_of(self, member_id: UUID, when: datetime) -> UUID | None:
        return unit_at(self.spans.get(member_id, ()), when)

    def member_name(self, member_id: UUID | None) -> str | None:
        return None if member_id is None else self._names.get(member_id)

    def members_ever_in(self, units: set[UUID]) -> set[UUID]:
        return {member for member, found in self.spans.items() if any(s.unit_id in units for s in found)}

    def within(self, member_id: UUID, when: datetime, units: set[UUID]) -> bool:
        return self.unit_of(member_id, when) in units

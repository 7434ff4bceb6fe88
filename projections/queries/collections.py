"""Collections a front end lists and picks from: units, members, products, accounts, plans, targets, activities.

Read-only, at a cut, from the history tables of the ``progress`` projection (organisation,
plans, targets, deals, activities) and the ``catalogue`` projection (products, accounts):
the state of an entity at the cut is the one history row valid there (``Cut.where``). Every
row carries the display names of the entities it points to, as they were at the same cut.

Each list has one stable order and pages by keyset: ``after`` is the sort key of the last row
of the page before, and a list answers up to ``limit + 1`` rows (the extra one tells the
caller another page follows). Name orders use the database's collation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.folds.catalogue import LIVE as CATALOGUE
from projections.folds.progress import LIVE as PROGRESS
from projections.history import Cut

# --- helpers ---------------------------------------------------------------------------------


def after_key(columns: Sequence[sa.ColumnElement[Any]], key: Sequence[Any], *, descending: bool = False
              ) -> sa.ColumnElement[bool]:
    """Rows strictly after ``key`` in the order of ``columns`` (all ascending, or all descending)."""
    clauses = []
    for i, column in enumerate(columns):
        earlier = [columns[j] == key[j] for j in range(i)]
        clauses.append(sa.and_(*earlier, column < key[i] if descending else column > key[i]))
    return sa.or_(*clauses)


def contains(column: sa.ColumnElement[str], text: str) -> sa.ColumnElement[bool]:
    """Case-insensitive substring match; ``%`` and ``_`` in ``text`` match themselves."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(column).like(f"%{escaped}%", escape="\\")


def placed_then(members: sa.Table, position: int, when: sa.ColumnElement[datetime]) -> sa.ColumnElement[bool]:
    """The membership row that places a member at the time in ``when``, as known at ``position``.

    As the progress measurement places facts: a row places from its ``valid_from`` (the first
    row, whose ``valid_from`` is NULL, also places facts back-dated to before the member was
    added) until the next row known at ``position`` takes over.
    """
    c = members.c
    return sa.and_(
        c.position <= position, sa.or_(c.valid_from.is_(None), c.valid_from <= when),
        sa.or_(c.next_position.is_(None), c.next_position > position, c.next_effective_at > when),
    )


def subtree(conn: Connection, cut: Cut, unit_id: UUID) -> set[UUID]:
    """The unit and every unit beneath it, as the tree stood at the cut."""
    u = PROGRESS.units
    children: dict[UUID | None, list[UUID]] = defaultdict(list)
    for row in conn.execute(sa.select(u.c.unit_id, u.c.parent_id).where(cut.where(u))):
        children[row.parent_id].append(row.unit_id)
    found: set[UUID] = set()
    todo = [unit_id]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, ()))
    return found


def _fetch(conn: Connection, query: sa.Select[Any], limit: int) -> list[Any]:
    return list(conn.execute(query.limit(limit + 1)).mappings())


# --- units -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitRow:
    unit_id: UUID
    name: str
    parent_id: UUID | None
    parent_name: str | None
    active: bool
    changed_at: datetime


def list_units(conn: Connection, *, cut: Cut, parent_id: UUID | None = None, roots_only: bool = False,
               active: bool | None = None, q: str | None = None, after: tuple[str, UUID] | None = None,
               limit: int = 100) -> list[UnitRow]:
    """Units at the cut by name (then id); ``parent_id``: its direct children; ``roots_only``: the tops."""
    u = PROGRESS.units
    parent = cast(sa.Table, u.alias("parent"))
    query = (
        sa.select(u.c.unit_id, u.c.name, u.c.parent_id, parent.c.name.label("parent_name"), u.c.active,
                  u.c.effective_at.label("changed_at"))
        .select_from(u.outerjoin(parent, sa.and_(parent.c.unit_id == u.c.parent_id, cut.where(parent))))
        .where(cut.where(u))
    )
    if parent_id is not None:
        query = query.where(u.c.parent_id == parent_id)
    if roots_only:
        query = query.where(u.c.parent_id.is_(None))
    if active is not None:
        query = query.where(u.c.active.is_(active))
    if q:
        query = query.where(contains(u.c.name, q))
    if after is not None:
        query = query.where(after_key([u.c.name, u.c.unit_id], after))
    return [UnitRow(**r) for r in _fetch(conn, query.order_by(u.c.name, u.c.unit_id), limit)]


@dataclass(frozen=True)
class MemberRef:
    member_id: UUID
    name: str
    role: str
    active: bool


@dataclass
class UnitNode:
    unit_id: UUID
    name: str
    active: bool
    members: list[MemberRef] = field(default_factory=list)
    children: list[UnitNode] = field(default_factory=list)


def unit_tree(conn: Connection, *, cut: Cut, root_id: UUID | None = None, active_only: bool = False,
              members: bool = False) -> list[UnitNode]:
    """The organisation at the cut as nested units (by name), optionally with each unit's members.

    ``root_id``: that unit's subtree only (empty if it did not exist). ``active_only`` leaves
    out deactivated units, everything beneath them, and deactivated members.
    """
    u, m = PROGRESS.units, PROGRESS.members
    nodes: dict[UUID, UnitNode] = {}
    parents: dict[UUID, UUID | None] = {}
    for row in conn.execute(sa.select(u.c.unit_id, u.c.name, u.c.parent_id, u.c.active).where(cut.where(u))
                            .order_by(u.c.name, u.c.unit_id)):
        nodes[row.unit_id] = UnitNode(row.unit_id, row.name, row.active)
        parents[row.unit_id] = row.parent_id
    if members:
        query = sa.select(m.c.member_id, m.c.name, m.c.role, m.c.active, m.c.unit_id).where(cut.where(m))
        if active_only:
            query = query.where(m.c.active.is_(True))
        for row in conn.execute(query.order_by(m.c.name, m.c.member_id)):
            if row.unit_id in nodes:
                nodes[row.unit_id].members.append(MemberRef(row.member_id, row.name, row.role, row.active))
    roots = []
    for unit_id, node in nodes.items():  # in name order: children lists come out sorted too
        parent = parents[unit_id]
        if unit_id == root_id or (root_id is None and parent not in nodes):
            roots.append(node)
        elif parent in nodes:
            nodes[parent].children.append(node)

    def kept(node: UnitNode) -> bool:
        node.children = [child for child in node.children if kept(child)]
        return node.active or not active_only

    return [root for root in roots if kept(root)]


# --- members ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRow:
    member_id: UUID
    name: str
    role: str
    unit_id: UUID
    unit_name: str | None
    active: bool
    changed_at: datetime


def list_members(conn: Connection, *, cut: Cut, unit_ids: Iterable[UUID] | None = None, active: bool | None = None,
                 role: str | None = None, q: str | None = None, after: tuple[str, UUID] | None = None,
                 limit: int = 100) -> list[MemberRow]:
    """Members at the cut by name (then id); ``unit_ids``: those who belong to one of these units."""
    m, u = PROGRESS.members, PROGRESS.units
    query = (
        sa.select(m.c.member_id, m.c.name, m.c.role, m.c.unit_id, u.c.name.label("unit_name"), m.c.active,
                  m.c.effective_at.label("changed_at"))
        .select_from(m.outerjoin(u, sa.and_(u.c.unit_id == m.c.unit_id, cut.where(u))))
        .where(cut.where(m))
    )
    if unit_ids is not None:
        query = query.where(m.c.unit_id.in_(sorted(unit_ids)))
    if active is not None:
        query = query.where(m.c.active.is_(active))
    if role is not None:
        query = query.where(m.c.role == role)
    if q:
        query = query.where(contains(m.c.name, q))
    if after is not None:
        query = query.where(after_key([m.c.name, m.c.member_id], after))
    return [MemberRow(**r) for r in _fetch(conn, query.order_by(m.c.name, m.c.member_id), limit)]


# --- products and accounts -------------------------------------------------------------------


@dataclass(frozen=True)
class ProductRow:
    product_id: UUID
    name: str
    product_line: str
    list_price: Decimal
    currency: str
    changed_at: datetime


def list_products(conn: Connection, *, cut: Cut, product_line: str | None = None, currency: str | None = None,
                  q: str | None = None, after: tuple[str, UUID] | None = None, limit: int = 100) -> list[ProductRow]:
    """Products at the cut by name (then id)."""
    p = CATALOGUE.products
    query = sa.select(p.c.product_id, p.c.name, p.c.product_line, p.c.list_price, p.c.currency,
                      p.c.effective_at.label("changed_at")).where(cut.where(p))
    if product_line is not None:
        query = query.where(p.c.product_line == product_line)
    if currency is not None:
        query = query.where(p.c.currency == currency)
    if q:
        query = query.where(contains(p.c.name, q))
    if after is not None:
        query = query.where(after_key([p.c.name, p.c.product_id], after))
    return [ProductRow(**r) for r in _fetch(conn, query.order_by(p.c.name, p.c.product_id), limit)]


@dataclass(frozen=True)
class AccountRow:
    account_id: UUID
    name: str
    segment: str
    region: str
    changed_at: datetime


def list_accounts(conn: Connection, *, cut: Cut, segment: str | None = None, region: str | None = None,
                  q: str | None = None, after: tuple[str, UUID] | None = None, limit: int = 100) -> list[AccountRow]:
    """Accounts at the cut by name (then id)."""
    a = CATALOGUE.accounts
    query = sa.select(a.c.account_id, a.c.name, a.c.segment, a.c.region,
                      a.c.effective_at.label("changed_at")).where(cut.where(a))
    if segment is not None:
        query = query.where(a.c.segment == segment)
    if region is not None:
        query = query.where(a.c.region == region)
    if q:
        query = query.where(contains(a.c.name, q))
    if after is not None:
        query = query.where(after_key([a.c.name, a.c.account_id], after))
    return [AccountRow(**r) for r in _fetch(conn, query.order_by(a.c.name, a.c.account_id), limit)]


# --- plans and their targets -----------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    plan_id: UUID
    name: str
    span: str
    currency: str
    unit_id: UUID
    unit_name: str | None
    status: str
    published_version: int
    changed_at: datetime


def list_plans(conn: Connection, *, cut: Cut, unit_id: UUID | None = None, status: str | None = None,
               span: str | None = None, q: str | None = None, after: tuple[str, UUID] | None = None,
               limit: int = 100) -> list[PlanRow]:
    """Plans at the cut by name (then id); ``unit_id``: the plans that unit owns."""
    p, u = PROGRESS.plans, PROGRESS.units
    query = (
        sa.select(p.c.plan_id, p.c.name, p.c.span, p.c.currency, p.c.unit_id, u.c.name.label("unit_name"),
                  p.c.status, p.c.published_version, p.c.effective_at.label("changed_at"))
        .select_from(p.outerjoin(u, sa.and_(u.c.unit_id == p.c.unit_id, cut.where(u))))
        .where(cut.where(p))
    )
    for column, value in ((p.c.unit_id, unit_id), (p.c.status, status), (p.c.span, span)):
        if value is not None:
            query = query.where(column == value)
    if q:
        query = query.where(contains(p.c.name, q))
    if after is not None:
        query = query.where(after_key([p.c.name, p.c.plan_id], after))
    return [PlanRow(**r) for r in _fetch(conn, query.order_by(p.c.name, p.c.plan_id), limit)]


@dataclass(frozen=True)
class PublishedValue:
    """A target's values in one published version."""

    version: int
    committed: Decimal
    stretch: Decimal | None


@dataclass(frozen=True)
class TargetNode:
    """One target of a plan's tree at the cut: where it hangs, whose it is, and its value in every version."""

    target_id: UUID
    parent_id: UUID | None
    depth: int
    metric: str
    period: str
    period_start: date
    period_end: date
    unit_id: UUID | None
    unit_name: str | None
    member_id: UUID | None
    member_name: str | None
    product_line: str | None
    region: str | None
    segment: str | None
    committed: Decimal
    stretch: Decimal | None
    removed: bool
    changed_at: datetime
    versions: list[PublishedValue]


@dataclass(frozen=True)
class PlanTargets:
    plan_id: UUID
    name: str
    currency: str
    published_versions: list[int]
    targets: list[TargetNode]


def publications(conn: Connection, cut: Cut, plan_id: UUID) -> dict[int, int]:
    """Version → the log position it was published at, for the versions published at the cut."""
    p = PROGRESS.plans
    query = (sa.select(p.c.published_version, sa.func.min(p.c.position))
             .where(p.c.plan_id == plan_id, p.c.published_version > 0, p.c.position <= cut.position)
             .group_by(p.c.published_version))
    if cut.as_of is not None:
        query = query.where(p.c.effective_at <= cut.as_of)
    return {int(version): int(position) for version, position in conn.execute(query)}


def plan_targets(conn: Connection, *, cut: Cut, plan_id: UUID, include_removed: bool = False) -> PlanTargets | None:
    """The plan's targets at the cut in tree order (each parent before its children), or None if no such plan.

    Siblings are ordered by metric, period, owner name, narrowing and id. A target's value in
    version N is the one in force when N was published (a publication freezes the tree).
    """
    p, t, u, m = PROGRESS.plans, PROGRESS.targets, PROGRESS.units, PROGRESS.members
    plan = conn.execute(sa.select(p.c.name, p.c.currency).where(cut.where(p), p.c.plan_id == plan_id)).first()
    if plan is None:
        return None
    query = (
        sa.select(t, u.c.name.label("unit_name"), m.c.name.label("member_name"))
        .select_from(t.outerjoin(u, sa.and_(u.c.unit_id == t.c.unit_id, cut.where(u)))
                     .outerjoin(m, sa.and_(m.c.member_id == t.c.member_id, cut.where(m))))
        .where(cut.where(t), t.c.plan_id == plan_id)
    )
    if not include_removed:
        query = query.where(t.c.removed.is_(False))
    rows = {r["target_id"]: r for r in conn.execute(query).mappings()}
    versions = publications(conn, cut, plan_id)
    values: dict[UUID, list[PublishedValue]] = defaultdict(list)
    for version, position in sorted(versions.items()):
        frozen = conn.execute(sa.select(t.c.target_id, t.c.committed, t.c.stretch, t.c.removed).where(
            Cut(position).where(t), t.c.plan_id == plan_id)).all()
        for value in frozen:
            if not value.removed and value.target_id in rows:
                values[value.target_id].append(PublishedValue(version, value.committed, value.stretch))
    children: dict[UUID | None, list[Any]] = defaultdict(list)
    for row in rows.values():
        children[row["parent_id"] if row["parent_id"] in rows else None].append(row)

    def order(row: Any) -> tuple[Any, ...]:
        return (row["metric"], row["period_start"], row["period_end"], row["period"], row["unit_name"] or "",
                row["member_name"] or "", row["product_line"] or "", row["region"] or "", row["segment"] or "",
                str(row["target_id"]))

    nodes: list[TargetNode] = []
    todo = [(row, 0) for row in sorted(children[None], key=order, reverse=True)]
    while todo:
        row, depth = todo.pop()
        nodes.append(TargetNode(
            target_id=row["target_id"], parent_id=row["parent_id"], depth=depth, metric=row["metric"],
            period=row["period"], period_start=row["period_start"], period_end=row["period_end"],
            unit_id=row["unit_id"], unit_name=row["unit_name"], member_id=row["member_id"],
            member_name=row["member_name"], product_line=row["product_line"], region=row["region"],
            segment=row["segment"], committed=row["committed"], stretch=row["stretch"], removed=row["removed"],
            changed_at=row["effective_at"], versions=values.get(row["target_id"], []),
        ))
        todo.extend((child, depth + 1) for child in sorted(children[row["target_id"]], key=order, reverse=True))
    return PlanTargets(plan_id, plan.name, plan.currency, sorted(versions), nodes)


# --- activities ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivityRow:
    activity_id: UUID
    kind: str
    member_id: UUID
    member_name: str | None
    unit_id: UUID | None
    unit_name: str | None
    deal_id: UUID | None
    deal_name: str | None
    account_id: UUID | None
    account_name: str | None
    effective_at: datetime
    recorded_at: datetime
    position: int


def list_activities(
    conn: Connection, *, cut: Cut, member_id: UUID | None = None, unit_ids: Iterable[UUID] | None = None,
    deal_id: UUID | None = None, kind: str | None = None, effective_from: datetime | None = None,
    effective_to: datetime | None = None, after: tuple[datetime, UUID] | None = None, limit: int = 100,
) -> list[ActivityRow]:
    """Activities at the cut, newest first (then by id); time ranges are [from, to).

    ``unit_id`` is the unit the member belonged to when the activity happened (a move later
    does not take it along); ``unit_ids`` keeps the activities of members who were in one of them.
    """
    a, m, u, d = PROGRESS.activities, PROGRESS.members, PROGRESS.units, PROGRESS.deals
    then = cast(sa.Table, m.alias("member_then"))
    accounts = CATALOGUE.accounts
    query = (
        sa.select(a.c.activity_id, a.c.kind, a.c.member_id, m.c.name.label("member_name"),
                  then.c.unit_id, u.c.name.label("unit_name"), a.c.deal_id, d.c.name.label("deal_name"),
                  d.c.account_id, accounts.c.name.label("account_name"), a.c.effective_at, a.c.recorded_at,
                  a.c.position)
        .select_from(
            a.outerjoin(m, sa.and_(m.c.member_id == a.c.member_id, cut.where(m)))
            .outerjoin(then, sa.and_(then.c.member_id == a.c.member_id,
                                     placed_then(then, cut.position, a.c.effective_at)))
            .outerjoin(u, sa.and_(u.c.unit_id == then.c.unit_id, cut.where(u)))
            .outerjoin(d, sa.and_(d.c.deal_id == a.c.deal_id, cut.where(d)))
            .outerjoin(accounts, sa.and_(accounts.c.account_id == d.c.account_id, cut.where(accounts)))
        )
        .where(cut.where(a))
    )
    for column, value in ((a.c.member_id, member_id), (a.c.deal_id, deal_id), (a.c.kind, kind)):
        if value is not None:
            query = query.where(column == value)
    if unit_ids is not None:
        query = query.where(then.c.unit_id.in_(sorted(unit_ids)))
    if effective_from is not None:
        query = query.where(a.c.effective_at >= effective_from)
    if effective_to is not None:
        query = query.where(a.c.effective_at < effective_to)
    if after is not None:
        query = query.where(after_key([a.c.effective_at, a.c.activity_id], after, descending=True))
    query = query.order_by(a.c.effective_at.desc(), a.c.activity_id.desc())
    return [ActivityRow(**r) for r in _fetch(conn, query, limit)]

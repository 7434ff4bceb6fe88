"""Plan versions: how the plan evolved, and what each version would have asked of reality.

Every ``Plan.Published`` freezes the plan's working target tree as a numbered version, kept
forever. Between two publications every addition, revision, decomposition and removal is
recorded with its reason and the version it prepares (``draft_of_version``), so comparing
v1 with v2 shows both what moved and the reason chain that moved it.

The working (unpublished) tree lives in this projection's own ``plan_version_working``
table: a batch loads only the working rows its events touch, plus the whole tree of a
plan it publishes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.plan import Plan
from projections.engine import Envelope, Projection
from projections.sqltypes import Money, UTCDateTime

# --- pure folds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionTarget:
    """One target of a plan's tree (working or published)."""

    target_id: UUID
    parent_id: UUID | None
    metric: str
    period: str
    unit_id: UUID | None
    member_id: UUID | None
    product_line: str | None
    region: str | None
    segment: str | None
    committed: Decimal
    stretch: Decimal | None
    # A clipped window (an ISO week split out of a month): the days of the period the target covers.
    window_start: date | None = None
    window_end: date | None = None


TARGET_EVENTS: Final = (Plan.TargetSet, Plan.TargetDecomposed, Plan.TargetRevised, Plan.TargetRemoved)
LOCK_EVENTS: Final = (Plan.PeriodLocked, Plan.PeriodUnlocked)

ADDED: Final = "added"
REVISED: Final = "revised"
REMOVED: Final = "removed"
DECOMPOSED: Final = "decomposed"


@dataclass(frozen=True)
class TargetChange:
    """What one event did to one target of the working tree.

    A revision or removal is one change with its effects: the target it names first, then every
    target it moved, all at the event's position (``seq`` orders them), all with its reason.
    """

    kind: str  # added | revised | removed | decomposed, or an effect: rolled_up | absorbed | re_spread
    target: VersionTarget  # after the change; for a removal, as it was
    before_committed: Decimal | None
    after_committed: Decimal | None
    before_stretch: Decimal | None
    after_stretch: Decimal | None


Tree = Mapping[UUID, VersionTarget]


def _new(target_id: UUID, parent_id: UUID | None, metric: str, period: str, scope: Mapping[str, Any],
         committed: Decimal, stretch: Decimal | None, start: date | None = None, end: date | None = None
         ) -> VersionTarget:
    return VersionTarget(
        target_id=target_id, parent_id=parent_id, metric=metric, period=period, unit_id=scope.get("unit_id"),
        member_id=scope.get("member_id"), product_line=scope.get("product_line"), region=scope.get("region"),
        segment=scope.get("segment"), committed=committed, stretch=stretch, window_start=start, window_end=end,
    )


def _added(target: VersionTarget) -> TargetChange:
    return TargetChange(ADDED, target, None, target.committed, None, target.stretch)


def working_changes(tree: Tree, event: Any) -> list[TargetChange]:
    """The changes one target event makes to a plan's working tree (which must hold what it touches)."""
    if isinstance(event, Plan.TargetSet):
        return [_added(_new(event.target_id, event.parent_id, event.metric, event.period, event.scope,
                            event.committed, event.stretch))]
    if isinstance(event, Plan.TargetDecomposed):
        parent = tree[event.parent_id]
        return [TargetChange(DECOMPOSED, parent, parent.committed, parent.committed, parent.stretch, parent.stretch)] + [
            _added(_new(c["target_id"], event.parent_id, parent.metric, c["period"], c["scope"], c["committed"],
                        c["stretch"], c.get("start"), c.get("end")))
            for c in event.children
        ]
    if isinstance(event, Plan.TargetRevised):
        revised = replace(tree[event.target_id], committed=event.committed, stretch=event.stretch)
        return [TargetChange(REVISED, revised, event.previous_committed, event.committed, event.previous_stretch,
                             event.stretch), *_effects(tree, event)]
    if isinstance(event, Plan.TargetRemoved):
        return [
            TargetChange(REMOVED, tree[t], tree[t].committed, None, tree[t].stretch, None) for t in event.removed_ids
        ] + _effects(tree, event)
    raise TypeError(f"unexpected target event {type(event).__qualname__}")


def _effects(tree: Tree, event: Plan.TargetRevised | Plan.TargetRemoved) -> list[TargetChange]:
    """What one revision or removal moved besides the target it names: recorded at the same
    position, after it, each kind saying how (rolled_up, absorbed, re_spread)."""
    return [
        TargetChange(e["via"], replace(tree[e["target_id"]], committed=e["committed"], stretch=e["stretch"]),
                     e["previous_committed"], e["committed"], e["previous_stretch"], e["stretch"])
        for e in event.effects
    ]


def apply_changes(tree: dict[UUID, VersionTarget], changes: Iterable[TargetChange]) -> None:
    for change in changes:
        if change.kind == REMOVED:
            tree.pop(change.target.target_id, None)
        else:
            tree[change.target.target_id] = change.target


def evolve_working(tree: Tree, event: Any) -> dict[UUID, VersionTarget]:
    """The working tree after one event (a new dict: the fold is pure)."""
    after = dict(tree)
    if isinstance(event, TARGET_EVENTS):
        apply_changes(after, working_changes(tree, event))
    return after


def metric_order(metric: str) -> tuple[int, str]:
    return (v.METRICS.index(metric) if metric in v.METRICS else len(v.METRICS), metric)


def tree_order(target: VersionTarget) -> tuple[Any, ...]:
    """Metric as the domain lists them, then period in calendar order, then scope: the same
    order on every backend."""
    scope = (target.unit_id, target.member_id, target.product_line, target.region, target.segment)
    start = target.window_start or v.Period.parse(target.period).start
    return (metric_order(target.metric), start, target.period,
            *("" if s is None else str(s) for s in scope), str(target.target_id))


def snapshot(tree: Tree) -> list[VersionTarget]:
    """The version a publication freezes: the whole working tree, in tree order."""
    return sorted(tree.values(), key=tree_order)


# --- the view ------------------------------------------------------------------------------

def _target_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("target_id", sa.Uuid, primary_key=True),
        sa.Column("parent_id", sa.Uuid, nullable=True),
        sa.Column("metric", sa.String(30), nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("unit_id", sa.Uuid, nullable=True),
        sa.Column("member_id", sa.Uuid, nullable=True),
        sa.Column("product_line", sa.String(100), nullable=True),
        sa.Column("region", sa.String(100), nullable=True),
        sa.Column("segment", sa.String(100), nullable=True),
        sa.Column("committed", Money, nullable=False),
        sa.Column("stretch", Money, nullable=True),
        sa.Column("window_start", sa.Date, nullable=True),  # NULL: the whole period
        sa.Column("window_end", sa.Date, nullable=True),
    ]


_TARGET_FIELDS: Final = ("target_id", "parent_id", "metric", "period", "unit_id", "member_id", "product_line",
                         "region", "segment", "committed", "stretch", "window_start", "window_end")


def as_row(target: VersionTarget) -> dict[str, Any]:
    return {f: getattr(target, f) for f in _TARGET_FIELDS}


def as_target(row: Any) -> VersionTarget:
    return VersionTarget(**{f: row[f] for f in _TARGET_FIELDS})


class PlanVersionsProjection(Projection):
    """Answers "how did the plan evolve": every published version's tree and the reasons in between."""

    name = "plan_version"
    fold_version = 2
    topics = (*TARGET_EVENTS, Plan.Published, *LOCK_EVENTS)

    def define_tables(self) -> None:
        self.versions = self.table(
            "plan_versions",
            sa.Column("plan_id", sa.Uuid, primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True),
            sa.Column("position", sa.BigInteger, nullable=False),
            sa.Column("recorded_at", UTCDateTime, nullable=False),
            sa.Column("effective_at", UTCDateTime, nullable=False),
            sa.Column("actor", sa.Text, nullable=False),
            sa.Column("note", sa.Text, nullable=False),
        )
        self.version_targets = self.table(
            "plan_version_targets",
            sa.Column("plan_id", sa.Uuid, primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True),
            *_target_columns(),
        )
        self.working = self.table(
            "plan_version_working",
            sa.Column("plan_id", sa.Uuid, primary_key=True),
            *_target_columns(),
        )
        self.changes = self.table(
            "plan_version_changes",
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True),
            sa.Column("plan_id", sa.Uuid, nullable=False),
            sa.Column("recorded_at", UTCDateTime, nullable=False),
            sa.Column("effective_at", UTCDateTime, nullable=False),
            sa.Column("actor", sa.Text, nullable=False),
            sa.Column("target_id", sa.Uuid, nullable=False),
            sa.Column("metric", sa.String(30), nullable=False),
            sa.Column("period", sa.String(10), nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("before_committed", Money, nullable=True),
            sa.Column("after_committed", Money, nullable=True),
            sa.Column("before_stretch", Money, nullable=True),
            sa.Column("after_stretch", Money, nullable=True),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("draft_of_version", sa.Integer, nullable=False),
            indexes=[("plan_id", "position", "seq")],
        )
        # Which periods of a plan were locked, from when to when (both clocks), by whom and why.
        self.locks = self.table(
            "plan_period_locks",
            sa.Column("plan_id", sa.Uuid, primary_key=True),
            sa.Column("period", sa.String(10), primary_key=True),
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("start", sa.Date, nullable=False),
            sa.Column("end", sa.Date, nullable=False),
            sa.Column("plan_version", sa.Integer, nullable=False),
            sa.Column("effective_at", UTCDateTime, nullable=False),
            sa.Column("recorded_at", UTCDateTime, nullable=False),
            sa.Column("actor", sa.Text, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("unlocked_position", sa.BigInteger, nullable=True),
            sa.Column("unlocked_effective_at", UTCDateTime, nullable=True),
            sa.Column("unlocked_recorded_at", UTCDateTime, nullable=True),
            sa.Column("unlocked_by", sa.Text, nullable=True),
            sa.Column("unlock_reason", sa.Text, nullable=True),
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        plans = {e.event.originator_id for e in batch}
        publishing = {e.event.originator_id for e in batch if isinstance(e.event, Plan.Published)}
        touched: set[UUID] = set()
        for envelope in batch:
            e = envelope.event
            if e.originator_id in publishing:
                continue
            if isinstance(e, Plan.TargetDecomposed):
                touched.add(e.parent_id)
            elif isinstance(e, Plan.TargetRevised):
                touched.update(e.moved())
            elif isinstance(e, Plan.TargetRemoved):
                touched.update([*e.removed_ids, *e.moved()])
        latest = self._latest_versions(conn, plans)
        working = self._load_working(conn, publishing, plans - publishing, touched)
        initial = {(p, t): target for p, tree in working.items() for t, target in tree.items()}
        changes: list[dict[str, Any]] = []
        versions: list[dict[str, Any]] = []
        frozen: list[dict[str, Any]] = []
        for envelope in batch:
            e = envelope.event
            plan_id = e.originator_id
            tree = working[plan_id]
            stamp = {"plan_id": plan_id, "recorded_at": envelope.recorded_at, "effective_at": e.effective_at,
                     "actor": e.actor}
            if isinstance(e, LOCK_EVENTS):
                self._lock(conn, envelope)
                continue
            if isinstance(e, Plan.Published):
                versions.append({**stamp, "version": e.version, "position": envelope.position, "note": e.note})
                frozen.extend({"plan_id": plan_id, "version": e.version, **as_row(t)} for t in snapshot(tree))
                latest[plan_id] = e.version
                continue
            made = working_changes(tree, e)
            changes.extend(
                {**stamp, "position": envelope.position, "seq": seq, "target_id": c.target.target_id,
                 "metric": c.target.metric, "period": c.target.period, "kind": c.kind,
                 "before_committed": c.before_committed, "after_committed": c.after_committed,
                 "before_stretch": c.before_stretch, "after_stretch": c.after_stretch, "reason": e.reason,
                 "draft_of_version": latest.get(plan_id, 0) + 1}
                for seq, c in enumerate(made)
            )
            apply_changes(tree, made)
        self._save_working(conn, initial, working)
        for table, rows in ((self.changes, changes), (self.versions, versions), (self.version_targets, frozen)):
            if rows:
                conn.execute(table.insert(), rows)

    def _lock(self, conn: Connection, envelope: Envelope) -> None:
        e = envelope.event
        if isinstance(e, Plan.PeriodLocked):
            conn.execute(self.locks.insert().values(
                plan_id=e.originator_id, period=e.period, position=envelope.position, start=e.start, end=e.end,
                plan_version=e.plan_version, effective_at=e.effective_at, recorded_at=envelope.recorded_at,
                actor=e.actor, reason=e.reason))
            return
        c = self.locks.c
        conn.execute(self.locks.update().where(
            c.plan_id == e.originator_id, c.period == e.period, c.unlocked_position.is_(None),
        ).values(unlocked_position=envelope.position, unlocked_effective_at=e.effective_at,
                 unlocked_recorded_at=envelope.recorded_at, unlocked_by=e.actor, unlock_reason=e.reason))

    def _latest_versions(self, conn: Connection, plans: set[UUID]) -> dict[UUID, int]:
        c = self.versions.c
        rows = conn.execute(sa.select(c.plan_id, sa.func.max(c.version)).where(c.plan_id.in_(sorted(plans)))
                            .group_by(c.plan_id)).all()
        return {plan_id: int(version) for plan_id, version in rows}

    def _load_working(self, conn: Connection, whole: set[UUID], partial: set[UUID], targets: set[UUID]
                      ) -> defaultdict[UUID, dict[UUID, VersionTarget]]:
        """The whole working tree of ``whole`` plans; of ``partial`` plans, only ``targets``."""
        working: defaultdict[UUID, dict[UUID, VersionTarget]] = defaultdict(dict)
        c = self.working.c
        queries = []
        if whole:
            queries.append(sa.select(self.working).where(c.plan_id.in_(sorted(whole))))
        ids = sorted(targets)
        for i in range(0, len(ids), 500):
            # Over-fetches at most a target id reused across plans; the primary key serves both lists.
            queries.append(sa.select(self.working).where(c.plan_id.in_(sorted(partial)),
                                                         c.target_id.in_(ids[i : i + 500])))
        for query in queries:
            for row in conn.execute(query).mappings():
                working[row["plan_id"]][row["target_id"]] = as_target(row)
        return working

    def _save_working(self, conn: Connection, initial: Mapping[tuple[UUID, UUID], VersionTarget],
                      working: Mapping[UUID, Mapping[UUID, VersionTarget]]) -> None:
        final = {(p, t): target for p, tree in working.items() for t, target in tree.items()}
        c = self.working.c
        gone = [{"b_plan_id": p, "b_target_id": t} for p, t in initial if (p, t) not in final]
        if gone:
            conn.execute(self.working.delete().where(
                c.plan_id == sa.bindparam("b_plan_id"), c.target_id == sa.bindparam("b_target_id")), gone)
        changed = [
            {"b_plan_id": p, "b_target_id": t, **{f"b_{k}": val for k, val in as_row(target).items()
                                                   if k != "target_id"}}
            for (p, t), target in final.items() if (p, t) in initial and initial[(p, t)] != target
        ]
        if changed:
            conn.execute(
                self.working.update()
                .where(c.plan_id == sa.bindparam("b_plan_id"), c.target_id == sa.bindparam("b_target_id"))
                .values({k: sa.bindparam(f"b_{k}") for k in _TARGET_FIELDS if k != "target_id"}),
                changed,
            )
        added = [{"plan_id": p, **as_row(target)} for (p, t), target in final.items() if (p, t) not in initial]
        if added:
            conn.execute(self.working.insert(), added)


LIVE = PlanVersionsProjection()
"""The live tables, for queries."""



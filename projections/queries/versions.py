"""Queries over the versions projection's tables (``projections.folds.versions``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from projections.folds.progress import LIVE as PROGRESS
from projections.folds.versions import LIVE, VersionTarget, as_row, as_target, metric_order, snapshot
from projections.history import Cut
from projections.queries import progress as progress_projection
from projections.queries.progress import ProgressConfig, ProgressFilter, ProgressRow, progress

# --- queries -----------------------------------------------------------------------------------


class VersionNotFound(LookupError):
    """The plan has no such published version (or not as known at the given position)."""

    def __init__(self, plan_id: UUID, version: int) -> None:
        super().__init__(f"plan {plan_id} has no published version {version}")
        self.plan_id = plan_id
        self.version = version


@dataclass(frozen=True)
class PlanVersion:
    plan_id: UUID
    version: int
    position: int  # of its Published event
    recorded_at: datetime
    effective_at: datetime
    actor: str
    note: str


@dataclass(frozen=True)
class VersionTree:
    version: PlanVersion
    targets: list[VersionTarget]


@dataclass(frozen=True)
class VersionChange:
    """One change to the working tree, recorded while ``draft_of_version`` was being prepared."""

    plan_id: UUID
    position: int
    seq: int
    recorded_at: datetime
    effective_at: datetime
    actor: str
    target_id: UUID
    metric: str
    period: str
    kind: str
    before_committed: Decimal | None
    after_committed: Decimal | None
    before_stretch: Decimal | None
    after_stretch: Decimal | None
    reason: str
    draft_of_version: int


@dataclass(frozen=True)
class TargetDelta:
    """A target in both versions whose committed or stretch value moved, and the reasons it moved."""

    target: VersionTarget  # as in the later version
    before_committed: Decimal
    after_committed: Decimal
    committed_delta: Decimal
    before_stretch: Decimal | None
    after_stretch: Decimal | None
    stretch_delta: Decimal | None  # None unless both versions have a stretch value
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class MetricTotal:
    """What a version plans for one additive metric in one period, beside the other version.

    Per period, because a year and its quarters must not be added up; within a period, a
    target counts unless its parent is in the same period (a unit's Q2 split by member is
    counted once, as the unit's Q2). When revised children no longer sum to their parent,
    the parent's period and the children's periods show it. The stretch total counts a
    target without a stretch value at its committed value. Ratio metrics never sum up.
    """

    metric: str
    period: str
    from_committed: Decimal
    to_committed: Decimal
    committed_delta: Decimal
    from_stretch: Decimal
    to_stretch: Decimal
    stretch_delta: Decimal


@dataclass(frozen=True)
class VersionComparison:
    plan_id: UUID
    from_version: int
    to_version: int
    added: list[VersionTarget]
    removed: list[VersionTarget]
    changed: list[TargetDelta]
    changes: list[VersionChange]  # recorded between the two publications, in log order
    totals: list[MetricTotal]


def _version(row: Any) -> PlanVersion:
    return PlanVersion(plan_id=row.plan_id, version=row.version, position=row.position, recorded_at=row.recorded_at,
                       effective_at=row.effective_at, actor=row.actor, note=row.note)


def list_versions(conn: Connection, plan_id: UUID, *, position: int | None = None) -> list[PlanVersion]:
    """The plan's published versions, oldest first; with ``position``: those published at or before it."""
    c = LIVE.versions.c
    query = sa.select(LIVE.versions).where(c.plan_id == plan_id)
    if position is not None:
        query = query.where(c.position <= position)
    return [_version(r) for r in conn.execute(query.order_by(c.version))]


def _find_version(conn: Connection, plan_id: UUID, version: int, position: int | None) -> PlanVersion:
    c = LIVE.versions.c
    query = sa.select(LIVE.versions).where(c.plan_id == plan_id, c.version == version)
    if position is not None:
        query = query.where(c.position <= position)
    row = conn.execute(query).first()
    if row is None:
        raise VersionNotFound(plan_id, version)
    return _version(row)


def _targets(conn: Connection, plan_id: UUID, version: int) -> list[VersionTarget]:
    c = LIVE.version_targets.c
    rows = conn.execute(sa.select(LIVE.version_targets).where(c.plan_id == plan_id, c.version == version)).mappings()
    return snapshot({r["target_id"]: as_target(r) for r in rows})


def version_tree(conn: Connection, plan_id: UUID, version: int, *, position: int | None = None) -> VersionTree:
    """The target tree the plan had when ``version`` was published (VersionNotFound if it never was,
    or was not yet as known at ``position``)."""
    found = _find_version(conn, plan_id, version, position)
    return VersionTree(found, _targets(conn, plan_id, version))


def changes_between(conn: Connection, plan_id: UUID, after_position: int, up_to_position: int) -> list[VersionChange]:
    """Working-tree changes recorded after one position and up to another, in log order."""
    c = LIVE.changes.c
    rows = conn.execute(
        sa.select(LIVE.changes)
        .where(c.plan_id == plan_id, c.position > after_position, c.position <= up_to_position)
        .order_by(c.position, c.seq)
    ).mappings()
    return [VersionChange(**dict(r)) for r in rows]


def _delta(before: Decimal | None, after: Decimal | None) -> Decimal | None:
    return None if before is None or after is None else after - before


def metric_totals(before: Sequence[VersionTarget], after: Sequence[VersionTarget]) -> list[MetricTotal]:
    """Each additive metric's plan per period in two trees (see ``MetricTotal``)."""
    sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 4)
    for i, tree in enumerate((before, after)):
        periods = {t.target_id: t.period for t in tree}
        for t in tree:
            if t.metric in v.ADDITIVE_METRICS and (t.parent_id is None or periods.get(t.parent_id) != t.period):
                sums[(t.metric, t.period)][i] += t.committed
                sums[(t.metric, t.period)][2 + i] += t.committed if t.stretch is None else t.stretch
    order = sorted(sums, key=lambda key: (metric_order(key[0]), v.Period.parse(key[1]).start, key[1]))
    return [
        MetricTotal(metric, period, fc, tc, tc - fc, fs, ts, ts - fs)
        for metric, period in order
        for fc, tc, fs, ts in [sums[(metric, period)]]
    ]


def compare_versions(conn: Connection, plan_id: UUID, from_version: int, to_version: int) -> VersionComparison:
    """What changed from one published version to another, why, and what it did to the totals.

    Version 0 is the empty plan before its first target: comparing 0 with 1 shows how the
    baseline was built. The changes listed are those recorded between the two publications
    (after the earlier one, up to the later one), whichever way round the versions are given.
    """
    positions = {}
    for number in (from_version, to_version):
        positions[number] = 0 if number == 0 else _find_version(conn, plan_id, number, None).position
    before = _targets(conn, plan_id, from_version) if from_version else []
    after = _targets(conn, plan_id, to_version) if to_version else []
    low, high = sorted((positions[from_version], positions[to_version]))
    changes = changes_between(conn, plan_id, low, high)
    reasons: dict[UUID, list[str]] = defaultdict(list)
    for change in changes:
        if change.reason:
            reasons[change.target_id].append(change.reason)
    old = {t.target_id: t for t in before}
    new = {t.target_id: t for t in after}
    changed = [
        TargetDelta(
            target=t, before_committed=old[t.target_id].committed, after_committed=t.committed,
            committed_delta=t.committed - old[t.target_id].committed, before_stretch=old[t.target_id].stretch,
            after_stretch=t.stretch, stretch_delta=_delta(old[t.target_id].stretch, t.stretch),
            reasons=tuple(reasons[t.target_id]),
        )
        for t in after
        if t.target_id in old and (t.committed, t.stretch) != (old[t.target_id].committed, old[t.target_id].stretch)
    ]
    return VersionComparison(
        plan_id=plan_id, from_version=from_version, to_version=to_version,
        added=[t for t in after if t.target_id not in old], removed=[t for t in before if t.target_id not in new],
        changed=changed, changes=changes, totals=metric_totals(before, after),
    )


# --- a version against actuals -------------------------------------------------------------------


@dataclass(frozen=True)
class TargetActual:
    """A version's target beside what actually happened in its period and scope, at a cut."""

    target: VersionTarget  # as in the version
    current: bool  # still one of the plan's targets at the cut
    current_committed: Decimal | None  # its value at the cut (None when not current)
    current_stretch: Decimal | None
    actual: Decimal
    attainment: Decimal | None  # actual / the version's committed value
    stretch_attainment: Decimal | None
    gap: Decimal  # the version's committed value − actual
    current_attainment: Decimal | None  # actual / the value at the cut


@dataclass(frozen=True)
class ActualsComparison:
    plan_id: UUID
    version: int
    position: int
    as_of: datetime  # actuals measured up to here (the cut's effective time, or now)
    effective_cut: datetime | None
    rows: list[TargetActual]


def _ratio(numerator: Decimal, denominator: Decimal | None) -> Decimal | None:
    # The same precision as progress's attainment.
    return None if not denominator else (numerator / denominator).quantize(Decimal("0.0001"))


def actuals_for_targets(
    conn: Connection, plan_id: UUID, targets: Sequence[VersionTarget], *, cut: Cut, now: datetime,
    config: ProgressConfig = ProgressConfig(),
) -> dict[UUID, ProgressRow]:
    """Progress of targets that need not exist at the cut (removed since a version), measured like
    ``progress.progress`` measures live targets: the same facts, organisation and arithmetic.

    It reuses the progress projection's fact index and row computation on a target row built
    from the version instead of read from the live target table; those helpers are private to
    ``projections.progress``, so a change there must keep this in step (the tests check that
    both paths agree on a target that still exists).
    """
    if not targets:
        return {}
    t = PROGRESS
    at = cut.as_of or now
    currency = conn.execute(
        sa.select(t.plans.c.currency).where(cut.where(t.plans), t.plans.c.plan_id == plan_id)
    ).scalar() or ""
    periods = [v.Period.parse(target.period) for target in targets]
    org = progress_projection.Organisation(conn, cut, t)
    facts = progress_projection._facts(
        conn, cut, org, min(p.start_at for p in periods), max(p.end_at for p in periods), at, config, t)
    return {
        target.target_id: progress_projection._row(
            {**as_row(target), "plan_id": plan_id}, currency, facts, org, at, config)
        for target in targets
    }


def compare_with_actuals(
    conn: Connection, plan_id: UUID, version: int, *, cut: Cut, now: datetime,
    config: ProgressConfig = ProgressConfig(),
) -> ActualsComparison:
    """Each target of ``version`` against its actual at ``cut``: what the retrospective asks.

    Targets still in the plan at the cut take their actual from ``progress.progress`` (one
    call, filtered to the version's target ids). Targets removed since (or not in the plan
    at the cut) have no live row there, yet their question still has an answer: what was
    sold in that period and scope. Rather than report ``actual=None`` for them, their actual
    is computed from the same facts with ``actuals_for_targets``, so a removed "Q2 East"
    target still shows how far reality was from what v1 asked. Attainment and gap compare
    with the version's values; ``current_attainment`` with the values at the cut.

    The version must be known at ``cut.position`` (VersionNotFound otherwise).
    """
    tree = version_tree(conn, plan_id, version, position=cut.position)
    report = progress(conn, cut=cut, now=now, config=config, filters=ProgressFilter(
        plan_id=plan_id, target_ids=frozenset(t.target_id for t in tree.targets)))
    live = {r.target_id: r for r in report.rows}
    gone = actuals_for_targets(conn, plan_id, [t for t in tree.targets if t.target_id not in live], cut=cut, now=now,
                               config=config)
    rows = []
    for target in tree.targets:
        current = live.get(target.target_id)
        actual = (current or gone[target.target_id]).actual
        rows.append(TargetActual(
            target=target, current=current is not None,
            current_committed=current.committed if current else None,
            current_stretch=current.stretch if current else None,
            actual=actual, attainment=_ratio(actual, target.committed),
            stretch_attainment=_ratio(actual, target.stretch), gap=target.committed - actual,
            current_attainment=current.attainment if current else None,
        ))
    return ActualsComparison(plan_id, version, cut.position, cut.as_of or now, cut.as_of, rows)

"""Plan versions: every published version's tree, what changed between two, and a version against actuals.

Totals follow the one roll-up rule (``projections.measure.targets``): per metric and window,
the targets that stand for the plan's owning unit, so a unit's target and the members'
targets it was split into are counted once. A version's targets are measured through the
core like live ones: a target removed since a version still has an actual (what was sold in
its window and scope), and it is the same figure ``/progress`` reports for a live target.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from projections.folds.versions import LIVE, VersionTarget, as_target, snapshot
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig, divide, exact, ratio
from projections.measure.organisation import Span, Tree, member_spans, tree_at
from projections.measure.targets import Rollup, Target, from_period, midnight, targets_at, window_order
from projections.queries.plans import find_plan
from projections.queries.progress import progress_rows

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
    """What a version plans for one additive metric in one window, beside the other version.

    The total is the sum of the targets that stand for the plan's owning unit (the roll-up
    rule); the stretch total counts a target without a stretch value at its committed value.
    Ratio metrics never sum up.
    """

    metric: str
    period: str
    window_start: datetime
    window_end: datetime
    from_committed: Decimal
    to_committed: Decimal
    committed_delta: Decimal
    from_stretch: Decimal
    to_stretch: Decimal
    stretch_delta: Decimal


@dataclass(frozen=True)
class VersionComparison:
    plan_id: UUID
    position: int  # the totals' organisation is read here; the versions themselves never change
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


def measured(plan_id: UUID, target: VersionTarget) -> Target:
    """A version's target as the measurement core sees it (a clipped week over its own days)."""
    whole = from_period(target_id=target.target_id, plan_id=plan_id, parent_id=target.parent_id, metric=target.metric,
                        period=target.period, unit_id=target.unit_id, member_id=target.member_id,
                        product_line=target.product_line, region=target.region, segment=target.segment,
                        committed=target.committed, stretch=target.stretch)
    if target.window_start is None or target.window_end is None:
        return whole
    return replace(whole, start=midnight(target.window_start), end=midnight(target.window_end))


def metric_totals(conn: Connection, plan_id: UUID, before: Sequence[VersionTarget], after: Sequence[VersionTarget],
                  *, position: int) -> list[MetricTotal]:
    """Each additive metric's plan per window in two trees, rolled up to the plan's unit (see ``MetricTotal``)."""
    cut = Cut(position)
    owner = find_plan(conn, plan_id, position).unit_id
    trees = [[measured(plan_id, t) for t in tree] for tree in (before, after)]
    members = {t.member_id for tree in trees for t in tree if t.member_id is not None}
    return rollup_totals(owner, trees[0], trees[1], tree_at(conn, cut), member_spans(conn, position, members))


def rollup_totals(owner: UUID, before: Sequence[Target], after: Sequence[Target], tree: Tree,
                  spans: Mapping[UUID, Sequence[Span]]) -> list[MetricTotal]:
    """The totals of two sets of targets for the unit ``owner``, window by window (the roll-up rule)."""
    rollups = [Rollup([t for t in side if t.metric in v.ADDITIVE_METRICS], tree, spans) for side in (before, after)]
    windows = sorted({w for r in rollups for w in r.groups}, key=window_order)
    totals = []
    for window in windows:
        sums = []
        for rollup in rollups:
            chosen = rollup.covering(window, unit_id=owner)
            sums.append((sum((t.committed for t in chosen), Decimal(0)),
                         sum((t.committed if t.stretch is None else t.stretch for t in chosen), Decimal(0))))
        (fc, fs), (tc, ts) = sums
        period = next(t.period for r in rollups for t in r.groups.get(window, []))
        totals.append(MetricTotal(window[0], period, window[1], window[2], fc, tc, tc - fc, fs, ts, ts - fs))
    return totals


def compare_versions(conn: Connection, plan_id: UUID, from_version: int, to_version: int, *, position: int
                     ) -> VersionComparison:
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
        plan_id=plan_id, position=position, from_version=from_version, to_version=to_version,
        added=[t for t in after if t.target_id not in old], removed=[t for t in before if t.target_id not in new],
        changed=changed, changes=changes, totals=metric_totals(conn, plan_id, before, after, position=position),
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


def compare_with_actuals(
    conn: Connection, plan_id: UUID, version: int, *, cut: Cut, now: datetime,
    config: MeasureConfig = MeasureConfig(),
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
    at = cut.as_of or now
    current = {t.target_id: t for t in targets_at(conn, cut, plan_ids=[plan_id])}
    measured_rows = {r.target_id: r for r in progress_rows(
        conn, [measured(plan_id, t) for t in tree.targets], cut=cut, at=at, config=config)}
    rows = []
    for target in tree.targets:
        now_target = current.get(target.target_id)
        actual = measured_rows[target.target_id].actual
        rows.append(TargetActual(
            target=target, current=now_target is not None,
            current_committed=now_target.committed if now_target else None,
            current_stretch=now_target.stretch if now_target else None,
            actual=actual, attainment=measured_rows[target.target_id].attainment,
            stretch_attainment=measured_rows[target.target_id].stretch_attainment,
            gap=measured_rows[target.target_id].gap,
            current_attainment=ratio(divide(exact(actual), exact(now_target.committed)))
            if now_target is not None else None,
        ))
    return ActualsComparison(plan_id, version, cut.position, cut.as_of or now, cut.as_of, rows)

"""Baseline vs revisions vs actual: what the plan asked for at v1, at every later version, now, and what happened.

A version is the plan as recorded when it was published: a target's value "in v2" is its
row valid at the log position of the ``Plan.Published`` event that froze v2 (whatever its
effective time: a publication freezes what had been entered). "Current" is the target at the
report's cut, unpublished revisions included; the actual is what progress reports there.
The reason chain of each target is every change after the baseline, from the
``revision_reasons`` projection.

Totals roll up the unit tree per metric and period, with the same rule the replay uses
(``projections.replay.covering_targets``): a unit's own target stands for it, else its
members' and sub-units' targets, so a decomposed target is never counted twice. Members
are placed in units as the organisation stands at the report's cut, for every column, so
versions compare like for like. Ratio metrics never sum: they have no totals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.queries.progress import Organisation, ProgressConfig, ProgressFilter, _ratio, progress
from projections.queries.replay import covering_targets, plan_facts, published_versions
from projections.queries.revisions import RevisionReason, revision_reasons


@dataclass(frozen=True)
class PublishedVersion:
    version: int
    position: int
    effective_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class TargetBaseline:
    """One target across the plan's life: v1, every later version, now, the actual and why it moved."""

    target_id: UUID
    parent_id: UUID | None
    metric: str
    period: str
    unit_id: UUID | None
    member_id: UUID | None
    product_line: str | None
    region: str | None
    segment: str | None
    baseline: Decimal | None  # the value in v1; None if the target was not in it
    versions: tuple[Decimal | None, ...]  # the value in v1, v2, … (None: not in that version)
    current: Decimal | None  # at the report's cut, unpublished revisions included; None once removed
    actual: Decimal | None  # None once removed
    attainment: Decimal | None  # actual / current
    baseline_attainment: Decimal | None  # actual / baseline
    revisions: tuple[RevisionReason, ...]  # every change after the baseline, in log order


@dataclass(frozen=True)
class RollupTotal:
    """A unit's total for one additive metric and period, in every column."""

    unit_id: UUID
    parent_id: UUID | None
    depth: int
    metric: str
    period: str
    baseline: Decimal | None
    versions: tuple[Decimal | None, ...]
    current: Decimal | None
    actual: Decimal | None
    target_ids: tuple[UUID, ...]  # the targets standing for the unit now


@dataclass(frozen=True)
class BaselineReport:
    plan_id: UUID
    position: int  # the log position this report was computed from
    as_of: datetime | None
    versions: tuple[PublishedVersion, ...]
    targets: tuple[TargetBaseline, ...]
    totals: tuple[RollupTotal, ...]


def _value_at(history: Sequence[Any], cut: Cut) -> Decimal | None:
    """The target's committed value at the cut; its visible rows are a prefix of its history."""
    value: Decimal | None = None
    for row in history:
        if row.position > cut.position or (cut.as_of is not None and row.effective_at > cut.as_of):
            break
        value = None if row.removed else row.committed
    return value


def plan_baseline(
    conn: Connection, *, plan_id: UUID, position: int, now: datetime, as_of: datetime | None = None,
    config: ProgressConfig = ProgressConfig(),
) -> BaselineReport:
    """Every target of the plan: baseline (v1), each later version, current value, actual, reason chain, totals."""
    plan_facts(conn, plan_id, position)  # NotFound for an unknown plan
    cut = Cut(position, as_of)
    versions = [
        PublishedVersion(number, int(row.position), row.effective_at, row.recorded_at)
        for number, row in published_versions(conn, plan_id, position)
    ]
    t = LIVE.targets.c
    histories: dict[UUID, list[Any]] = defaultdict(list)
    for row in conn.execute(sa.select(LIVE.targets).where(t.plan_id == plan_id, t.position <= position)
                            .order_by(t.target_id, t.position)):
        histories[row.target_id].append(row)
    actuals = {r.target_id: r.actual for r in progress(
        conn, cut=cut, now=now, filters=ProgressFilter(plan_id=plan_id), config=config).rows}
    chains: dict[UUID, list[RevisionReason]] = defaultdict(list)
    if versions:
        for reason in revision_reasons(conn, plan_id=plan_id, position=position, after_position=versions[0].position):
            chains[reason.target_id].append(reason)

    targets: list[TargetBaseline] = []
    for target_id, history in histories.items():
        first = history[0]
        values = tuple(_value_at(history, Cut(p.position)) for p in versions)
        current = _value_at(history, cut)
        actual = actuals.get(target_id) if current is not None else None
        baseline = values[0] if values else None
        if current is None and not any(x is not None for x in values):
            continue  # set and removed between two publications, or after the cut's effective time
        targets.append(TargetBaseline(
            target_id=target_id, parent_id=first.parent_id, metric=first.metric, period=first.period,
            unit_id=first.unit_id, member_id=first.member_id, product_line=first.product_line, region=first.region,
            segment=first.segment, baseline=baseline, versions=values, current=current, actual=actual,
            attainment=_ratio(actual, current) if actual is not None and current else None,
            baseline_attainment=_ratio(actual, baseline) if actual is not None and baseline else None,
            revisions=tuple(chains.get(target_id, ())),
        ))
    targets.sort(key=lambda x: (v.Period.parse(x.period).start, x.period, x.metric, histories[x.target_id][0].position,
                                str(x.target_id)))
    org = Organisation(conn, cut)
    return BaselineReport(
        plan_id=plan_id, position=position, as_of=as_of, versions=tuple(versions), targets=tuple(targets),
        totals=tuple(_totals(targets, org, as_of or now, len(versions))),
    )


def _unit_tree(org: Organisation) -> list[tuple[UUID, UUID | None, int]]:
    """Every unit known at the cut, depth first (children in id order)."""
    children: dict[UUID | None, list[UUID]] = defaultdict(list)
    for unit, parent in org.parent.items():
        children[parent if parent in org.parent else None].append(unit)
    ordered: list[tuple[UUID, UUID | None, int]] = []
    seen: set[UUID] = set()

    def walk(parent: UUID | None, depth: int) -> None:
        for unit in sorted(children.get(parent, []), key=str):
            if unit not in seen:
                seen.add(unit)
                ordered.append((unit, org.parent.get(unit), depth))
                walk(unit, depth + 1)

    walk(None, 0)
    return ordered


Column = Callable[[TargetBaseline], Decimal | None]


def _in_version(index: int) -> Column:
    return lambda t: t.versions[index]


def _sum_for(unit: UUID, group: Sequence[TargetBaseline], org: Organisation, at: datetime, value: Column
             ) -> tuple[Decimal | None, list[TargetBaseline]]:
    """The unit's total in one column: its covering targets among those that exist in that column."""
    chosen = covering_targets([t for t in group if value(t) is not None], org, at, unit_id=unit)
    if not chosen:
        return None, []
    return sum((value(t) or Decimal(0) for t in chosen), Decimal(0)), chosen


def _totals(targets: Sequence[TargetBaseline], org: Organisation, at: datetime, version_count: int) -> list[RollupTotal]:
    groups: dict[tuple[str, str], list[TargetBaseline]] = defaultdict(list)
    for target in targets:
        if target.metric in v.ADDITIVE_METRICS:
            groups[(target.metric, target.period)].append(target)
    tree = _unit_tree(org)
    totals: list[RollupTotal] = []
    for (metric, period), group in groups.items():  # targets are already in period and metric order
        for unit, parent, depth in tree:
            columns = tuple(_sum_for(unit, group, org, at, _in_version(i))[0] for i in range(version_count))
            current, chosen = _sum_for(unit, group, org, at, lambda t: t.current)
            if current is None and all(c is None for c in columns):
                continue
            totals.append(RollupTotal(
                unit_id=unit, parent_id=parent, depth=depth, metric=metric, period=period,
                baseline=columns[0] if columns else None, versions=columns, current=current,
                actual=sum((t.actual or Decimal(0) for t in chosen), Decimal(0)) if chosen else None,
                target_ids=tuple(t.target_id for t in chosen),
            ))
    return totals

"""Baseline vs revisions vs actual: what the plan asked for at v1, at every later version, now, and what happened.

A version is the plan as recorded when it was published: a target's value "in v2" is its
row valid at the log position of the ``Plan.Published`` event that froze v2 (whatever its
effective time: a publication freezes what had been entered). "Current" is the target at the
report's cut, unpublished revisions included; the actual is the one ``/progress`` reports
there (the same core measures both). The reason chain of each target is every change after
the baseline, from the ``revision_reasons`` projection.

Totals roll up the unit tree per metric and window with the one roll-up rule
(``projections.measure.targets``): a unit's target total is the sum of the targets that stand
for it in that column; its actual is every fact of its subtree, placed where each member was
when it happened — so a rep's move mid-quarter moves neither targets nor history. Ratio
metrics never sum: they have no totals.
"""

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
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig, actual_of, divide, exact, ratio, rounded
from projections.measure.facts import Tally, tally
from projections.measure.organisation import member_spans, tree_at
from projections.measure.targets import Rollup, Target, Window, metric_order, midnight, narrowings_of, scope_cell
from projections.queries.plans import Publication, find_plan, publications
from projections.queries.progress import progress_rows
from projections.queries.revisions import RevisionReason, revision_reasons

__all__ = ["BaselineReport", "RollupTotal", "TargetBaseline", "plan_baseline"]


@dataclass(frozen=True)
class TargetBaseline:
    """One target across the plan's life: v1, every later version, now, the actual and why it moved."""

    target_id: UUID
    parent_id: UUID | None
    metric: str
    period: str
    window_start: datetime
    window_end: datetime
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
    """A unit's total for one additive metric and window, in every column, and its actual."""

    unit_id: UUID
    unit_name: str | None
    parent_id: UUID | None
    depth: int
    metric: str
    period: str
    window_start: datetime
    window_end: datetime
    baseline: Decimal | None
    versions: tuple[Decimal | None, ...]
    current: Decimal | None
    actual: Decimal | None
    target_ids: tuple[UUID, ...]  # the targets standing for the unit at the cut


@dataclass(frozen=True)
class BaselineReport:
    plan_id: UUID
    position: int  # the log position this report was computed from
    as_of: datetime | None
    versions: tuple[Publication, ...]
    targets: tuple[TargetBaseline, ...]
    totals: tuple[RollupTotal, ...]


def _row_at(history: Sequence[Any], cut: Cut) -> Any | None:
    """The target's row at the cut (None: not set yet, or removed); its visible rows are a prefix of its history."""
    found = None
    for row in history:
        if row.position > cut.position or (cut.as_of is not None and row.effective_at > cut.as_of):
            break
        found = None if row.removed else row
    return found


def _target(plan_id: UUID, row: Any) -> Target:
    return Target(row.target_id, plan_id, row.parent_id, row.metric, row.period, midnight(row.period_start),
                  midnight(row.period_end), row.unit_id, row.member_id, row.product_line, row.region, row.segment,
                  row.committed, row.stretch)


def plan_baseline(
    conn: Connection, *, plan_id: UUID, position: int, now: datetime, as_of: datetime | None = None,
    config: MeasureConfig = MeasureConfig(),
) -> BaselineReport:
    """Every target of the plan: baseline (v1), each later version, current value, actual, reason chain, totals."""
    plan = find_plan(conn, plan_id, position)
    cut = Cut(position, as_of)
    at = as_of or now
    versions = publications(conn, plan_id, position)
    t = LIVE.targets.c
    histories: dict[UUID, list[Any]] = defaultdict(list)
    for row in conn.execute(sa.select(LIVE.targets).where(t.plan_id == plan_id, t.position <= position)
                            .order_by(t.target_id, t.position)):
        histories[row.target_id].append(row)
    # Column i of every target: its row in version i (published at that position), then at the cut.
    columns: list[dict[UUID, Target]] = []
    for cutoff in [Cut(p.position) for p in versions] + [cut]:
        column = {}
        for target_id, history in histories.items():
            found = _row_at(history, cutoff)
            if found is not None:
                column[target_id] = _target(plan_id, found)
        columns.append(column)
    current = columns[-1]
    measured = {r.target_id: r for r in progress_rows(conn, list(current.values()), cut=cut, at=at, config=config)}
    chains: dict[UUID, list[RevisionReason]] = defaultdict(list)
    if versions:
        for reason in revision_reasons(conn, plan_id=plan_id, position=position, after_position=versions[0].position):
            chains[reason.target_id].append(reason)

    targets: list[TargetBaseline] = []
    for target_id in histories:
        values = tuple(c[target_id].committed if target_id in c else None for c in columns[:-1])
        now_target = current.get(target_id)
        if now_target is None and not any(x is not None for x in values):
            continue  # set and removed between two publications, or after the cut's effective time
        shown = now_target or next(c[target_id] for c in reversed(columns[:-1]) if target_id in c)
        measure = measured.get(target_id)
        baseline = values[0] if values else None
        actual = measure.actual if measure is not None else None
        targets.append(TargetBaseline(
            target_id=target_id, parent_id=shown.parent_id, metric=shown.metric, period=shown.period,
            window_start=shown.start, window_end=shown.end, unit_id=shown.unit_id, member_id=shown.member_id,
            product_line=shown.product_line, region=shown.region, segment=shown.segment, baseline=baseline,
            versions=values, current=None if now_target is None else now_target.committed, actual=actual,
            attainment=measure.attainment if measure is not None else None,
            baseline_attainment=ratio(divide(exact(actual), exact(baseline))) if actual is not None and baseline
            else None,
            revisions=tuple(chains.get(target_id, ())),
        ))
    targets.sort(key=lambda x: (x.window_start, x.period, x.metric, histories[x.target_id][0].position,
                                str(x.target_id)))
    totals = _totals(conn, plan.currency, cut, at, columns, len(versions))
    return BaselineReport(plan_id=plan_id, position=position, as_of=as_of, versions=tuple(versions),
                          targets=tuple(targets), totals=tuple(totals))


def _totals(conn: Connection, currency: str, cut: Cut, at: datetime, columns: Sequence[dict[UUID, Target]],
            version_count: int) -> list[RollupTotal]:
    tree = tree_at(conn, cut)
    members = {t.member_id for c in columns for t in c.values() if t.member_id is not None}
    found = member_spans(conn, cut.position, members)
    rollups = [Rollup([t for t in c.values() if t.metric in v.ADDITIVE_METRICS], tree, found) for c in columns]
    # Period by period (a year before its quarters), the metrics in the domain's order within each.
    windows: list[Window] = sorted({w for r in rollups for w in r.groups},
                                   key=lambda w: (w[1], -w[2].timestamp(), metric_order(w[0])))
    period_of = {t.window: t.period for c in columns for t in c.values()}
    rows: list[tuple[UUID, UUID | None, int, Window, tuple[Decimal | None, ...], Decimal | None,
                     tuple[UUID, ...]]] = []
    for window in windows:
        for node, depth in tree.walk():
            sums: list[Decimal | None] = []
            for rollup in rollups:
                chosen = rollup.covering(window, unit_id=node.unit_id)
                sums.append(sum((t.committed for t in chosen), Decimal(0)) if chosen else None)
            if all(s is None for s in sums):
                continue
            standing = tuple(t.target_id for t in rollups[-1].covering(window, unit_id=node.unit_id))
            rows.append((node.unit_id, node.parent_id, depth, window, tuple(sums[:version_count]), sums[-1], standing))
    # A unit's actual: its own facts, in what its standing targets at the cut plan for (the roll-up rule).
    cells = {}
    for i, (unit, _p, _d, window, _v, _c, _s) in enumerate(rows):
        in_force = rollups[-1].covering(window, unit_id=unit)
        for j, narrowed in enumerate(narrowings_of(in_force)):
            cells[(i, j)] = scope_cell(f"{i}/{j}", window[0], unit, window[1], window[2], currency, narrowed)
    counted = tally(conn, list(cells.values()), cut, at=at)
    actuals: dict[int, Tally] = defaultdict(Tally)
    for (i, _j), c in cells.items():
        actuals[i] = actuals[i] + counted[c.key]
    totals = []
    for i, (unit, parent, depth, window, versions, current, standing) in enumerate(rows):
        metric = window[0]
        totals.append(RollupTotal(
            unit_id=unit, unit_name=tree.name(unit), parent_id=parent, depth=depth, metric=metric,
            period=period_of[window], window_start=window[1], window_end=window[2],
            baseline=versions[0] if versions else None, versions=versions, current=current,
            actual=rounded(metric, actual_of(metric, actuals[i])), target_ids=standing,
        ))
    return totals


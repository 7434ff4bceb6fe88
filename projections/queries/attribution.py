"""What changed, and why: a scope's change in attainment and forecast between two cuts, by cause.

A cut is a point on both clocks (``Cut(position, as_of)``): two dates as known on those dates
or as known now (``known_cut``), or two published versions (``version_cut``). The scope is one
target, or a unit, a member or the whole plan for one metric and period. Its standing at a
cut is what the replay reports there: the targets that stand for it (the roll-up rule of
``projections.measure.targets``) against its own facts (for one target: that target's facts).

The decomposition telescopes, so the parts add up exactly to the change:

1. Every contributor (a deal; an activity for the activities metric) gets its contribution
   at A and at B, counted by the measurement core in the database (``contributions``).
2. Each contributor whose contribution differs gets exactly one cause, by the events of
   that contributor visible at one cut and not the other, tried in this precedence:

       late_entries     one of those events was recorded after a cut but is effective
                        before that cut's effective time (back-dated; it corrects the past;
                        only the contributor's own events count: a move entered late is a move)
       new_deals        the deal exists at one cut only (opened in between, then maybe won)
       activities_logged  the activity exists at one cut only
       deals_won, deals_lost, deals_reopened   a close or a reopening in between
       slipped_out, pulled_in   the expected close crossed the period's boundary
       amount_changes, stage_changes, reassignments   the deal's amount, open stage, owner
       member_moves     none of the above: the organisation moved under the deal (a member
                        or unit moved, or the owner's unit differs at the two cuts' times)
       target_revisions none of the above: only what the scope's targets plan for changed
                        (a narrowed target set or removed, so other facts count)
       other            nothing explains it (kept so that the sum stays exact)

3. The parts are then taken in sequence, each the change of the reported (rounded) value
   from the previous state to the next: first ``target_revisions`` (the targets switch from
   A's values to B's, with the contributors whose only change is which facts the targets
   count), then every other cause in the precedence order above, each switching its
   contributors from A to B. For attainment the target effect is therefore
   actual_A/target_B − actual_A/target_A and every later part is Δactual/target_B.
   Because the sequence starts at A and ends at B, the parts sum to B − A exactly.

Contributors' own deltas are exact; a part is a difference of reported values (the core's
rounding), so for a forecast with sub-cent weights a part may differ from the sum of its
contributors' deltas by the rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.errors import NotFound, ValidationError
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig, actual_of, divide, exact, ratio, reads, rounded, weighted_of
from projections.measure.cuts import position_known_at
from projections.measure.facts import Cell, Tally, contributions
from projections.measure.organisation import UnitHistory, member_spans
from projections.measure.targets import Rollup, Target, TargetHistory, cell, midnight, narrowings_of, scope_cell
from projections.queries.plans import find_plan, publications

__all__ = [
    "KNOWN", "PRECEDENCE", "SEQUENCE", "Attribution", "AttributionPart", "Contributor", "CutStanding",
    "ScopeTargetChange", "attribute_change", "known_cut", "version_cut",
]

TARGET_REVISIONS: Final = "target_revisions"
LATE_ENTRIES: Final = "late_entries"
NEW_DEALS: Final = "new_deals"
ACTIVITIES_LOGGED: Final = "activities_logged"
DEALS_WON: Final = "deals_won"
DEALS_LOST: Final = "deals_lost"
DEALS_REOPENED: Final = "deals_reopened"
SLIPPED_OUT: Final = "slipped_out"
PULLED_IN: Final = "pulled_in"
AMOUNT_CHANGES: Final = "amount_changes"
STAGE_CHANGES: Final = "stage_changes"
REASSIGNMENTS: Final = "reassignments"
MEMBER_MOVES: Final = "member_moves"
OTHER: Final = "other"

PRECEDENCE: Final = (
    LATE_ENTRIES, NEW_DEALS, ACTIVITIES_LOGGED, DEALS_WON, DEALS_LOST, DEALS_REOPENED, SLIPPED_OUT, PULLED_IN,
    AMOUNT_CHANGES, STAGE_CHANGES, REASSIGNMENTS, MEMBER_MOVES, TARGET_REVISIONS, OTHER,
)
"""How a contributor's change is classified: the first cause that applies."""

SEQUENCE: Final = (TARGET_REVISIONS, *(c for c in PRECEDENCE if c != TARGET_REVISIONS))
"""The order the parts are taken in (and listed)."""

KNOWN: Final = ("then", "now")
DEAL: Final = "deal"
ACTIVITY: Final = "activity"
FORECAST_METRICS: Final = ("revenue", "deals_won")


# --- the answer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutStanding:
    """The scope at one cut: its covering targets, summed (ratio metrics: the single target)."""

    position: int
    as_of: datetime | None
    target_ids: tuple[UUID, ...]
    target: Decimal
    actual: Decimal
    attainment: Decimal | None
    forecast: Decimal | None


@dataclass(frozen=True)
class AttributionPart:
    cause: str
    actual: Decimal
    attainment: Decimal | None  # None when attainment is undefined at A or B (no target)
    forecast: Decimal | None  # None for metrics without a forecast
    contributors: int


@dataclass(frozen=True)
class Contributor:
    """One deal or activity whose contribution changed, its cause and its exact deltas."""

    kind: str  # deal | activity
    id: UUID
    cause: str
    actual: Decimal | None  # None for ratio metrics: one deal's share of a ratio is not defined
    forecast: Decimal | None


@dataclass(frozen=True)
class ScopeTargetChange:
    """A target whose value changed, or that joined or left the scope's targets, between the cuts."""

    target_id: UUID
    before: Decimal | None
    after: Decimal | None


@dataclass(frozen=True)
class Attribution:
    plan_id: UUID
    metric: str
    period: str
    target_id: UUID | None
    unit_id: UUID | None
    member_id: UUID | None
    position: int  # the later of the two cuts' positions: the answer is a function of the log up to it
    a: CutStanding
    b: CutStanding
    target_change: Decimal
    actual_change: Decimal
    attainment_change: Decimal | None
    forecast_change: Decimal | None
    parts: tuple[AttributionPart, ...]  # in SEQUENCE order, every cause listed; they sum to the changes
    targets: tuple[ScopeTargetChange, ...]
    contributors: tuple[Contributor, ...]


# --- cuts -----------------------------------------------------------------------------------------


def known_cut(conn: Connection, when: datetime, *, position: int, known: str = "then") -> Cut:
    """``when`` on both clocks: effective up to it, as recorded by then (``then``) or up to ``position`` (``now``)."""
    if known not in KNOWN:
        raise ValidationError("attribution.known", "known must be then or now", "known", allowed=list(KNOWN))
    return Cut(min(position_known_at(conn, when), position) if known == "then" else position, when)


def version_cut(conn: Connection, *, plan_id: UUID, version: int, position: int) -> Cut:
    """Where the plan stood when ``version`` was published: its log position and effective time."""
    for publication in publications(conn, plan_id, position):
        if publication.version == version:
            return publication.cut
    raise NotFound("plan version", f"{plan_id} v{version}", "version")


# --- the query ------------------------------------------------------------------------------------


@dataclass
class _Side:
    """One cut's view of the scope: its standing targets, the cells its actual counts, each contributor's share."""

    cut: Cut
    at: datetime
    targets: list[Target]
    cells: list[Cell]
    shares: dict[UUID, Tally]

    @property
    def target(self) -> Decimal:
        return sum((t.committed for t in self.targets), Decimal(0))


def attribute_change(
    conn: Connection, *, plan_id: UUID, a: Cut, b: Cut, now: datetime, target_id: UUID | None = None,
    unit_id: UUID | None = None, member_id: UUID | None = None, metric: str | None = None,
    period: str | None = None, config: MeasureConfig = MeasureConfig(),
) -> Attribution:
    """Why a target's (or a unit's, member's or the plan's) attainment and forecast moved from cut A to cut B."""
    if sum(x is not None for x in (target_id, unit_id, member_id)) > 1:
        raise ValidationError("scope.owner", "name at most one of target_id, unit_id or member_id", "target_id")
    position = max(a.position, b.position)
    plan = find_plan(conn, plan_id, position)
    t = LIVE.targets.c
    window_of: tuple[datetime, datetime] | None = None
    if target_id is not None:
        row = conn.execute(sa.select(t.metric, t.period, t.period_start, t.period_end).where(
            t.target_id == target_id, t.plan_id == plan_id, t.position <= position).limit(1)).first()
        if row is None:
            raise NotFound("target", target_id, "target_id")
        if (metric or row.metric) != row.metric or (period or row.period) != row.period:
            raise ValidationError("attribution.target_mismatch",
                                  f"target {target_id} is {row.metric} for {row.period}", "metric")
        metric, period = row.metric, row.period
        window_of = (midnight(row.period_start), midnight(row.period_end))
    metric = v.metric(metric or "revenue")
    period_key = period or plan.span
    span = v.Period.parse(period_key, "period")
    start, end = window_of or (span.start_at, span.end_at)
    window = (metric, start, end)
    history = TargetHistory(conn, plan_id=plan_id, position=position, metric=metric, period=period_key)
    units = UnitHistory(conn, position)
    members = {r.member_id for rows in history.rows.values() for r in rows if r.member_id is not None}
    owner = member_id or unit_id or plan.unit_id

    def side(cut: Cut) -> _Side:
        at = cut.as_of or now
        in_force = [x for x in history.at(cut) if x.window == window]
        if target_id is not None:
            chosen = [x for x in in_force if x.target_id == target_id]
            own = next(iter(history.rows[target_id]))
            cells = [cell(Target(target_id, plan_id, own.parent_id, metric, period_key, start, end, own.unit_id,
                                 own.member_id, own.product_line, own.region, own.segment, own.committed, None),
                          plan.currency)]
        else:
            rollup = Rollup(in_force, units.at(cut), member_spans(conn, cut.position, members))
            chosen = rollup.covering(window, member_id=member_id) if member_id is not None \
                else rollup.covering(window, unit_id=owner)
            cells = [scope_cell(f"scope/{i}", metric, owner, start, end, plan.currency, n)
                     for i, n in enumerate(narrowings_of(chosen))]
        return _Side(cut, at, chosen, cells, _shares(conn, cells, cut, at))

    wa, wb = side(a), side(b)
    changed: list[_Changed] = []
    ids = sorted(set(wa.shares) | set(wb.shares), key=str)
    moved = [i for i in ids if reads(metric, wa.shares.get(i, Tally())) != reads(metric, wb.shares.get(i, Tally()))]
    # B's organisation with A's cells: tells a change of what the targets count from an organisation move.
    same_cells = [_narrowed(c) for c in wa.cells] == [_narrowed(c) for c in wb.cells]
    with_a_cells = wb.shares if same_cells else _shares(conn, wa.cells, wb.cut, wb.at)
    if metric == "activities":
        rows = _rows(conn, LIVE.activities, "activity_id", moved, position)
        for fact_id in moved:
            seen_a, seen_b = (any(_visible(r, c) for r in rows.get(fact_id, [])) for c in (a, b))
            if seen_a != seen_b:
                hidden = b if seen_a else a
                cause = LATE_ENTRIES if any(_late(r, hidden) for r in rows.get(fact_id, [])) else ACTIVITIES_LOGGED
            else:
                cause = _world_cause(metric, fact_id, wa, wb, with_a_cells)
            changed.append(_Changed(ACTIVITY, fact_id, cause))
    else:
        histories = _rows(conn, LIVE.deals, "deal_id", moved, position)
        for fact_id in moved:
            rows_of = histories.get(fact_id, [])
            cause = _deal_cause(rows_of, a, b, _state(rows_of, a), _state(rows_of, b), span) or _world_cause(
                metric, fact_id, wa, wb, with_a_cells)
            changed.append(_Changed(DEAL, fact_id, cause))
    return _decompose(plan_id=plan_id, metric=metric, period=period_key, target_id=target_id, unit_id=unit_id,
                      member_id=member_id, position=position, wa=wa, wb=wb, changed=changed, config=config)


def _shares(conn: Connection, cells: Sequence[Cell], cut: Cut, at: datetime) -> dict[UUID, Tally]:
    """Each contributor's tally over the side's cells (distinct narrowings never overlap on one fact)."""
    total: dict[UUID, Tally] = {}
    for per_fact in contributions(conn, cells, cut, at=at).values():
        for fact_id, counted in per_fact.items():
            total[fact_id] = total.get(fact_id, Tally()) + counted
    return total


def _narrowed(c: Cell) -> tuple[str | None, str | None, str | None]:
    return c.product_line, c.region, c.segment


def _world_cause(metric: str, fact_id: UUID, wa: _Side, wb: _Side, with_a_cells: dict[UUID, Tally]) -> str:
    """No event of the contributor explains its change: the organisation did, or what the targets count did."""
    at_a, counterfactual = (reads(metric, x.get(fact_id, Tally())) for x in (wa.shares, with_a_cells))
    if counterfactual != at_a:
        return MEMBER_MOVES
    if counterfactual != reads(metric, wb.shares.get(fact_id, Tally())):
        return TARGET_REVISIONS
    return OTHER


def _visible(row: Any, cut: Cut) -> bool:
    return bool(row.position <= cut.position and (cut.as_of is None or row.effective_at <= cut.as_of))


def _late(row: Any, hidden_at: Cut) -> bool:
    """Hidden at this cut only because it was recorded after it: a back-dated entry."""
    return hidden_at.as_of is not None and row.effective_at <= hidden_at.as_of and row.position > hidden_at.position


def _rows(conn: Connection, table: sa.Table, key: str, ids: Sequence[UUID], position: int) -> dict[UUID, list[Any]]:
    """The history rows (up to ``position``) of the given deals or activities, in order."""
    found: dict[UUID, list[Any]] = {}
    for chunk in _chunks(list(ids)):
        for row in conn.execute(sa.select(table).where(table.c[key].in_(chunk), table.c.position <= position)
                                .order_by(table.c[key], table.c.position)):
            found.setdefault(getattr(row, key), []).append(row)
    return found


def _chunks(ids: Sequence[UUID], size: int = 500) -> Iterable[list[UUID]]:
    for i in range(0, len(ids), size):
        yield list(ids[i:i + size])


def _state(history: Sequence[Any], cut: Cut) -> Any:
    """The deal's row at the cut: its visible rows are a prefix of its history (see projections.history)."""
    state = None
    for row in history:
        if not _visible(row, cut):
            break
        state = row
    return state


def _deal_cause(history: Sequence[Any], a: Cut, b: Cut, sa_: Any, sb_: Any, span: v.Period) -> str | None:
    """The cause the deal's own events between the cuts give, if any (see the precedence above)."""
    between = [(history[i - 1] if i else None, row) for i, row in enumerate(history)
               if _visible(row, a) != _visible(row, b)]
    if any(_late(row, b if _visible(row, a) else a) for _, row in between):
        return LATE_ENTRIES
    if sa_ is None or sb_ is None:
        return NEW_DEALS
    for cause, stage_test in ((DEALS_WON, lambda p, r: r.stage == "won" and p.stage != "won"),
                              (DEALS_LOST, lambda p, r: r.stage == "lost" and p.stage != "lost"),
                              (DEALS_REOPENED, lambda p, r: p.stage in v.CLOSED_STAGES and r.stage in v.OPEN_STAGES)):
        if any(prev is not None and stage_test(prev, row) for prev, row in between):
            return cause
    in_a, in_b = span.contains_date(sa_.expected_close), span.contains_date(sb_.expected_close)
    if in_a != in_b:
        return SLIPPED_OUT if in_a else PULLED_IN
    if sa_.amount != sb_.amount:
        return AMOUNT_CHANGES
    if sa_.stage != sb_.stage:
        return STAGE_CHANGES
    if sa_.owner_id != sb_.owner_id:
        return REASSIGNMENTS
    return None


@dataclass(frozen=True)
class _Changed:
    kind: str  # deal | activity
    id: UUID
    cause: str


@dataclass(frozen=True)
class _Values:
    actual: Decimal
    attainment: Decimal | None
    forecast: Decimal | None


def _decimal(value: Fraction) -> Decimal:
    """An exact fraction whose denominator divides a power of ten, as a Decimal (amounts × probabilities)."""
    return Decimal(value.numerator) / Decimal(value.denominator)


def _decompose(
    *, plan_id: UUID, metric: str, period: str, target_id: UUID | None, unit_id: UUID | None,
    member_id: UUID | None, position: int, wa: _Side, wb: _Side, changed: list[_Changed], config: MeasureConfig,
) -> Attribution:
    """Walk from A to B one cause at a time; each part is the change of the reported values."""
    target_a, target_b = wa.target, wb.target
    probabilities = config.stage_probabilities
    shares = dict(wa.shares)  # every contributor at A; the walk to B switches the changed ones

    def values(target: Decimal) -> _Values:
        total = sum(shares.values(), Tally())
        actual = actual_of(metric, total)
        weighted = weighted_of(metric, total, probabilities)
        return _Values(rounded(metric, actual), ratio(divide(actual, exact(target))) if target else None,
                       None if weighted is None else rounded(metric, actual + weighted))

    start = values(target_a)
    by_cause: dict[str, list[_Changed]] = {cause: [] for cause in SEQUENCE}
    for item in changed:
        by_cause[item.cause].append(item)
    walking = target_a != 0 and target_b != 0
    previous, target = start, target_a
    parts: list[AttributionPart] = []
    for cause in SEQUENCE:
        if cause == TARGET_REVISIONS:
            target = target_b
        for item in by_cause[cause]:
            if item.id in wb.shares:
                shares[item.id] = wb.shares[item.id]
            else:
                shares.pop(item.id, None)
        reached = values(target)
        parts.append(AttributionPart(
            cause=cause, actual=reached.actual - previous.actual,
            attainment=reached.attainment - previous.attainment
            if walking and reached.attainment is not None and previous.attainment is not None else None,
            forecast=None if reached.forecast is None or previous.forecast is None
            else reached.forecast - previous.forecast,
            contributors=len(by_cause[cause]),
        ))
        previous = reached
    end = values(target_b)

    def standing(side: _Side, target: Decimal, figures: _Values) -> CutStanding:
        return CutStanding(side.cut.position, side.cut.as_of, tuple(t.target_id for t in side.targets), target,
                           figures.actual, figures.attainment, figures.forecast)

    def delta(item: _Changed) -> tuple[Decimal | None, Decimal | None]:
        if metric not in v.ADDITIVE_METRICS:
            return None, None  # one deal's share of a ratio is not defined
        before, after = wa.shares.get(item.id, Tally()), wb.shares.get(item.id, Tally())
        actual = actual_of(metric, after) - actual_of(metric, before)
        wa_, wb_ = weighted_of(metric, before, probabilities), weighted_of(metric, after, probabilities)
        forecast = None if wa_ is None or wb_ is None else actual + wb_ - wa_
        return _decimal(actual), None if forecast is None else _decimal(forecast)

    before = {t.target_id: t.committed for t in wa.targets}
    after = {t.target_id: t.committed for t in wb.targets}
    deltas = tuple(ScopeTargetChange(tid, before.get(tid), after.get(tid)) for tid in sorted(set(before) | set(after), key=str)
                   if before.get(tid) != after.get(tid))
    return Attribution(
        plan_id=plan_id, metric=metric, period=period, target_id=target_id, unit_id=unit_id, member_id=member_id,
        position=position, a=standing(wa, target_a, start), b=standing(wb, target_b, end),
        target_change=target_b - target_a, actual_change=end.actual - start.actual,
        attainment_change=end.attainment - start.attainment
        if end.attainment is not None and start.attainment is not None else None,
        forecast_change=None if end.forecast is None or start.forecast is None else end.forecast - start.forecast,
        parts=tuple(parts), targets=deltas,
        contributors=tuple(Contributor(item.kind, item.id, item.cause, *delta(item)) for item in changed),
    )

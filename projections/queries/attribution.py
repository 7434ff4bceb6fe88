"""What changed, and why: a scope's change in attainment and forecast between two cuts, by cause.

A cut is a point on both clocks (``Cut(position, as_of)``): two dates as known on those dates
(``known_cut``), or two published versions (``version_cut``). The scope is one target, or
the targets that stand for a unit, a member or the whole plan for one metric and period
(``projections.replay.covering_targets``). Its standing at a cut is what progress reports
there, summed over those targets.

The decomposition telescopes, so the parts add up exactly to the change:

1. Every contributor (a deal; an activity for the activities metric) gets its contribution
   at A and at B, per target, from the rows valid at each cut (the same rules as progress).
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
       target_revisions none of the above: only the targets it counts for changed
       other            nothing explains it (should not happen; kept so the sum is exact)

3. The parts are then taken in sequence, each the change of the reported (rounded) value
   from the previous state to the next: first ``target_revisions`` (the targets switch from
   A's values to B's, with the contributors whose only change is which targets they count
   for), then every other cause in the precedence order above, each switching its
   contributors from A to B. For attainment the target effect is therefore
   actual_A/target_B − actual_A/target_A and every later part is Δactual/target_B.
   Because the sequence starts at A and ends at B, the parts sum to B − A exactly.

Contributors' own deltas are exact; a part is a difference of reported values (progress's
rounding), so for a forecast with sub-cent weights a part may differ from the sum of its
contributors' deltas by the rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.errors import NotFound, ValidationError
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.measure.cuts import position_known_at
from projections.queries.progress import Organisation, ProgressConfig, _ratio, _round
from projections.queries.replay import covering_targets, plan_facts, published_versions

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

DEAL: Final = "deal"
ACTIVITY: Final = "activity"


# --- contributions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vec:
    """What one contributor adds to one target's tallies (or a target's tallies summed)."""

    money: Decimal = Decimal(0)  # won amounts in the plan's currency
    won: int = 0
    won_in_currency: int = 0
    lost: int = 0
    opened: int = 0
    activities: int = 0
    weighted_money: Decimal = Decimal(0)  # open amounts × stage probability, plan currency
    weight: Decimal = Decimal(0)  # stage probabilities of open deals, any currency

    def __add__(self, other: Vec) -> Vec:
        return Vec(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Vec)))

    def __sub__(self, other: Vec) -> Vec:
        return Vec(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(Vec)))


ZERO: Final = Vec()

# The tallies each metric reads: a contributor whose other tallies change did not change this metric.
_READS: Final = {
    "revenue": ("money", "weighted_money"),
    "deals_won": ("won", "weight"),
    "new_deals": ("opened",),
    "activities": ("activities",),
    "win_rate": ("won", "lost"),
    "average_order_value": ("money", "won_in_currency"),
}


def _relevant(metric: str, vec: Vec) -> Vec:
    return Vec(**{name: getattr(vec, name) for name in _READS[metric]})


def actual_of(metric: str, vec: Vec) -> Decimal:
    """A target's actual from its tallies, rounded as progress reports it."""
    if metric == "revenue":
        value = vec.money
    elif metric == "deals_won":
        value = Decimal(vec.won)
    elif metric == "new_deals":
        value = Decimal(vec.opened)
    elif metric == "activities":
        value = Decimal(vec.activities)
    elif metric == "win_rate":
        closed = vec.won + vec.lost
        value = Decimal(vec.won) / closed if closed else Decimal(0)
    else:
        value = vec.money / vec.won_in_currency if vec.won_in_currency else Decimal(0)
    return _round(metric, value)


def forecast_of(metric: str, vec: Vec) -> Decimal | None:
    """A target's forecast from its tallies (actual + weighted open pipeline), as progress reports it."""
    if metric == "revenue":
        return _round(metric, actual_of(metric, vec) + vec.weighted_money)
    if metric == "deals_won":
        return _round(metric, actual_of(metric, vec) + vec.weight)
    return None


@dataclass(frozen=True)
class _Target:
    target_id: UUID
    parent_id: UUID | None
    unit_id: UUID | None
    member_id: UUID | None
    product_line: str | None
    region: str | None
    segment: str | None
    committed: Decimal


@dataclass(frozen=True)
class _World:
    """Everything a contribution depends on besides the contributor: one cut's organisation and targets."""

    cut: Cut
    at: datetime  # where open deals are placed: the owner's unit at the cut's effective time
    org: Organisation
    targets: tuple[_Target, ...]


def _counts_for(target: _Target, owner: UUID, units: Sequence[UUID], line: str | None, region: str | None,
                segment: str | None) -> bool:
    mine = owner == target.member_id if target.member_id is not None else target.unit_id in units
    return mine and all(want is None or want == got for want, got in (
        (target.product_line, line), (target.region, region), (target.segment, segment)))


def _spread(world: _World, metric: str, facts: Iterable[tuple[datetime, Vec]], owner: UUID, line: str | None,
            region: str | None, segment: str | None) -> dict[UUID, Vec]:
    """Credit each fact to every target it counts for (by the owner's unit at the fact's time)."""
    out: dict[UUID, Vec] = {}
    for when, raw in facts:
        vec = _relevant(metric, raw)
        if vec == ZERO:
            continue
        units = world.org.ancestors(world.org.unit_of(owner, when))
        for t in world.targets:
            if _counts_for(t, owner, units, line, region, segment):
                out[t.target_id] = out.get(t.target_id, ZERO) + vec
    return out


def deal_contribution(state: Any, world: _World, metric: str, period: v.Period, currency: str,
                      probabilities: Mapping[str, Decimal]) -> dict[UUID, Vec]:
    """What a deal (its history row at the cut, or None) adds to each target: progress's rules, per deal."""
    if state is None:
        return {}
    ours = state.currency == currency
    facts: list[tuple[datetime, Vec]] = []
    if state.closed_at is not None and period.start_at <= state.closed_at < period.end_at:
        if state.stage == "won":
            facts.append((state.closed_at, Vec(money=state.amount if ours else Decimal(0), won=1,
                                               won_in_currency=1 if ours else 0)))
        elif state.stage == "lost":
            facts.append((state.closed_at, Vec(lost=1)))
    if period.start_at <= state.opened_at < period.end_at:
        facts.append((state.opened_at, Vec(opened=1)))
    if state.stage in v.OPEN_STAGES and period.contains_date(state.expected_close):
        p = probabilities.get(state.stage, Decimal(0))
        facts.append((world.at, Vec(weighted_money=state.amount * p if ours else Decimal(0), weight=p)))
    return _spread(world, metric, facts, state.owner_id, state.product_line, state.region, state.segment)


def activity_contribution(row: Any, world: _World, metric: str) -> dict[UUID, Vec]:
    return _spread(world, metric, [(row.effective_at, Vec(activities=1))], row.member_id, None, None, None)


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
class TargetDelta:
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
    targets: tuple[TargetDelta, ...]
    contributors: tuple[Contributor, ...]


# --- cuts -----------------------------------------------------------------------------------------


def known_cut(conn: Connection, when: datetime, *, position: int) -> Cut:
    """``when`` on both clocks: effective up to it, as recorded by then (never beyond ``position``)."""
    return Cut(min(position_known_at(conn, when), position), when)


def version_cut(conn: Connection, *, plan_id: UUID, version: int, position: int) -> Cut:
    """Where the plan stood when ``version`` was published: its log position and effective time."""
    for number, row in published_versions(conn, plan_id, position):
        if number == version:
            return Cut(int(row.position), row.effective_at)
    raise NotFound("plan version", f"{plan_id} v{version}", "version")


# --- the query ------------------------------------------------------------------------------------


def _visible(row: Any, cut: Cut) -> bool:
    return bool(row.position <= cut.position and (cut.as_of is None or row.effective_at <= cut.as_of))


def _late(row: Any, hidden_at: Cut) -> bool:
    """Hidden at this cut only because it was recorded after it: a back-dated entry."""
    return hidden_at.as_of is not None and row.effective_at <= hidden_at.as_of and row.position > hidden_at.position


def _chunks(ids: Sequence[UUID], size: int = 500) -> Iterable[list[UUID]]:
    for i in range(0, len(ids), size):
        yield list(ids[i:i + size])


def attribute_change(
    conn: Connection, *, plan_id: UUID, a: Cut, b: Cut, now: datetime, target_id: UUID | None = None,
    unit_id: UUID | None = None, member_id: UUID | None = None, metric: str | None = None,
    period: str | None = None, config: ProgressConfig = ProgressConfig(),
) -> Attribution:
    """Why a target's (or a unit's, member's or the plan's) attainment and forecast moved from cut A to cut B."""
    if sum(x is not None for x in (target_id, unit_id, member_id)) > 1:
        raise ValidationError("scope.owner", "name at most one of target_id, unit_id or member_id", "target_id")
    position = max(a.position, b.position)
    plan = plan_facts(conn, plan_id, position)
    t = LIVE.targets.c
    if target_id is not None:
        row = conn.execute(sa.select(t.metric, t.period).where(
            t.target_id == target_id, t.plan_id == plan_id, t.position <= position).limit(1)).first()
        if row is None:
            raise NotFound("target", target_id, "target_id")
        if (metric or row.metric) != row.metric or (period or row.period) != row.period:
            raise ValidationError("attribution.target_mismatch",
                                  f"target {target_id} is {row.metric} for {row.period}", "metric")
        metric, period = row.metric, row.period
    metric = v.metric(metric or "revenue")
    period_key = period or plan.span
    span = v.Period.parse(period_key, "period")
    additive = metric in v.ADDITIVE_METRICS

    def world(cut: Cut) -> _World:
        org = Organisation(conn, cut)
        at = cut.as_of or now
        rows = [
            _Target(r.target_id, r.parent_id, r.unit_id, r.member_id, r.product_line, r.region, r.segment, r.committed)
            for r in conn.execute(sa.select(LIVE.targets).where(
                cut.where(LIVE.targets), t.plan_id == plan_id, t.metric == metric, t.period == period_key,
                t.removed.is_(False)).order_by(t.target_id))
        ]
        if target_id is not None:
            chosen = [r for r in rows if r.target_id == target_id]
        elif member_id is not None:
            chosen = covering_targets(rows, org, at, member_id=member_id, additive=additive)
        else:
            chosen = covering_targets(rows, org, at, unit_id=unit_id or plan.unit_id, additive=additive)
        return _World(cut, at, org, tuple(chosen))

    wa, wb = world(a), world(b)
    probabilities = config.stage_probabilities
    tallies: dict[UUID, Vec] = {}  # every contributor at A; the walk to B switches the changed ones
    changed: list[Changed] = []

    if metric == "activities":
        for row in _activity_rows(conn, span, position):
            seen_a, seen_b = _visible(row, a), _visible(row, b)
            if not (seen_a or seen_b):
                continue
            ca = activity_contribution(row, wa, metric) if seen_a else {}
            cb = activity_contribution(row, wb, metric) if seen_b else {}
            _add(tallies, ca)
            if _same(ca, cb):
                continue
            if seen_a != seen_b:
                cause = LATE_ENTRIES if _late(row, b if seen_a else a) else ACTIVITIES_LOGGED
            else:
                cause = _world_cause(activity_contribution(row, _swap_org(wb, wa), metric), cb, wa, wb)
            changed.append((ACTIVITY, row.activity_id, ca, cb, cause))
    else:
        for deal_id, history in _deal_histories(conn, (a, b), span, position).items():
            sa_, sb_ = _state(history, a), _state(history, b)
            ca = deal_contribution(sa_, wa, metric, span, plan.currency, probabilities)
            cb = deal_contribution(sb_, wb, metric, span, plan.currency, probabilities)
            _add(tallies, ca)
            if _same(ca, cb):
                continue
            cause = _deal_cause(history, a, b, sa_, sb_, span) or _world_cause(
                deal_contribution(sb_, _swap_org(wb, wa), metric, span, plan.currency, probabilities), cb, wa, wb)
            changed.append((DEAL, deal_id, ca, cb, cause))

    return _decompose(
        plan_id=plan_id, metric=metric, period=period_key, target_id=target_id, unit_id=unit_id,
        member_id=member_id, position=position, wa=wa, wb=wb, tallies=tallies, changed=changed,
    )


def _same(x: Mapping[UUID, Vec], y: Mapping[UUID, Vec]) -> bool:
    keys = set(x) | set(y)
    return all(x.get(k, ZERO) == y.get(k, ZERO) for k in keys)


def _swap_org(world: _World, other: _World) -> _World:
    """``world``'s targets on ``other``'s organisation and placement time: does the organisation matter?"""
    return _World(world.cut, other.at, other.org, world.targets)


def _world_cause(counterfactual: Mapping[UUID, Vec], cb: Mapping[UUID, Vec], wa: _World, wb: _World) -> str:
    """No event of the contributor explains its change: the organisation did, or the targets did."""
    if not _same(counterfactual, cb):
        return MEMBER_MOVES
    if {t.target_id for t in wa.targets} != {t.target_id for t in wb.targets}:
        return TARGET_REVISIONS
    return OTHER


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


def _deal_histories(conn: Connection, cuts: Sequence[Cut], span: v.Period, position: int) -> dict[UUID, list[Any]]:
    """The history rows (up to ``position``) of every deal that may count for the period at either cut."""
    deals = LIVE.deals
    d = deals.c
    in_period = sa.or_(
        sa.and_(d.closed_at >= span.start_at, d.closed_at < span.end_at),
        sa.and_(d.opened_at >= span.start_at, d.opened_at < span.end_at),
        sa.and_(d.stage.in_(v.OPEN_STAGES), d.expected_close >= span.start, d.expected_close < span.end),
    )
    ids: set[UUID] = set()
    for cut in cuts:
        ids.update(conn.execute(sa.select(d.deal_id).where(cut.where(deals), in_period)).scalars())
    histories: dict[UUID, list[Any]] = {}
    for chunk in _chunks(sorted(ids, key=str)):
        for row in conn.execute(sa.select(deals).where(d.deal_id.in_(chunk), d.position <= position)
                                .order_by(d.deal_id, d.position)):
            histories.setdefault(row.deal_id, []).append(row)
    return dict(sorted(histories.items(), key=lambda kv: str(kv[0])))


def _activity_rows(conn: Connection, span: v.Period, position: int) -> list[Any]:
    a = LIVE.activities.c
    return list(conn.execute(sa.select(LIVE.activities).where(
        a.position <= position, a.effective_at >= span.start_at, a.effective_at < span.end_at,
    ).order_by(a.position, a.activity_id)))


@dataclass(frozen=True)
class _Values:
    actual: Decimal
    attainment: Decimal | None
    forecast: Decimal | None


Changed = tuple[str, UUID, dict[UUID, Vec], dict[UUID, Vec], str]  # kind, id, at A, at B, cause


def _add(tallies: dict[UUID, Vec], contribution: Mapping[UUID, Vec], sign: int = 1) -> None:
    for tid, vec in contribution.items():
        tallies[tid] = tallies.get(tid, ZERO) + vec if sign > 0 else tallies.get(tid, ZERO) - vec


def _delta(metric: str, ca: Mapping[UUID, Vec], cb: Mapping[UUID, Vec]) -> tuple[Decimal | None, Decimal | None]:
    """A contributor's exact change to the actual and to the forecast, summed over the scope's targets."""
    if metric not in v.ADDITIVE_METRICS:
        return None, None
    diff = sum(cb.values(), ZERO) - sum(ca.values(), ZERO)
    actual = {"revenue": diff.money, "deals_won": Decimal(diff.won), "new_deals": Decimal(diff.opened),
              "activities": Decimal(diff.activities)}[metric]
    if metric == "revenue":
        return actual, actual + diff.weighted_money
    if metric == "deals_won":
        return actual, actual + diff.weight
    return actual, None


def _decompose(
    *, plan_id: UUID, metric: str, period: str, target_id: UUID | None, unit_id: UUID | None,
    member_id: UUID | None, position: int, wa: _World, wb: _World, tallies: dict[UUID, Vec], changed: list[Changed],
) -> Attribution:
    """Walk from A to B one cause at a time; each part is the change of the reported values."""
    additive = metric in v.ADDITIVE_METRICS
    target_a = sum((t.committed for t in wa.targets), Decimal(0))
    target_b = sum((t.committed for t in wb.targets), Decimal(0))

    # Without targets a cut has no attainment and no forecast (as the replay reports it), so neither has a walk.
    forecasting = metric in ("revenue", "deals_won") and bool(wa.targets) and bool(wb.targets)

    def values(target: Decimal, forecast: bool) -> _Values:
        if additive:
            # A scope's actual and forecast are the sums of its targets' (as the replay reports them).
            actual = sum((actual_of(metric, vec) for vec in tallies.values()), Decimal(0))
            total = sum((forecast_of(metric, vec) or Decimal(0) for vec in tallies.values()), Decimal(0))
        else:
            tally = sum(tallies.values(), ZERO)
            actual, total = actual_of(metric, tally), forecast_of(metric, tally) or Decimal(0)
        return _Values(actual, _ratio(actual, target) if target else None,
                       total if forecast and metric in ("revenue", "deals_won") else None)

    start = values(target_a, bool(wa.targets))
    by_cause: dict[str, list[Changed]] = {cause: [] for cause in SEQUENCE}
    for item in changed:
        by_cause[item[4]].append(item)
    walking = target_a != 0 and target_b != 0
    previous, target = values(target_a, forecasting), target_a
    parts: list[AttributionPart] = []
    for cause in SEQUENCE:
        if cause == TARGET_REVISIONS:
            target = target_b
        for _kind, _id, ca, cb, _cause in by_cause[cause]:
            _add(tallies, ca, -1)
            _add(tallies, cb)
        now = values(target, forecasting)
        parts.append(AttributionPart(
            cause=cause, actual=now.actual - previous.actual,
            attainment=now.attainment - previous.attainment
            if walking and now.attainment is not None and previous.attainment is not None else None,
            forecast=None if now.forecast is None or previous.forecast is None else now.forecast - previous.forecast,
            contributors=len(by_cause[cause]),
        ))
        previous = now
    end = values(target_b, bool(wb.targets))

    def standing(world: _World, target: Decimal, values: _Values) -> CutStanding:
        return CutStanding(world.cut.position, world.cut.as_of, tuple(t.target_id for t in world.targets), target,
                           values.actual, values.attainment, values.forecast)

    before = {t.target_id: t.committed for t in wa.targets}
    after = {t.target_id: t.committed for t in wb.targets}
    deltas = tuple(TargetDelta(tid, before.get(tid), after.get(tid)) for tid in sorted(set(before) | set(after), key=str)
                   if before.get(tid) != after.get(tid))
    return Attribution(
        plan_id=plan_id, metric=metric, period=period, target_id=target_id, unit_id=unit_id, member_id=member_id,
        position=position, a=standing(wa, target_a, start), b=standing(wb, target_b, end),
        target_change=target_b - target_a, actual_change=end.actual - start.actual,
        attainment_change=end.attainment - start.attainment
        if end.attainment is not None and start.attainment is not None else None,
        forecast_change=None if end.forecast is None or start.forecast is None else end.forecast - start.forecast,
        parts=tuple(parts), targets=deltas,
        contributors=tuple(Contributor(kind, cid, cause, *_delta(metric, ca, cb))
                           for kind, cid, ca, cb, cause in changed),
    )

"""What changed, and why: the scripted quarter worked out by hand, and exact sums on generated histories."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from uuid import UUID, uuid4

import eventsourcing.domain
import pytest
import sqlalchemy as sa

from domain.application import SalesPlanning
from domain.deal import Activity, Deal
from domain.errors import NotFound, ValidationError
from domain.organisation import Member
from domain.plan import Plan
from domain.values import ADDITIVE_METRICS, METRICS, Period
from projections.engine import ProjectionEngine
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.measure.arithmetic import ratio, rounded
from projections.measure.facts import METRIC_KINDS, Cell
from projections.measure.organisation import member_spans, tree_at
from projections.measure.targets import Rollup, Target, narrowings_of, scope_cell
from projections.queries.attribution import (
    OTHER,
    PRECEDENCE,
    SEQUENCE,
    Attribution,
    CutStanding,
    attribute_change,
    known_cut,
    version_cut,
)
from projections.queries.progress import ProgressFilter, progress
from projections.registry import all_projections
from tests.history_generator import generate_history
from tests.test_measure_core import _expected as brute_force
from tests.test_replay import NOW, RecordedClock, RetroQuarter, end_of
from tests.test_time_travel import replay

ZERO = Decimal(0)


@pytest.fixture
def quarter(monkeypatch: pytest.MonkeyPatch, app: SalesPlanning) -> RetroQuarter:
    clock = RecordedClock()
    monkeypatch.setattr(eventsourcing.domain, "datetime_now_with_tzinfo", clock)
    app.clock = clock
    q = RetroQuarter(app, clock)
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    return q


def end_of_february_to_end_of_march(app: SalesPlanning, q: RetroQuarter, **scope: Any) -> Attribution:
    """A: the end of February as known then. B: the end of March as known now."""
    with app.database.engine.connect() as conn:
        a = known_cut(conn, end_of(2, 28), position=q.head())
        b = known_cut(conn, end_of(3, 31), position=q.head())
        return attribute_change(conn, plan_id=q.plan, a=a, b=b, now=NOW, **scope)


def parts(result: Attribution) -> dict[str, tuple[Decimal, Decimal | None, Decimal | None]]:
    """The non-zero parts: cause → (actual, attainment, forecast)."""
    return {p.cause: (p.actual, p.attainment, p.forecast) for p in result.parts
            if p.actual or p.attainment or p.forecast}


def causes(result: Attribution) -> dict[UUID, str]:
    return {c.id: c.cause for c in result.contributors}


def values(s: CutStanding) -> tuple[Decimal, Decimal, Decimal | None, Decimal | None]:
    return s.target, s.actual, s.attainment, s.forecast


def assert_parts_sum(result: Attribution) -> None:
    assert [p.cause for p in result.parts] == list(SEQUENCE)
    assert sum((p.actual for p in result.parts), ZERO) == result.actual_change == result.b.actual - result.a.actual
    if result.attainment_change is None:
        assert all(p.attainment is None for p in result.parts)
    else:
        assert sum((p.attainment or ZERO for p in result.parts), ZERO) == result.attainment_change
    if result.forecast_change is None:
        assert all(p.forecast is None for p in result.parts)
    else:
        assert sum((p.forecast or ZERO for p in result.parts), ZERO) == result.forecast_change
    assert result.target_change == result.b.target - result.a.target


# --- the scripted quarter ---------------------------------------------------------------------


def test_west_why_its_forecast_rose_while_its_target_fell(app: SalesPlanning, quarter: RetroQuarter) -> None:
    q = quarter
    result = end_of_february_to_end_of_march(app, q, target_id=q.west_revenue)
    assert (result.a.position, result.b.position, result.position) == (q.end_of_february, q.head(), q.head())
    # A: nothing won; open and due: d3 6,000 negotiation (4,800), d11 1,500 proposal (900).
    assert values(result.a) == (Decimal("20000"), ZERO, Decimal("0.0000"), Decimal("5700"))
    # B: d6 won 3,000; open and due: d5 (Ann moved in) 2,400, d7 400, d10 1,500.
    assert values(result.b) == (Decimal("18000"), Decimal("3000"), Decimal("0.1667"), Decimal("7300"))
    assert parts(result) == {
        "late_entries": (Decimal("3000"), Decimal("0.1667"), Decimal("3000")),  # d6: won 3 Feb, entered 12 Mar
        "new_deals": (ZERO, ZERO, Decimal("1500")),  # d10: 2,500 × 0.6
        "slipped_out": (ZERO, ZERO, Decimal("-4800")),  # d3 moved to 15 April
        "pulled_in": (ZERO, ZERO, Decimal("400")),  # d7 moved from 10 April to 30 March: 2,000 × 0.2
        "reassignments": (ZERO, ZERO, Decimal("-900")),  # d11 went to Bob, in East
        "member_moves": (ZERO, ZERO, Decimal("2400")),  # Ann moved to West with d5: 4,000 × 0.6
    }
    # The revision to 18,000 moves nothing: 0 / 20,000 and 0 / 18,000 are both 0.
    assert result.parts[0].cause == "target_revisions" and result.parts[0].attainment == ZERO
    assert [(t.target_id, t.before, t.after) for t in result.targets] == [
        (q.west_revenue, Decimal("20000"), Decimal("18000"))]
    assert causes(result) == {q.d6: "late_entries", q.d10: "new_deals", q.d3: "slipped_out", q.d7: "pulled_in",
                              q.d11: "reassignments", q.d5: "member_moves"}
    assert_parts_sum(result)


def test_east_the_target_effect_comes_first_then_each_deal(app: SalesPlanning, quarter: RetroQuarter) -> None:
    q = quarter
    result = end_of_february_to_end_of_march(app, q, unit_id=q.east)
    assert result.b.target_ids == (q.east_revenue,)
    # A: won d1 10,000 + d12 7,000; open: d2 800, d4 500, d5 2,400, d8 200, d9 1,800.
    assert values(result.a) == (Decimal("30000"), Decimal("17000"), Decimal("0.5667"), Decimal("22700"))
    assert values(result.b) == (Decimal("33000"), Decimal("20000"), Decimal("0.6061"), Decimal("25950"))
    assert parts(result) == {
        # 17,000 / 33,000 = 0.5152 against 17,000 / 30,000 = 0.5667.
        "target_revisions": (ZERO, Decimal("-0.0515"), ZERO),
        # d9 won 3,000 (it was weighted 1,800): 20,000 / 33,000 = 0.6061.
        "deals_won": (Decimal("3000"), Decimal("0.0909"), Decimal("1200")),
        "deals_lost": (ZERO, ZERO, Decimal("-500")),  # d4
        "amount_changes": (ZERO, ZERO, Decimal("50")),  # d8 2,000 → 2,500 in lead
        "stage_changes": (ZERO, ZERO, Decimal("4000")),  # d2 lead → proposal: 8,000 × 0.5
        "reassignments": (ZERO, ZERO, Decimal("900")),  # d11 came from Cid
        "member_moves": (ZERO, ZERO, Decimal("-2400")),  # d5 left with Ann
    }
    assert result.attainment_change == Decimal("0.0394")
    assert_parts_sum(result)


def test_the_whole_plan_late_entries_and_wins_share_the_rise(app: SalesPlanning, quarter: RetroQuarter) -> None:
    q = quarter
    result = end_of_february_to_end_of_march(app, q)  # the plan: the company's own target stands for it
    assert result.a.target_ids == result.b.target_ids == (q.revenue,)
    assert values(result.a) == (Decimal("50000"), Decimal("17000"), Decimal("0.3400"), Decimal("28400"))
    # East's revision on 12 March took the company from 48,000 (v2) to 51,000.
    assert values(result.b) == (Decimal("51000"), Decimal("23000"), Decimal("0.4510"), Decimal("33250"))
    assert parts(result) == {
        # 17,000 / 51,000 = 0.3333 against 17,000 / 50,000 = 0.3400.
        "target_revisions": (ZERO, Decimal("-0.0067"), ZERO),
        # d6: 20,000 / 51,000 = 0.3922.
        "late_entries": (Decimal("3000"), Decimal("0.0589"), Decimal("3000")),
        "new_deals": (ZERO, ZERO, Decimal("1500")),
        # d9: 23,000 / 51,000 = 0.4510.
        "deals_won": (Decimal("3000"), Decimal("0.0588"), Decimal("1200")),
        "deals_lost": (ZERO, ZERO, Decimal("-500")),
        "slipped_out": (ZERO, ZERO, Decimal("-4800")),
        "pulled_in": (ZERO, ZERO, Decimal("400")),
        "amount_changes": (ZERO, ZERO, Decimal("50")),
        "stage_changes": (ZERO, ZERO, Decimal("4000")),
    }
    # Within the company, d11's reassignment and Ann's move change nothing.
    assert q.d11 not in causes(result) and q.d5 not in causes(result)
    assert_parts_sum(result)


def test_a_ratio_is_walked_cause_by_cause(app: SalesPlanning, quarter: RetroQuarter) -> None:
    q = quarter
    result = end_of_february_to_end_of_march(app, q, target_id=q.win_rate)
    # A: won d1, d12, nothing lost: 1.0. B: won d1 d6 d9 d12, lost d4: 0.8.
    assert values(result.a) == (Decimal("0.5"), Decimal("1.0000"), Decimal("2.0000"), None)
    assert values(result.b) == (Decimal("0.5"), Decimal("0.8000"), Decimal("1.6000"), None)
    # d6 (late) and d9 (won) keep the rate at 1.0; losing d4 takes it to 4 of 5.
    assert parts(result) == {"deals_lost": (Decimal("-0.2000"), Decimal("-0.4000"), None)}
    assert causes(result) == {q.d6: "late_entries", q.d9: "deals_won", q.d4: "deals_lost"}
    assert all(c.actual is None for c in result.contributors)
    assert_parts_sum(result)


def test_a_rolled_up_count_and_a_reassignment_inside_it(app: SalesPlanning, quarter: RetroQuarter) -> None:
    q = quarter
    result = end_of_february_to_end_of_march(app, q, metric="new_deals")
    assert set(result.a.target_ids) == set(result.b.target_ids) == {q.east_new, q.cid_new}  # 8 + 3
    # A: East's members opened d1 d2 d4 d5 d8 d9 d12; Cid d3 d7 d11. B adds d6 (late) and d10.
    assert values(result.a) == (Decimal("11"), Decimal("10"), Decimal("0.9091"), None)
    assert values(result.b) == (Decimal("11"), Decimal("12"), Decimal("1.0909"), None)
    assert parts(result) == {"late_entries": (Decimal("1"), Decimal("0.0909"), None),
                             "new_deals": (Decimal("1"), Decimal("0.0909"), None)}
    # d11 was reassigned to Bob, but a new deal counts for whoever opened it (Cid, at both cuts), and d8's
    # amount rose, which no count reads: neither changed the company's new deals.
    assert causes(result) == {q.d6: "late_entries", q.d10: "new_deals"}
    assert_parts_sum(result)


def test_between_two_published_versions(app: SalesPlanning, quarter: RetroQuarter) -> None:
    q = quarter
    with app.database.engine.connect() as conn:
        v1 = version_cut(conn, plan_id=q.plan, version=1, position=q.head())
        v2 = version_cut(conn, plan_id=q.plan, version=2, position=q.head())
        assert (v1, v2) == (Cut(q.v1, datetime(2026, 1, 2, 9, tzinfo=UTC)), Cut(q.v2, datetime(2026, 3, 11, 9, tzinfo=UTC)))
        result = attribute_change(conn, plan_id=q.plan, a=v1, b=v2, now=NOW, target_id=q.west_revenue)
        with pytest.raises(NotFound):
            version_cut(conn, plan_id=q.plan, version=3, position=q.head())
    # At v2 (11 March, before d6 was entered): d7 pulled into March (400) and d10 (1,500), both opened after v1.
    assert values(result.a) == (Decimal("20000"), ZERO, Decimal("0.0000"), ZERO)
    assert values(result.b) == (Decimal("18000"), ZERO, Decimal("0.0000"), Decimal("1900"))
    assert parts(result) == {"new_deals": (ZERO, ZERO, Decimal("1900"))}
    assert result.target_change == Decimal("-2000")
    assert_parts_sum(result)


def test_the_reverse_question_gives_the_opposite_answer(app: SalesPlanning, quarter: RetroQuarter) -> None:
    q = quarter
    forward = end_of_february_to_end_of_march(app, q, target_id=q.east_revenue)
    with app.database.engine.connect() as conn:
        backward = attribute_change(conn, plan_id=q.plan, a=Cut(forward.b.position, forward.b.as_of),
                                    b=Cut(forward.a.position, forward.a.as_of), now=NOW, target_id=q.east_revenue)
    assert (backward.actual_change, backward.forecast_change, backward.target_change) == (
        -forward.actual_change, -(forward.forecast_change or ZERO), -forward.target_change)
    assert causes(backward) == causes(forward)
    assert_parts_sum(backward)


def test_attribution_refuses_bad_arguments(app: SalesPlanning, quarter: RetroQuarter) -> None:
    q = quarter
    with pytest.raises(ValidationError):
        end_of_february_to_end_of_march(app, q, target_id=q.east_revenue, unit_id=q.east)
    with pytest.raises(ValidationError):
        end_of_february_to_end_of_march(app, q, target_id=q.east_revenue, metric="deals_won")
    with pytest.raises(NotFound):
        end_of_february_to_end_of_march(app, q, target_id=uuid4())
    with pytest.raises(ValidationError):
        end_of_february_to_end_of_march(app, q, metric="margin")


# --- generated histories: the parts always add up ---------------------------------------------


def progress_standing(app: SalesPlanning, conn: Any, cut: Cut, result: Attribution) -> tuple[Any, ...]:
    """The scope's standing at the cut, from elsewhere: its standing targets as /progress reports them (the
    roll-up rule), its facts by brute force over the filtered log (``tests.test_measure_core``)."""
    at = cut.as_of or NOW
    rows = progress(conn, cut=cut, now=NOW, filters=ProgressFilter(
        plan_id=result.plan_id, metric=result.metric, period=result.period)).rows
    targets = [Target(r.target_id, r.plan_id, r.parent_id, r.metric, r.period, r.window_start, r.window_end,
                      r.unit_id, r.member_id, r.product_line, r.region, r.segment, r.committed, r.stretch)
               for r in rows]
    span = Period.parse(result.period)
    if result.target_id is not None:
        chosen = [x for x in targets if x.target_id == result.target_id]
        t = LIVE.targets.c
        own = conn.execute(sa.select(LIVE.targets).where(t.target_id == result.target_id).limit(1)).one()
        cells = [Cell("own", METRIC_KINDS[result.metric], own.member_id or own.unit_id, span.start_at, span.end_at,
                      "EUR", own.product_line, own.region, own.segment)]
    else:
        members = {x.member_id for x in targets if x.member_id is not None}
        rollup = Rollup(targets, tree_at(conn, cut), member_spans(conn, cut.position, members))
        window = (result.metric, span.start_at, span.end_at)
        owner = result.member_id or result.unit_id or plan_unit(conn, result.plan_id)
        chosen = rollup.covering(window, member_id=owner) if result.member_id else rollup.covering(window,
                                                                                                  unit_id=owner)
        cells = [scope_cell(f"s{i}", result.metric, owner, span.start_at, span.end_at, "EUR", n)
                 for i, n in enumerate(narrowings_of(chosen))]
    replayed = replay(app, cut.position, cut.as_of)
    figures = [brute_force(replayed, c, at) for c in cells]
    target = sum((x.committed for x in chosen), ZERO)
    if result.metric in ADDITIVE_METRICS:
        actual = sum((f[result.metric] or Fraction(0) for f in figures), Fraction(0))
    else:
        (only,) = figures
        actual = only[result.metric] or Fraction(0)
    weighted = {"revenue": "weighted_revenue", "deals_won": "weighted_deals"}.get(result.metric)
    forecast = None if weighted is None else rounded(
        result.metric, actual + sum((f[weighted] or Fraction(0) for f in figures), Fraction(0)))
    attainment = ratio(actual / Fraction(target)) if target else None
    return target, rounded(result.metric, actual), attainment, forecast, {x.target_id for x in chosen}


def plan_unit(conn: Any, plan_id: UUID) -> UUID:
    unit: UUID = conn.execute(sa.select(LIVE.plans.c.unit_id).where(LIVE.plans.c.plan_id == plan_id).limit(1)
                              ).scalar_one()
    return unit


@pytest.mark.parametrize("seed", [4, 9])
def test_the_parts_add_up_exactly_for_random_pairs_of_cuts(app: SalesPlanning, seed: int) -> None:
    history = generate_history(app, seed=seed, commands=300)
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    head = engine.head()
    rnd = random.Random(seed)
    first, last = history.effective_times[0], history.effective_times[-1]
    with app.database.engine.connect() as conn:
        # In the order they were set, so that a seed always picks the same ones (their ids are random).
        t = LIVE.targets.c
        set_order: dict[UUID, tuple[Any, ...]] = {}
        for r in conn.execute(sa.select(t.target_id, t.position, t.period, t.metric, t.unit_id, t.member_id)
                              .where(t.plan_id == history.plan_id).order_by(t.position)):
            set_order.setdefault(r.target_id, (r.position, r.period, r.metric,
                                           history.units.index(r.unit_id) if r.unit_id else -1,
                                           history.members.index(r.member_id) if r.member_id else -1))
        targets = sorted(set_order, key=lambda target: set_order[target])
    periods = ["2025", "2025-Q1", "2025-Q2", "2025-Q3"]

    def moment() -> datetime:
        return first + timedelta(seconds=rnd.uniform(0, (last - first).total_seconds()))

    def random_pair() -> tuple[Cut, Cut]:
        # The generator enters much of its history late, so mixing both clocks at random makes nearly every
        # change a late entry: also ask along one clock at a time, where the business causes show.
        roll = rnd.random()
        if roll < 0.4:  # one position, two effective times
            position = rnd.choice([head, rnd.randint(1, head)])
            return Cut(position, moment()), Cut(position, moment())
        if roll < 0.6:  # one position, a week or two apart
            position, start = rnd.choice([head, rnd.randint(1, head)]), moment()
            return Cut(position, start), Cut(position, start + timedelta(days=rnd.randint(1, 15)))
        if roll < 0.75:  # two positions, no effective cut
            return Cut(rnd.randint(1, head)), Cut(rnd.randint(1, head))
        return (Cut(rnd.randint(1, head), rnd.choice([None, moment()])),
                Cut(rnd.randint(1, head), rnd.choice([None, moment()])))

    seen: Counter[str] = Counter()
    per_cause_checked = 0
    with app.database.engine.connect() as conn:
        for _ in range(80):
            a, b = random_pair()
            roll = rnd.random()
            scope: dict[str, Any]
            if roll < 0.3:
                scope = {"target_id": rnd.choice(targets)}
            elif roll < 0.55:  # the company holds a 2025 target for every metric
                scope = {"metric": rnd.choice(METRICS), "period": "2025"}
            elif roll < 0.7:  # the company's revenue quarters; deals won roll up from a team's Q2 target
                scope = {"metric": rnd.choice(["revenue", "deals_won"]), "period": rnd.choice(periods[1:])}
            elif roll < 0.9:  # Q1 revenue was decomposed by region
                scope = {"unit_id": rnd.choice(history.units[1:4]), "metric": "revenue", "period": "2025-Q1"}
            else:
                scope = {"member_id": rnd.choice(history.members), "metric": rnd.choice(METRICS),
                         "period": rnd.choice(periods)}
            try:
                result = attribute_change(conn, plan_id=history.plan_id, a=a, b=b, now=NOW, **scope)
            except NotFound:  # a target (or the plan) that neither cut's position reaches
                continue
            assert_parts_sum(result)
            for cut, end in ((a, result.a), (b, result.b)):
                assert progress_standing(app, conn, cut, result) == (
                    end.target, end.actual, end.attainment, end.forecast, set(end.target_ids)), (cut, scope)
            assert all(c.cause in PRECEDENCE and c.cause != OTHER for c in result.contributors)
            seen.update(c.cause for c in result.contributors)
            if result.metric in ADDITIVE_METRICS:
                # Whole money and probabilities of two places: the contributors' exact deltas are the parts.
                actual: dict[str, Decimal] = defaultdict(Decimal)
                forecast: dict[str, Decimal] = defaultdict(Decimal)
                for c in result.contributors:
                    actual[c.cause] += c.actual or ZERO
                    forecast[c.cause] += c.forecast or ZERO
                for p in result.parts:
                    assert p.actual == actual[p.cause]
                    assert p.forecast is None or p.forecast == forecast[p.cause]
                    per_cause_checked += 1
    # Not a degenerate sample: many causes, and many parts checked against their contributors.
    assert len(seen) >= 8, seen
    assert per_cause_checked > 200


EXPECTED_CAUSES: dict[type[Any], set[str]] = {
    Deal.Opened: {"new_deals"}, Deal.Won: {"deals_won"}, Deal.Lost: {"deals_lost"},
    Deal.Reopened: {"deals_reopened"}, Deal.ExpectedCloseChanged: {"slipped_out", "pulled_in"},
    Deal.AmountChanged: {"amount_changes"}, Deal.StageChanged: {"stage_changes"},
    Member.Moved: {"member_moves"}, Activity.Logged: {"activities_logged"},
    Plan.TargetSet: {"target_revisions"}, Plan.TargetDecomposed: {"target_revisions"},
    Plan.TargetRevised: {"target_revisions"}, Plan.TargetRemoved: {"target_revisions"},
}


def scopes_for(event: Any, regions: list[UUID]) -> list[dict[str, Any]]:
    """Scopes one event can move: the company's year targets, its revenue quarters, the regions' Q1 revenue."""
    year = [{"metric": m, "period": "2025"} for m in ("revenue", "deals_won", "new_deals", "win_rate")]
    quarters = [{"metric": "revenue", "period": f"2025-Q{q}"} for q in range(1, 5)]
    by_region = [{"unit_id": r, "metric": "revenue", "period": "2025-Q1"} for r in regions]
    if isinstance(event, Deal.ExpectedCloseChanged):
        return quarters
    if isinstance(event, Activity.Logged):
        return [{"metric": "activities", "period": "2025"}]
    if isinstance(event, Member.Moved | Plan.Event):
        return by_region + quarters[:1]
    return year + by_region


def test_a_pair_of_cuts_one_event_apart_blames_that_event(app: SalesPlanning) -> None:
    history = generate_history(app, seed=6, commands=300)
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    rnd = random.Random(6)
    by_type: dict[type[Any], list[tuple[int, Any]]] = defaultdict(list)
    for n in app.recorder.select_notifications(start=1, limit=10**6):
        event = app.mapper.to_domain_event(n)
        if type(event) in EXPECTED_CAUSES:
            by_type[type(event)].append((n.id, event))
    blamed: Counter[str] = Counter()
    with app.database.engine.connect() as conn:
        for kind, events in by_type.items():
            for position, event in rnd.sample(events, min(len(events), 6)):
                for scope in scopes_for(event, history.units[1:4]):
                    # No effective cut: exactly one event differs, and nothing is a late entry.
                    result = attribute_change(conn, plan_id=history.plan_id, a=Cut(position - 1), b=Cut(position),
                                              now=NOW, **scope)
                    assert_parts_sum(result)
                    assert {c.cause for c in result.contributors} <= EXPECTED_CAUSES[kind], (kind, scope)
                    blamed.update(c.cause for c in result.contributors)
    # Seeded: this history moves members and deals across quarter boundaries too.
    assert set(blamed) >= {"new_deals", "deals_won", "deals_lost", "deals_reopened", "amount_changes", "stage_changes",
                           "slipped_out", "pulled_in", "member_moves", "activities_logged", "target_revisions"}, blamed

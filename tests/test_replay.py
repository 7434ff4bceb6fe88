"""The retrospective on a scripted quarter: the replay (as known then and now) and baseline vs revisions vs actual.

The quarter's events carry both clocks: each is recorded an hour after it happened, except
a deal entered late and a back-dated revision, so "as known then" and "as known now" differ.
Every expected number below is worked out by hand from the script.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import eventsourcing.domain
import pytest
import sqlalchemy as sa

from domain.application import CommandResult, SalesPlanning
from domain.errors import NotFound, RuleViolation, ValidationError
from domain.plan import Plan
from domain.values import Period, Scope
from projections.engine import ProjectionEngine
from projections.folds.revisions import LIVE as REASONS
from projections.folds.revisions import RevisionEntry, revision_entries
from projections.queries.baseline import BaselineReport, plan_baseline
from projections.queries.replay import QuarterReplay, ReplayStep, quarter_replay, step_bounds
from projections.registry import all_projections


def at(month: int, day: int, hour: int = 9) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def end_of(month: int, day: int) -> datetime:
    """The last instant of a day: a step's effective cut."""
    return datetime(2026, month, day, tzinfo=UTC) + timedelta(days=1, microseconds=-1)


NOW = datetime(2026, 4, 15, tzinfo=UTC)


class RecordedClock:
    """The clock the event store stamps events with (the wall clock, in production)."""

    def __init__(self) -> None:
        self.now = at(1, 1, 8)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, app: SalesPlanning) -> RecordedClock:
    clock = RecordedClock()
    monkeypatch.setattr(eventsourcing.domain, "datetime_now_with_tzinfo", clock)
    app.clock = clock  # "effective in the future" is judged against the same clock
    return clock


class RetroQuarter:
    """Q1 2026 of a company with East (Ann, Bob) and West (Cid). Plan: revenue 50,000 split East 30,000 /
    West 20,000, Ann 12,000 of her own, 6 deals won, win rate 0.5, new deals East 8 and Cid 3.

    A ("as known at the end of February") and B ("the end of March, as known now") are the cuts the
    attribution tests compare. Between them: d2 moves to proposal, d7 is pulled into March, d3 slips
    to April, d9 is won, d11 is reassigned from Cid to Bob, d4 is lost, West is revised down and v2
    published, d10 is opened, d6 (won 3 February) is entered on 12 March, d8's amount rises, Ann
    moves to West on 20 March and, the same day, East's revision to 33,000 is entered back-dated
    to 12 March.
    """

    def __init__(self, app: SalesPlanning, recorded: RecordedClock) -> None:
        self.app = app
        self.recorded = recorded
        m = "manager"
        self.when(1, 1)
        self.company = app.add_unit(name="Company", actor=m, effective_at=at(1, 1)).id
        self.east = app.add_unit(name="East", parent_id=self.company, actor=m, effective_at=at(1, 1)).id
        self.west = app.add_unit(name="West", parent_id=self.company, actor=m, effective_at=at(1, 1)).id
        self.ann = app.add_member(name="Ann", role="rep", unit_id=self.east, actor=m, effective_at=at(1, 1)).id
        self.bob = app.add_member(name="Bob", role="rep", unit_id=self.east, actor=m, effective_at=at(1, 1)).id
        self.cid = app.add_member(name="Cid", role="rep", unit_id=self.west, actor=m, effective_at=at(1, 1)).id
        self.product = app.add_product(name="GTX Pro", product_line="GTX", list_price="1000", currency="EUR",
                                       actor=m, effective_at=at(1, 1)).id
        self.plan = app.draft_plan(name="Q1 2026", span="2026-Q1", currency="EUR", unit_id=self.company, actor=m,
                                   effective_at=at(1, 1)).id
        self.revenue = self.target("revenue", Scope(unit_id=self.company), "50000")
        children = app.decompose_target(
            self.plan, parent_id=self.revenue, by="unit", parts=[str(self.east), str(self.west)], method="values",
            values=[Decimal("30000"), Decimal("20000")], actor=m, effective_at=at(1, 1)).details["child_ids"]
        self.east_revenue, self.west_revenue = (UUID(c) for c in children)
        self.ann_revenue = self.target("revenue", Scope(member_id=self.ann), "12000")
        self.deals_won = self.target("deals_won", Scope(unit_id=self.company), "6")
        self.win_rate = self.target("win_rate", Scope(unit_id=self.company), "0.5")
        self.east_new = self.target("new_deals", Scope(unit_id=self.east), "8")
        self.cid_new = self.target("new_deals", Scope(member_id=self.cid), "3")
        self.when(1, 2)
        self.v1 = app.publish_plan(self.plan, note="baseline", actor=m, effective_at=at(1, 2)).position

        self.d12 = self.open(1, 3, self.bob, "7000")
        self.d1 = self.open(1, 5, self.ann, "10000")
        self.d2 = self.open(1, 6, self.bob, "8000", close=date(2026, 3, 25))
        self.d3 = self.open(1, 8, self.cid, "6000", close=date(2026, 3, 20))
        self.d4 = self.open(1, 10, self.bob, "5000")
        self.d7 = self.open(1, 15, self.cid, "2000", close=date(2026, 4, 10), stage="qualified")
        self.on(1, 20, lambda e: app.win_deal(self.d1, actor="ann", effective_at=e))
        self.d11 = self.open(1, 25, self.cid, "1500", close=date(2026, 3, 18), stage="proposal")
        self.on(2, 1, lambda e: app.change_deal_stage(self.d3, stage="negotiation", actor="cid", effective_at=e))
        self.d5 = self.open(2, 1, self.ann, "4000", close=date(2026, 3, 25))
        self.on(2, 2, lambda e: app.change_deal_stage(self.d5, stage="proposal", actor="ann", effective_at=e))
        self.on(2, 10, lambda e: app.win_deal(self.d12, actor="bob", effective_at=e))
        self.d9 = self.open(2, 21, self.ann, "3000", stage="proposal")
        self.d8 = self.open(2, 25, self.bob, "2000", close=date(2026, 3, 28))
        self.end_of_february = self.head()

        self.on(3, 2, lambda e: app.change_deal_stage(self.d2, stage="proposal", actor="bob", effective_at=e))
        self.on(3, 3, lambda e: app.change_deal_expected_close(self.d7, expected_close=date(2026, 3, 30),
                                                               reason="customer wants it this quarter", actor="cid",
                                                               effective_at=e))
        self.on(3, 5, lambda e: app.change_deal_expected_close(self.d3, expected_close=date(2026, 4, 15),
                                                               reason="customer delayed its budget", actor="cid",
                                                               effective_at=e))
        self.on(3, 5, lambda e: app.win_deal(self.d9, actor="ann", effective_at=e))
        self.on(3, 6, lambda e: app.reassign_deal(self.d11, owner_id=self.bob, reason="Cid is overloaded",
                                                  actor=m, effective_at=e))
        self.on(3, 8, lambda e: app.lose_deal(self.d4, reason="went with a competitor", actor="bob", effective_at=e))
        self.on(3, 10, lambda e: app.revise_target(self.plan, target_id=self.west_revenue, committed="18000",
                                                   absorb="parent", reason="key account slipped", actor=m,
                                                   effective_at=e))
        self.d10 = self.open(3, 10, self.cid, "2500", stage="proposal")
        self.v2 = self.on(3, 11, lambda e: app.publish_plan(self.plan, note="March rolling adjustment", actor=m,
                                                             effective_at=e)).position
        # Entered on 12 March: Cid had opened d6 on 12 January and won it on 3 February.
        self.when(3, 12)
        self.d6 = app.open_deal(name="d6", account_id=None, owner_id=self.cid, product_id=self.product, amount="3000",
                                currency="EUR", expected_close=date(2026, 3, 31), actor="cid",
                                effective_at=at(1, 12)).id
        app.win_deal(self.d6, actor="cid", effective_at=at(2, 3))
        self.on(3, 15, lambda e: app.change_deal_amount(self.d8, amount="2500", actor="bob", effective_at=e))
        self.on(3, 20, lambda e: app.move_member(self.ann, unit_id=self.west, reason="covers West from 20 March",
                                                 actor=m, effective_at=e))
        self.recorded.now = at(3, 20, 11)
        self.east_revision = app.revise_target(
            self.plan, target_id=self.east_revenue, committed="33000", absorb="parent", actor=m,
            effective_at=at(3, 12),
            reason="two East accounts signed letters of intent").position

    def when(self, month: int, day: int) -> None:
        self.recorded.now = at(month, day, 10)

    def on(self, month: int, day: int, command: Callable[[datetime], CommandResult]) -> CommandResult:
        """Run a command effective at 09:00 and recorded at 10:00 that day."""
        self.when(month, day)
        return command(at(month, day))

    def target(self, metric: str, scope: Scope, committed: str) -> UUID:
        target_id = uuid4()
        self.app.set_target(self.plan, metric=metric, period="2026-Q1", scope=scope, committed=committed,
                            target_id=target_id, actor="manager", effective_at=at(1, 1))
        return target_id

    def open(self, month: int, day: int, owner: UUID, amount: str, close: date = date(2026, 3, 31),
             stage: str = "lead") -> UUID:
        return self.on(month, day, lambda e: self.app.open_deal(
            name="deal", account_id=None, owner_id=owner, product_id=self.product, amount=amount, currency="EUR",
            expected_close=close, stage=stage, actor="rep", effective_at=e)).id

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0


@pytest.fixture
def quarter(app: SalesPlanning, recorded: RecordedClock) -> RetroQuarter:
    q = RetroQuarter(app, recorded)
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    return q


def replay(app: SalesPlanning, q: RetroQuarter, **kwargs: Any) -> QuarterReplay:
    args: dict[str, Any] = {"plan_id": q.plan, "span": "2026-Q1", "position": q.head(), "now": NOW, **kwargs}
    with app.database.engine.connect() as conn:
        return quarter_replay(conn, **args)


def ending(result: QuarterReplay, day: date) -> ReplayStep:
    (step,) = [s for s in result.steps if s.end - timedelta(days=1) == day]
    return step


# --- the replay ---------------------------------------------------------------------------------


def test_weekly_steps_end_on_sundays_and_tile_the_quarter() -> None:
    bounds = step_bounds(Period.parse("2026-Q1"), "week")
    assert bounds[0] == (date(2026, 1, 1), date(2026, 1, 5))  # 1 January is a Thursday
    assert bounds[1] == (date(2026, 1, 5), date(2026, 1, 12))
    assert bounds[-1] == (date(2026, 3, 30), date(2026, 4, 1))
    assert len(bounds) == 14
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert len(step_bounds(Period.parse("2026-Q1"), "day")) == 90


def test_the_company_quarter_week_by_week_as_known_now_and_as_known_then(app: SalesPlanning,
                                                                        quarter: RetroQuarter) -> None:
    now = replay(app, quarter, step="week", known="now")
    then = replay(app, quarter, step="week", known="then")
    assert len(now.steps) == len(then.steps) == 14
    assert all(s.position == quarter.head() for s in now.steps)
    assert [s.position for s in then.steps] == sorted(s.position for s in then.steps)
    assert then.steps[-1].position == quarter.head()
    assert all(s.standing.target_ids == (quarter.revenue,) for s in now.steps)  # the company's own target

    # Won: d1 10,000 (20 Jan), d6 3,000 (3 Feb, entered 12 Mar), d12 7,000 (10 Feb), d9 3,000 (5 Mar).
    assert [s.standing.actual for s in now.steps] == [Decimal(x) for x in (
        0, 0, 0, 10000, 10000, 13000, 20000, 20000, 20000, 23000, 23000, 23000, 23000, 23000)]
    # As known then, d6 only shows from the week it was entered (the week ending 15 March).
    assert [s.standing.actual for s in then.steps] == [Decimal(x) for x in (
        0, 0, 0, 10000, 10000, 10000, 17000, 17000, 17000, 20000, 23000, 23000, 23000, 23000)]

    # The week ending Sunday 1 March: 60 of 90 days elapsed.
    week, known_then = ending(now, date(2026, 3, 1)), ending(then, date(2026, 3, 1))
    assert week.as_of == end_of(3, 1)
    assert known_then.position == quarter.end_of_february
    s = week.standing
    assert s.target == Decimal("50000")
    # The cut is 1 March's last microsecond: 60 days less 1 µs of 90. 50,000 × that share = 33,333.333… → 33,333.33.
    assert s.expected_to_date == Decimal("33333.33")
    # Open and due in Q1: d2 8,000 lead, d3 6,000 negotiation, d4 5,000 lead, d5 4,000 proposal,
    # d8 2,000 lead, d9 3,000 proposal, d11 1,500 proposal (d7 is due in April).
    assert s.weighted_pipeline == Decimal("11400.00")  # 800 + 4,800 + 500 + 2,400 + 200 + 1,800 + 900
    assert (s.actual, s.forecast, s.attainment) == (Decimal("20000"), Decimal("31400.00"), Decimal("0.4000"))
    assert (s.pace, s.pace_status) == (Decimal("0.6000"), "behind")
    t = known_then.standing
    assert (t.actual, t.forecast, t.attainment) == (Decimal("17000"), Decimal("28400.00"), Decimal("0.3400"))
    assert (t.pace, t.pace_status) == (Decimal("0.5100"), "behind")


def test_east_mid_march_was_at_risk_as_known_then_and_is_behind_as_known_now(app: SalesPlanning,
                                                                           quarter: RetroQuarter) -> None:
    now = ending(replay(app, quarter, step="week", known="now", unit_id=quarter.east), date(2026, 3, 15)).standing
    then = ending(replay(app, quarter, step="week", known="then", unit_id=quarter.east), date(2026, 3, 15)).standing
    assert now.target_ids == then.target_ids == (quarter.east_revenue,)  # East's own target, not Ann's
    # The revision to 33,000 is effective 12 March but was only entered on 20 March.
    assert (now.target, then.target) == (Decimal("33000"), Decimal("30000"))
    for s in (now, then):
        assert s.actual == Decimal("20000")  # d1 10,000 + d12 7,000 + d9 3,000 (Ann is in East until 20 March)
        # d2 8,000 proposal, d5 4,000 proposal (Ann still East), d8 2,500 lead, d11 1,500 proposal (now Bob's)
        assert s.weighted_pipeline == Decimal("8350.00")
        assert s.forecast == Decimal("28350.00")
    # 74 of 90 days (less the last microsecond): 33,000 × 74/90 = 27,133.33 and 30,000 × 74/90 = 24,666.67.
    assert (now.expected_to_date, now.pace, now.pace_status) == (Decimal("27133.33"), Decimal("0.7371"), "behind")
    assert (then.expected_to_date, then.pace, then.pace_status) == (Decimal("24666.67"), Decimal("0.8108"), "at_risk")


def test_west_at_the_end_of_march_and_a_late_entry_day_by_day(app: SalesPlanning, quarter: RetroQuarter) -> None:
    now = replay(app, quarter, step="day", known="now", unit_id=quarter.west)
    then = replay(app, quarter, step="day", known="then", unit_id=quarter.west)
    assert len(now.steps) == len(then.steps) == 90
    assert now.steps[0].start == date(2026, 1, 1) and now.steps[-1].end == date(2026, 4, 1)
    # d6 was won on 3 February but entered on 12 March.
    assert ending(now, date(2026, 2, 2)).standing.actual == Decimal("0")
    assert ending(now, date(2026, 2, 3)).standing.actual == Decimal("3000")
    assert ending(then, date(2026, 3, 11)).standing.actual == Decimal("0")
    assert ending(then, date(2026, 3, 12)).standing.actual == Decimal("3000")
    # West's target: 20,000 until the revision effective (and entered) 10 March.
    assert ending(now, date(2026, 3, 9)).standing.target == Decimal("20000")
    assert ending(now, date(2026, 3, 10)).standing.target == Decimal("18000")
    last = now.steps[-1].standing
    # Open, due in Q1 and West's on 31 March: d5 4,000 proposal (Ann moved in), d7 2,000 qualified (pulled
    # into March), d10 2,500 proposal. d3 slipped to April; d11 went to Bob.
    assert last.weighted_pipeline == Decimal("4300.00")
    assert (last.actual, last.forecast, last.attainment) == (Decimal("3000"), Decimal("7300.00"), Decimal("0.1667"))
    assert last.expected_to_date == Decimal("18000.00") and last.pace_status == "behind"


def test_a_member_a_ratio_and_a_rolled_up_count(app: SalesPlanning, quarter: RetroQuarter) -> None:
    ann = ending(replay(app, quarter, step="week", member_id=quarter.ann), date(2026, 3, 8)).standing
    assert (ann.target, ann.actual, ann.weighted_pipeline) == (Decimal("12000"), Decimal("13000"), Decimal("2400.00"))

    rate = replay(app, quarter, step="week", metric="win_rate").steps[-1].standing
    # Won d1, d6, d9, d12; lost d4: 4 of 5.
    assert (rate.target_ids, rate.target, rate.actual) == ((quarter.win_rate,), Decimal("0.5"), Decimal("0.8000"))
    assert rate.pace_status == "ahead" and rate.forecast is None

    # The company has no new-deals target of its own: East's 8 and (West has none) Cid's 3 stand for it.
    new = replay(app, quarter, step="week", metric="new_deals").steps[-1].standing
    assert set(new.target_ids) == {quarter.east_new, quarter.cid_new}
    assert new.target == Decimal("11")
    # Opened in Q1: East's members d1 d2 d4 d5 d8 d9 d12; Cid d3 d6 d7 d10 and d11 (a new deal counts for
    # the member who opened it, though Bob owns it now): 12 for the company.
    assert new.actual == Decimal("12") and new.forecast is None


def test_markers_are_the_publications_and_the_revisions(app: SalesPlanning, quarter: RetroQuarter) -> None:
    markers = replay(app, quarter, step="week").markers
    # Each regional revision moves the company's number with it, in the same event: West's
    # 20,000 → 18,000 takes the company from 50,000 to 48,000, East's 30,000 → 33,000 to 51,000.
    west_cut = [("revised", None, quarter.west_revenue, Decimal("20000"), Decimal("18000")),
                ("revised", None, quarter.revenue, Decimal("50000"), Decimal("48000"))]
    east_rise = [("revised", None, quarter.east_revenue, Decimal("30000"), Decimal("33000")),
                 ("revised", None, quarter.revenue, Decimal("48000"), Decimal("51000"))]
    assert [(m.kind, m.version, m.target_id, m.before, m.after) for m in markers] == [
        ("published", 1, None, None, None),
        *sorted(west_cut, key=lambda m: str(m[2])),
        ("published", 2, None, None, None),
        *sorted(east_rise, key=lambda m: str(m[2])),
    ]
    assert len({m.position for m in markers if m.target_id in (quarter.east_revenue, quarter.revenue)
                and m.after in (Decimal("33000"), Decimal("51000"))}) == 1
    (east,) = [m for m in markers if m.target_id == quarter.east_revenue]
    assert (east.position, east.effective_at, east.recorded_at) == (quarter.east_revision, at(3, 12), at(3, 20, 11))
    assert (east.metric, east.period, east.unit_id) == ("revenue", "2026-Q1", quarter.east)


def test_a_replay_is_reproducible_from_its_position_and_stops_at_now(app: SalesPlanning,
                                                                     quarter: RetroQuarter) -> None:
    early = replay(app, quarter, step="day", known="then", position=quarter.end_of_february)
    again = replay(app, quarter, step="day", known="then", position=quarter.end_of_february)
    assert early == again
    assert early.position == quarter.end_of_february
    assert max(s.position for s in early.steps) == quarter.end_of_february
    # Asked on 10 March at noon: ten steps, the last one cut at that instant.
    partial = replay(app, quarter, step="day", now=at(3, 10, 12))
    assert len(partial.steps) == 31 + 28 + 10
    assert partial.steps[-1].as_of == at(3, 10, 12)


def test_replay_refuses_bad_arguments(app: SalesPlanning, quarter: RetroQuarter) -> None:
    with pytest.raises(ValidationError):
        replay(app, quarter, step="month")
    with pytest.raises(ValidationError):
        replay(app, quarter, known="later")
    with pytest.raises(ValidationError):
        replay(app, quarter, unit_id=quarter.east, member_id=quarter.ann)
    with pytest.raises(RuleViolation):
        replay(app, quarter, span="2026-Q2")
    with pytest.raises(NotFound):
        replay(app, quarter, plan_id=uuid4())


# --- baseline vs revisions vs actual ------------------------------------------------------------


def baseline(app: SalesPlanning, q: RetroQuarter, **kwargs: Any) -> BaselineReport:
    with app.database.engine.connect() as conn:
        return plan_baseline(conn, plan_id=q.plan, position=q.head(), now=NOW, **kwargs)


def test_each_target_from_v1_through_v2_to_now_with_its_actual_and_reasons(app: SalesPlanning,
                                                                           quarter: RetroQuarter) -> None:
    report = baseline(app, quarter)
    assert report.position == quarter.head()
    assert [(p.version, p.position, p.effective_at, p.recorded_at) for p in report.versions] == [
        (1, quarter.v1, at(1, 2), at(1, 2, 10)), (2, quarter.v2, at(3, 11), at(3, 11, 10))]
    rows = {t.target_id: t for t in report.targets}
    assert len(rows) == 8

    east = rows[quarter.east_revenue]
    assert (east.baseline, east.versions, east.current) == (Decimal("30000"), (Decimal("30000"), Decimal("30000")),
                                                             Decimal("33000"))  # revised after v2, not yet published
    assert (east.actual, east.attainment, east.baseline_attainment) == (Decimal("20000"), Decimal("0.6061"),
                                                                        Decimal("0.6667"))
    (why,) = east.revisions
    assert (why.kind, why.before, why.after, why.actor) == ("revised", Decimal("30000"), Decimal("33000"), "manager")
    assert why.reason == "two East accounts signed letters of intent"
    assert (why.effective_at, why.recorded_at) == (at(3, 12), at(3, 20, 11))

    west = rows[quarter.west_revenue]
    assert (west.baseline, west.versions, west.current, west.actual) == (
        Decimal("20000"), (Decimal("20000"), Decimal("18000")), Decimal("18000"), Decimal("3000"))
    assert [r.reason for r in west.revisions] == ["key account slipped"]

    # The company changes with its regions: 50,000 − 2,000 (v2) + 3,000 (now).
    company = rows[quarter.revenue]
    assert (company.versions, company.current, company.actual) == (
        (Decimal("50000"), Decimal("48000")), Decimal("51000"), Decimal("23000"))
    assert [(r.kind, r.before, r.after, r.reason) for r in company.revisions] == [
        ("rolled_up", Decimal("50000"), Decimal("48000"), "key account slipped"),
        ("rolled_up", Decimal("48000"), Decimal("51000"), "two East accounts signed letters of intent"),
    ]
    assert rows[quarter.ann_revenue].actual == Decimal("13000")
    assert rows[quarter.win_rate].actual == Decimal("0.8000")
    # East's members opened d1 d2 d4 d5 d8 d9 d12 (7); Cid opened d3 d6 d7 d10 and d11 (5): d11 was reassigned
    # to Bob on 6 March, but a new deal counts for the member who opened it.
    assert (rows[quarter.east_new].actual, rows[quarter.cid_new].actual) == (Decimal("7"), Decimal("5"))


def test_totals_roll_up_the_unit_tree_without_counting_a_decomposition_twice(app: SalesPlanning,
                                                                           quarter: RetroQuarter) -> None:
    totals = {(t.metric, t.unit_id): t for t in baseline(app, quarter).totals}
    assert {m for m, _u in totals} == {"revenue", "deals_won", "new_deals"}  # ratio metrics never sum

    company = totals[("revenue", quarter.company)]
    assert company.depth == 0 and company.target_ids == (quarter.revenue,)
    assert (company.baseline, company.versions, company.current, company.actual) == (
        Decimal("50000"), (Decimal("50000"), Decimal("48000")), Decimal("51000"), Decimal("23000"))
    east, west = totals[("revenue", quarter.east)], totals[("revenue", quarter.west)]
    assert (east.depth, east.parent_id) == (1, quarter.company)
    assert (east.versions, east.current, east.actual) == ((Decimal("30000"), Decimal("30000")), Decimal("33000"),
                                                          Decimal("20000"))
    assert (west.versions, west.current, west.actual) == ((Decimal("20000"), Decimal("18000")), Decimal("18000"),
                                                          Decimal("3000"))

    # New deals: the company has no target of its own, so East's 8 and Cid's 3 (West's only one) stand for it.
    new = totals[("new_deals", quarter.company)]
    assert (new.current, new.actual, set(new.target_ids)) == (Decimal("11"), Decimal("12"),
                                                              {quarter.east_new, quarter.cid_new})
    # West's actual is its own facts: Cid's five (he was in West when he opened each); its target is Cid's 3.
    assert (totals[("new_deals", quarter.west)].current, totals[("new_deals", quarter.west)].actual) == (
        Decimal("3"), Decimal("5"))
    assert ("deals_won", quarter.east) not in totals


def test_the_baseline_as_it_stood_before_v2(app: SalesPlanning, quarter: RetroQuarter) -> None:
    with app.database.engine.connect() as conn:
        report = plan_baseline(conn, plan_id=quarter.plan, position=quarter.end_of_february, now=NOW,
                               as_of=end_of(2, 28))
    assert [p.version for p in report.versions] == [1]
    rows = {t.target_id: t for t in report.targets}
    assert rows[quarter.west_revenue].current == Decimal("20000") and rows[quarter.west_revenue].revisions == ()
    assert rows[quarter.east_revenue].actual == Decimal("17000")  # d1 and d12


# --- the revision reasons projection --------------------------------------------------------------


def test_revision_reasons_are_a_pure_fold_of_the_plan_events() -> None:
    plan_id, target_id = uuid4(), uuid4()
    common: dict[str, Any] = {"originator_id": plan_id, "timestamp": at(3, 1), "actor": "manager",
                              "effective_at": at(3, 1)}
    revised = Plan.TargetRevised(originator_version=5, target_id=target_id, committed=Decimal("18000"),
                                 stretch=None, previous_committed=Decimal("20000"), previous_stretch=None,
                                 reason="key account slipped", **common)
    assert revision_entries(revised, {}) == [RevisionEntry(target_id, "revised", Decimal("20000"), Decimal("18000"),
                                                           None, None, "key account slipped")]
    removed = Plan.TargetRemoved(originator_version=6, target_id=target_id, removed_ids=[target_id],
                                 reason="merged into East", **common)
    assert revision_entries(removed, {target_id: (Decimal("18000"), Decimal("19000"))}) == [
        RevisionEntry(target_id, "removed", Decimal("18000"), None, Decimal("19000"), None, "merged into East")]


def test_revision_reasons_rebuild_to_the_same_rows(app: SalesPlanning, quarter: RetroQuarter) -> None:
    quarter.on(3, 21, lambda e: app.remove_target(quarter.plan, target_id=quarter.ann_revenue, actor="manager",
                                                  reason="Ann's target is part of West now", effective_at=e))
    engine = ProjectionEngine(app, all_projections())
    engine.catch_up()

    def rows() -> list[Any]:
        with app.database.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(REASONS.reasons).order_by(
                REASONS.reasons.c.position, REASONS.reasons.c.target_id))]

    live = rows()
    assert [(r[6], r[7], r[8]) for r in live if r[0] == quarter.ann_revenue] == [
        ("set", None, Decimal("12000")), ("removed", Decimal("12000"), None)]
    assert len(live) == 13  # 6 set, 2 from the decomposition, 2 revisions, the 2 roll-ups with them, 1 removal
    engine.rebuild("revision_reasons")
    assert rows() == live

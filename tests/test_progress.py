"""Progress on a scripted quarter whose right answers are worked out by hand below."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.application import SalesPlanning
from domain.deal import Deal
from domain.organisation import Member
from domain.values import Scope
from projections.engine import ProjectionEngine
from projections.folds.progress import evolve_deal, evolve_member
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig, pace_status
from projections.queries.progress import ProgressFilter, ProgressRow, progress
from projections.registry import all_projections


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 9, tzinfo=timezone.utc)


MID_MARCH = datetime(2026, 3, 15, tzinfo=timezone.utc)  # 73 of Q1's 90 days elapsed: share 0.811111


class Quarter:
    """Q1 2026. East has Ann and Bob; West has Cid; Ann moves to West on 20 February."""

    def __init__(self, app: SalesPlanning) -> None:
        self.app = app
        a = "manager"
        self.company = app.add_unit(name="Company", actor=a, effective_at=at(1, 1)).id
        self.east = app.add_unit(name="East", parent_id=self.company, actor=a, effective_at=at(1, 1)).id
        self.west = app.add_unit(name="West", parent_id=self.company, actor=a, effective_at=at(1, 1)).id
        self.ann = app.add_member(name="Ann", role="rep", unit_id=self.east, actor=a, effective_at=at(1, 1)).id
        self.bob = app.add_member(name="Bob", role="rep", unit_id=self.east, actor=a, effective_at=at(1, 1)).id
        self.cid = app.add_member(name="Cid", role="rep", unit_id=self.west, actor=a, effective_at=at(1, 1)).id
        self.product = app.add_product(name="GTX Pro", product_line="GTX", list_price="4821", currency="EUR",
                                       actor=a, effective_at=at(1, 1)).id
        self.plan = app.draft_plan(name="Q1 2026", span="2026-Q1", currency="EUR", unit_id=self.company, actor=a,
                                   effective_at=at(1, 1)).id
        self.east_revenue = self.target("revenue", "2026-Q1", Scope(unit_id=self.east), "30000", "36000")
        self.ann_revenue = self.target("revenue", "2026-Q1", Scope(member_id=self.ann), "12000")
        self.deals_won = self.target("deals_won", "2026-Q1", Scope(unit_id=self.company), "6")
        self.win_rate = self.target("win_rate", "2026-Q1", Scope(unit_id=self.company), "0.5")
        self.ann_calls = self.target("activities", "2026-01", Scope(member_id=self.ann), "10")
        app.publish_plan(self.plan, actor=a, effective_at=at(1, 2))

        self.won(self.ann, "10000", at(1, 5), at(1, 20))
        self.won(self.bob, "8000", at(1, 6), at(2, 10))
        d3 = self.open(self.ann, "5000", at(1, 7))
        app.lose_deal(d3, reason="went with a competitor", actor="ann", effective_at=at(2, 15))
        d4 = self.open(self.bob, "6000", at(1, 8), close=date(2026, 3, 20))
        app.change_deal_stage(d4, stage="proposal", actor="bob", effective_at=at(2, 1))
        self.won(self.ann, "2000", at(1, 9), at(2, 1), currency="USD")  # counts as a deal, not as EUR revenue
        for day in (12, 13, 14, 15):
            app.log_activity(kind="call", member_id=self.ann, actor="ann", effective_at=at(1, day))
        app.log_activity(kind="visit", member_id=self.ann, actor="ann", effective_at=at(2, 3))
        self.feb_position = app.recorder.max_notification_id() or 0
        app.move_member(self.ann, unit_id=self.west, reason="covers West from March", actor=a,
                        effective_at=at(2, 20))
        self.won(self.cid, "4000", at(1, 10), at(3, 1))
        self.won(self.ann, "3000", at(2, 21), at(3, 5))  # Ann is in West by now
        d8 = self.open(self.ann, "5000", at(2, 22), close=date(2026, 3, 25))
        app.change_deal_stage(d8, stage="negotiation", actor="ann", effective_at=at(3, 1))
        app.revise_target(self.plan, target_id=self.east_revenue, committed="27000", reason="key account slipped",
                          actor=a, effective_at=at(3, 10))

    def target(self, metric: str, period: str, scope: Scope, committed: str, stretch: str | None = None) -> UUID:
        target_id = uuid4()
        self.app.set_target(self.plan, metric=metric, period=period, scope=scope, committed=committed,
                            stretch=stretch, target_id=target_id, actor="manager", effective_at=at(1, 1))
        return target_id

    def open(self, owner: UUID, amount: str, opened: datetime, currency: str = "EUR",
             close: date = date(2026, 3, 31)) -> UUID:
        return self.app.open_deal(name="deal", account_id=None, owner_id=owner, product_id=self.product,
                                  amount=amount, currency=currency, expected_close=close, actor="rep",
                                  effective_at=opened).id

    def won(self, owner: UUID, amount: str, opened: datetime, won: datetime, currency: str = "EUR") -> UUID:
        deal = self.open(owner, amount, opened, currency)
        self.app.win_deal(deal, actor="rep", effective_at=won)
        return deal


@pytest.fixture
def quarter(app: SalesPlanning) -> Quarter:
    return Quarter(app)


def rows_at(app: SalesPlanning, cut: Cut, config: MeasureConfig = MeasureConfig()) -> dict[UUID, ProgressRow]:
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    with app.database.engine.connect() as conn:
        report = progress(conn, cut=cut, now=MID_MARCH, config=config)
    return {row.target_id: row for row in report.rows}


def head(app: SalesPlanning) -> int:
    return app.recorder.max_notification_id() or 0


def test_mid_march_as_known_today(app: SalesPlanning, quarter: Quarter) -> None:
    rows = rows_at(app, Cut(head(app), MID_MARCH))

    east = rows[quarter.east_revenue]
    # Won in East: Ann's 10,000 (20 Jan, before her move) + Bob's 8,000. Ann's 3,000 in March is West's.
    assert east.actual == Decimal("18000.00")
    assert east.committed == Decimal("27000")  # revised on 10 March
    assert east.attainment == Decimal("0.6667")
    assert east.expected_to_date == Decimal("21900.00")  # 27,000 × 73/90
    assert east.pace == Decimal("0.8219") and east.pace_status == "at_risk"
    assert east.gap == Decimal("9000.00")
    assert east.weighted_pipeline == Decimal("3600.00")  # Bob's 6,000 in proposal × 0.6; Ann's is West's now
    assert east.forecast == Decimal("21600.00")
    assert east.coverage == Decimal("0.4000")
    assert east.stretch_attainment == Decimal("0.5000")

    ann = rows[quarter.ann_revenue]
    assert ann.actual == Decimal("13000.00")  # 10,000 + 3,000; the USD deal is not EUR revenue
    assert ann.pace == Decimal("1.3356") and ann.pace_status == "ahead"
    assert ann.weighted_pipeline == Decimal("4000.00") and ann.forecast == Decimal("17000.00")
    assert ann.coverage is None  # no gap left to cover

    won = rows[quarter.deals_won]
    assert won.actual == Decimal("5")  # every won deal, whatever its currency
    assert won.expected_to_date == Decimal("4.87")
    assert won.pace == Decimal("1.0274") and won.pace_status == "on_track"
    assert won.weighted_pipeline == Decimal("1.40") and won.forecast == Decimal("6.40")

    rate = rows[quarter.win_rate]
    assert rate.actual == Decimal("0.8333")  # 5 won of 6 closed
    assert rate.pace_status == "ahead"

    calls = rows[quarter.ann_calls]
    assert calls.actual == Decimal("4")  # January only; the February visit is outside the period
    assert calls.expected_to_date == Decimal("10") and calls.pace_status == "behind"


def test_mid_february_as_it_looked_then(app: SalesPlanning, quarter: Quarter) -> None:
    rows = rows_at(app, Cut(quarter.feb_position, datetime(2026, 2, 16, tzinfo=timezone.utc)))
    assert rows[quarter.east_revenue].committed == Decimal("30000")  # before the revision
    assert rows[quarter.east_revenue].actual == Decimal("18000.00")
    assert rows[quarter.ann_revenue].actual == Decimal("10000.00")
    assert rows[quarter.deals_won].actual == Decimal("3")
    assert rows[quarter.win_rate].actual == Decimal("0.7500")  # 3 won, d3 lost on 15 Feb


def test_a_late_entry_changes_the_past_as_known_today_but_not_as_known_then(app: SalesPlanning,
                                                                          quarter: Quarter) -> None:
    before = head(app)
    # Entered today, back-dated to 1 February: Cid won a deal then.
    quarter.won(quarter.cid, "1500", at(1, 11), at(2, 1))
    feb = datetime(2026, 2, 28, tzinfo=timezone.utc)
    then = rows_at(app, Cut(before, feb))
    today = rows_at(app, Cut(head(app), feb))
    assert today[quarter.deals_won].actual == then[quarter.deals_won].actual + 1


def test_pace_thresholds_are_configurable(app: SalesPlanning, quarter: Quarter) -> None:
    lenient = MeasureConfig(ahead=Decimal("2"), on_track=Decimal("0.8"), at_risk=Decimal("0.5"))
    rows = rows_at(app, Cut(head(app), MID_MARCH), lenient)
    assert rows[quarter.east_revenue].pace_status == "on_track"
    assert rows[quarter.ann_revenue].pace_status == "on_track"
    assert pace_status(None, lenient) == "not_started"


def test_filters_by_unit_member_period_and_metric(app: SalesPlanning, quarter: Quarter) -> None:
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()

    def ids(**filters: Any) -> set[UUID]:
        with app.database.engine.connect() as conn:
            report = progress(conn, cut=Cut(head(app), MID_MARCH), now=MID_MARCH, filters=ProgressFilter(**filters))
        return {row.target_id for row in report.rows}

    assert ids(member_id=quarter.ann) == {quarter.ann_revenue, quarter.ann_calls}
    assert ids(period="2026-01") == {quarter.ann_calls}
    assert ids(metric="win_rate") == {quarter.win_rate}
    # East's own target, and Ann's: a member's target belongs to the unit she was in when its period began
    # (1 January), as every roll-up places it, so her move on 20 February moves no target to West.
    assert ids(unit_id=quarter.east) == {quarter.east_revenue, quarter.ann_revenue, quarter.ann_calls}
    assert ids(unit_id=quarter.west) == set()
    assert ids(plan_id=uuid4()) == set()


# --- the folds, without a database ----------------------------------------------------------


def test_the_deal_fold_records_when_a_deal_closed_and_forgets_it_on_reopening() -> None:
    deal_id, owner, product = uuid4(), uuid4(), uuid4()
    common: dict[str, Any] = {"originator_id": deal_id, "timestamp": at(3, 1), "actor": "ann"}
    opened = Deal.Opened(originator_version=1, originator_topic="domain.deal:Deal", effective_at=at(1, 2),
                         name="d", account_id=None, owner_id=owner, product_id=product, product_line="GTX",
                         region="EU", segment="smb", amount=Decimal("100"), currency="EUR",
                         expected_close=date(2026, 3, 1), stage="lead", **common)
    state = evolve_deal(None, opened)
    assert state["opened_at"] == at(1, 2) and state["closed_at"] is None and state["stage"] == "lead"
    state = evolve_deal(state, Deal.Won(originator_version=2, effective_at=at(2, 2), amount=Decimal("120"),
                                        previous_stage="lead", owner_id=owner, **common))
    assert (state["stage"], state["amount"], state["closed_at"]) == ("won", Decimal("120"), at(2, 2))
    state = evolve_deal(state, Deal.Reopened(originator_version=3, effective_at=at(2, 3), stage="proposal",
                                             previous_stage="won", reason="customer came back", **common))
    assert (state["stage"], state["closed_at"]) == ("proposal", None)


def test_the_member_fold_follows_moves() -> None:
    member_id, east, west = uuid4(), uuid4(), uuid4()
    common: dict[str, Any] = {"originator_id": member_id, "timestamp": at(3, 1), "actor": "hr"}
    state = evolve_member(None, Member.Added(originator_version=1, originator_topic="domain.organisation:Member",
                                             effective_at=at(1, 1), name="Ann", role="rep", unit_id=east, email="",
                                             **common))
    state = evolve_member(state, Member.Moved(originator_version=2, effective_at=at(2, 20), unit_id=west,
                                              previous_unit_id=east, reason="", **common))
    assert state == {"name": "Ann", "role": "rep", "unit_id": west, "active": True}

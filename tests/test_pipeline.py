"""The pipeline and tasks projection: pure folds, and a quarter of deals and tasks on both backends.

Ann (East Team) walks the Big Co renewal lead → qualified → proposal, takes it back to
qualified when the budget is not approved, lets the close slip from March to April, and wins
it in April after moving to West in mid-March. Bob's pilot is lost on 1 March, but the loss
is only recorded at the very end. Tasks are created, one runs overdue, one is reassigned
because Ann is on leave, one is completed, one cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import pairwise
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa

from domain.application import CommandResult, SalesPlanning
from domain.deal import Deal
from domain.errors import ValidationError
from domain.organisation import Member, Unit
from domain.task import Task
from projections.engine import ProjectionEngine
from projections.folds.organisation import evolve_member, evolve_unit
from projections.folds.pipeline import LIVE, evolve_stay, evolve_task, stage_entered
from projections.folds.progress import evolve_deal
from projections.history import Cut
from projections.queries.pipeline import (
    MemberTaskSummary,
    PipelineDeal,
    StageStay,
    deal_detail,
    pipeline_deals,
    stage_summary,
    task_summary,
    tasks,
)
from projections.registry import all_projections

SHANGHAI = timezone(timedelta(hours=8))


def day(month: int, d: int, hour: int = 9) -> datetime:
    """A business time in Shanghai in 2025: 09:00 there is 01:00 UTC."""
    return datetime(2025, month, d, hour, tzinfo=SHANGHAI)


ANN, BOB, PRODUCT = uuid4(), uuid4(), uuid4()

# --- pure folds -------------------------------------------------------------------------------


def big_co_events() -> list[Any]:
    deal = Deal.open(
        id=uuid4(), name="Big Co renewal", account_id=None, owner_id=ANN, product_id=PRODUCT,
        product_line="analytics", region="East China", segment="enterprise", amount=Decimal("10000"),
        currency="EUR", expected_close=date(2025, 3, 31), actor="ann", effective_at=day(1, 6),
    )
    deal.change_stage("qualified", actor="ann", effective_at=day(1, 10))
    deal.change_stage("proposal", actor="ann", effective_at=day(1, 20))
    deal.change_stage("qualified", reason="budget not approved yet", actor="ann", effective_at=day(2, 3))
    deal.change_expected_close(date(2025, 4, 30), reason="board meets in April", actor="ann", effective_at=day(2, 10))
    deal.change_amount(Decimal("12000"), reason="two more seats", actor="ann", effective_at=day(2, 11))
    deal.change_stage("proposal", actor="ann", effective_at=day(3, 3))
    deal.win(amount=Decimal("11500"), actor="ann", effective_at=day(4, 15, 21))
    return list(deal.collect_events())


def fold(evolve: Callable[[Any, Any], dict[str, Any]], events: list[Any]) -> dict[str, Any]:
    state = None
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state


def fold_stays(events: list[Any]) -> list[dict[str, Any]]:
    stays: list[dict[str, Any]] = []
    current = None
    for position, event in enumerate(events, start=1):
        closed, opened = evolve_stay(current, event, position)
        if closed is not None:
            assert stays[-1]["entered_position"] == closed["entered_position"]
            stays[-1] = closed
        if opened is not None:
            stays.append(opened)
            current = opened
    return stays


def test_a_deal_folds_to_its_latest_state_with_the_time_it_entered_its_stage() -> None:
    events = big_co_events()
    state = fold(evolve_deal, events)
    assert state["stage"] == "won"
    assert state["amount"] == Decimal("11500")
    assert state["expected_close"] == date(2025, 4, 30)
    assert state["opened_at"] == day(1, 6)
    assert state["closed_at"] == state["stage_entered_at"] == state["last_stage_change_at"] == day(4, 15, 21)

    before_win = fold(evolve_deal, events[:-1])
    assert (before_win["stage"], before_win["amount"], before_win["closed_at"]) == ("proposal", Decimal("12000"), None)
    assert before_win["stage_entered_at"] == day(3, 3)

    just_opened = evolve_deal(None, events[0])
    assert just_opened["stage_entered_at"] == day(1, 6)
    assert just_opened["last_stage_change_at"] is None


def test_a_reopened_deal_is_open_again_in_the_stage_it_reopened_in() -> None:
    deal = Deal.open(
        id=uuid4(), name="Pilot", account_id=None, owner_id=ANN, product_id=PRODUCT, product_line="analytics",
        region="", segment="", amount=Decimal("500"), currency="EUR", expected_close=date(2025, 3, 1),
        actor="ann", effective_at=day(1, 6),
    )
    deal.lose(reason="no budget", actor="ann", effective_at=day(1, 8))
    deal.reopen(reason="budget found", stage="negotiation", actor="ann", effective_at=day(1, 9))
    events = list(deal.collect_events())
    state = fold(evolve_deal, events)
    assert (state["stage"], state["closed_at"], state["stage_entered_at"]) == ("negotiation", None, day(1, 9))
    assert [(s["stage"], s["reason"]) for s in fold_stays(events)] == [
        ("lead", ""), ("lost", "no budget"), ("negotiation", "budget found")]


def test_stays_follow_every_stage_change_and_ignore_other_changes() -> None:
    events = big_co_events()
    stays = fold_stays(events)
    assert [(s["stage"], s["entered_at"], s["left_at"]) for s in stays] == [
        ("lead", day(1, 6), day(1, 10)),
        ("qualified", day(1, 10), day(1, 20)),
        ("proposal", day(1, 20), day(2, 3)),
        ("qualified", day(2, 3), day(3, 3)),
        ("proposal", day(3, 3), day(4, 15, 21)),
        ("won", day(4, 15, 21), None),
    ]
    assert stays[3]["reason"] == "budget not approved yet"
    # Each stay is left by the event that enters the next one.
    assert all(a["left_position"] == b["entered_position"] for a, b in pairwise(stays))
    assert stays[-1]["left_position"] is None
    slip, amount = events[4], events[5]
    assert stage_entered(slip) is None and stage_entered(amount) is None
    assert evolve_stay(stays[3], slip, 5) == (None, None)


def test_a_stage_change_without_an_open_stay_is_a_broken_log() -> None:
    events = big_co_events()
    with pytest.raises(ValueError):
        evolve_stay(None, events[1], 2)
    opened = evolve_stay(None, events[0], 1)[1]
    with pytest.raises(ValueError):
        evolve_stay(opened, events[0], 1)


def test_a_task_folds_through_reassignment_reschedule_progress_and_completion() -> None:
    task = Task.create(id=uuid4(), title="Run 10 demos in East China", assignee_id=ANN, due=date(2025, 2, 28),
                       actor="cat", effective_at=day(2, 1))
    task.report_progress(40, note="4 of 10", actor="ann", effective_at=day(2, 12))
    task.reassign(BOB, reason="Ann is on leave", actor="cat", effective_at=day(2, 20))
    task.reschedule(date(2025, 3, 7), reason="customer holidays", actor="bob", effective_at=day(2, 21))
    events = list(task.collect_events())
    state = fold(evolve_task, events)
    assert state == {
        "title": "Run 10 demos in East China", "assignee_id": BOB, "due": date(2025, 3, 7), "plan_id": None,
        "target_id": None, "status": "open", "progress": 40, "created_at": day(2, 1), "completed_at": None,
    }
    task.complete(outcome="all done", actor="bob", effective_at=day(3, 6))
    done = evolve_task(state, task.collect_events()[0])
    assert (done["status"], done["progress"], done["completed_at"]) == ("done", 100, day(3, 6))

    other = Task.create(id=uuid4(), title="Call list", assignee_id=ANN, due=date(2025, 3, 1), actor="cat",
                        effective_at=day(2, 1))
    other.cancel(reason="campaign dropped", actor="cat", effective_at=day(2, 2))
    cancelled = fold(evolve_task, list(other.collect_events()))
    assert (cancelled["status"], cancelled["completed_at"]) == ("cancelled", None)


def test_members_and_units_fold_to_their_unit_and_parent() -> None:
    east, west, acme = uuid4(), uuid4(), uuid4()
    unit = Unit.add(id=east, name="East", parent_id=None, actor="admin", effective_at=day(1, 2))
    unit.move(acme, "regions under the company", actor="admin", effective_at=day(1, 3))
    unit.rename("East China", actor="admin", effective_at=day(1, 4))
    assert fold(evolve_unit, list(unit.collect_events())) == {"name": "East China", "parent_id": acme, "active": True}
    member = Member.add(id=ANN, name="Ann", role="rep", unit_id=east, email="", actor="admin", effective_at=day(1, 2))
    member.move(west, "team reorganised", actor="admin", effective_at=day(3, 15))
    member.deactivate("left the company", actor="admin", effective_at=day(6, 1))
    assert fold(evolve_member, list(member.collect_events())) == {"name": "Ann", "role": "rep", "unit_id": west,
                                                                  "active": False}


# --- the story, on SQLite and PostgreSQL -------------------------------------------------------


@dataclass
class Story:
    acme: UUID
    east: UUID
    east_team: UUID
    west: UUID
    ann: UUID
    bob: UUID
    cat: UUID
    big_co: UUID  # Ann: won in April, after she moved to West
    pilot: UUID  # Bob: lost on 1 March, recorded last
    side: UUID  # Ann: still qualified
    export: UUID  # Bob: in USD, at proposal
    quick: UUID  # Ann: won in March, while still in East Team
    demos: UUID
    follow_up: UUID
    proposal_task: UUID
    calls: UUID
    known_when_moved_back: int  # position right after Big Co went back to qualified
    known_before_move: int  # position before Ann's move to West was recorded
    known_before_loss: int  # position before the pilot's loss was recorded


def tell_story(app: SalesPlanning, step: Callable[[], None] = lambda: None) -> Story:
    """The quarter, one command at a time; ``step`` runs after every command."""

    def do(result: CommandResult) -> CommandResult:
        step()
        return result

    jan2 = day(1, 2)
    acme = do(app.add_unit(name="ACME", actor="admin", effective_at=jan2)).id
    east = do(app.add_unit(name="East", parent_id=acme, actor="admin", effective_at=jan2)).id
    east_team = do(app.add_unit(name="East Team", parent_id=east, actor="admin", effective_at=jan2)).id
    west = do(app.add_unit(name="West", parent_id=acme, actor="admin", effective_at=jan2)).id
    ann = do(app.add_member(name="Ann", role="rep", unit_id=east_team, actor="admin", effective_at=jan2)).id
    bob = do(app.add_member(name="Bob", role="rep", unit_id=west, actor="admin", effective_at=jan2)).id
    cat = do(app.add_member(name="Cat", role="manager", unit_id=east, actor="admin", effective_at=jan2)).id
    product = do(app.add_product(name="Analytics Suite", product_line="analytics", list_price="10000", currency="EUR",
                                 actor="admin", effective_at=jan2)).id
    account = do(app.add_account(name="Big Co", segment="enterprise", region="East China", actor="admin",
                                 effective_at=jan2)).id

    def open_deal(name: str, owner: UUID, amount: str, close: date, at: datetime, stage: str = "lead",
                  currency: str = "EUR") -> UUID:
        return do(app.open_deal(name=name, account_id=account, owner_id=owner, product_id=product, amount=amount,
                                currency=currency, expected_close=close, stage=stage, actor="rep",
                                effective_at=at)).id

    def move(deal: UUID, stage: str, at: datetime, reason: str | None = None) -> CommandResult:
        return do(app.change_deal_stage(deal, stage=stage, reason=reason, actor="rep", effective_at=at))

    big_co = open_deal("Big Co renewal", ann, "10000", date(2025, 3, 31), day(1, 6))
    move(big_co, "qualified", day(1, 10))
    move(big_co, "proposal", day(1, 20))
    pilot = open_deal("Small Co pilot", bob, "5000", date(2025, 3, 15), day(1, 15))
    move(pilot, "needs_analysis", day(2, 1))
    side = open_deal("Side deal", ann, "2000", date(2025, 5, 15), day(2, 1), stage="qualified")
    known_when_moved_back = move(big_co, "qualified", day(2, 3), reason="budget not approved yet").position
    do(app.change_deal_expected_close(big_co, expected_close=date(2025, 4, 30), reason="customer board meets in April",
                                      actor="ann", effective_at=day(2, 10)))

    def task(title: str, who: UUID, due: date) -> UUID:
        return do(app.create_task(title=title, assignee_id=who, due=due, actor="cat", effective_at=day(2, 1))).id

    demos = task("Run 10 demos in East China", ann, date(2025, 2, 28))
    follow_up = task("Follow up Big Co", ann, date(2025, 3, 10))
    proposal_task = task("Send the pilot proposal", bob, date(2025, 3, 5))
    calls = task("Call list for the spring campaign", cat, date(2025, 3, 20))
    do(app.report_task_progress(demos, progress=40, note="4 of 10", actor="ann", effective_at=day(2, 12)))
    do(app.reassign_task(follow_up, assignee_id=bob, reason="Ann is on leave", actor="cat", effective_at=day(2, 20)))
    quick = open_deal("Quick win", ann, "1000", date(2025, 3, 10), day(2, 20))
    do(app.complete_task(proposal_task, outcome="sent", actor="bob", effective_at=day(3, 4)))
    do(app.cancel_task(calls, reason="campaign dropped", actor="cat", effective_at=day(3, 2)))
    move(big_co, "proposal", day(3, 3))
    export = open_deal("Export deal", bob, "3000", date(2025, 5, 31), day(3, 5), stage="proposal", currency="USD")
    do(app.win_deal(quick, actor="ann", effective_at=day(3, 10)))
    known_before_move = app.recorder.max_notification_id() or 0
    do(app.move_member(ann, unit_id=west, reason="team reorganised", actor="admin", effective_at=day(3, 15)))
    do(app.win_deal(big_co, actor="ann", effective_at=day(4, 15, 21)))
    known_before_loss = app.recorder.max_notification_id() or 0
    do(app.lose_deal(pilot, reason="went with a competitor", actor="bob", effective_at=day(3, 1)))
    return Story(acme, east, east_team, west, ann, bob, cat, big_co, pilot, side, export, quick, demos, follow_up,
                 proposal_task, calls, known_when_moved_back, known_before_move, known_before_loss)


def caught_up(engine: ProjectionEngine) -> None:
    engine.catch_up()
    status = {s.name: s for s in engine.status()}["pipeline"]
    assert (status.status, status.error, status.position) == ("live", None, engine.head())


@pytest.fixture
def told(app: SalesPlanning) -> tuple[ProjectionEngine, Story]:
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    story = tell_story(app)
    caught_up(engine)
    return engine, story


def utc(month: int, d: int, hour: int = 1) -> datetime:
    return datetime(2025, month, d, hour, tzinfo=UTC)


AFTER_ALL = utc(4, 20)  # 20 April, 01:00 UTC: every event of the story is effective by then


def stays_of(deal: PipelineDeal) -> list[tuple[str, Decimal, bool]]:
    return [(s.stage, s.days, s.left_at is None) for s in deal.stages]


def days_per_stage(stays: tuple[StageStay, ...]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for s in stays:
        totals[s.stage] = totals.get(s.stage, Decimal(0)) + s.days
    return totals


def test_time_in_each_stage_as_known_now(told: tuple[ProjectionEngine, Story], app: SalesPlanning) -> None:
    engine, s = told
    with app.database.engine.connect() as conn:
        big = deal_detail(conn, s.big_co, cut=Cut(engine.head()), at=AFTER_ALL)
    assert big is not None
    assert (big.stage, big.status, big.amount, big.expected_close) == ("won", "won", Decimal("10000"), date(2025, 4, 30))
    assert big.closed_at == big.stage_entered_at == big.last_stage_change_at == utc(4, 15, 13)
    assert big.opened_at == utc(1, 6)
    # By hand: lead 6→10 Jan, qualified 10→20 Jan, proposal 20 Jan→3 Feb, back to qualified
    # 3 Feb→3 Mar, proposal 3 Mar 01:00→15 Apr 13:00, won since 15 Apr 13:00 (to 20 Apr 01:00).
    assert stays_of(big) == [
        ("lead", Decimal("4.00"), False), ("qualified", Decimal("10.00"), False),
        ("proposal", Decimal("14.00"), False), ("qualified", Decimal("28.00"), False),
        ("proposal", Decimal("43.50"), False), ("won", Decimal("4.50"), True),
    ]
    assert big.stages[3].reason == "budget not approved yet"
    assert big.stages[0].entered_at == utc(1, 6) and big.stages[-1].left_at is None
    assert days_per_stage(big.stages) == {
        "lead": Decimal("4.00"), "qualified": Decimal("38.00"), "proposal": Decimal("57.50"), "won": Decimal("4.50")}
    assert big.days_in_stage == Decimal("4.50")

    with app.database.engine.connect() as conn:
        pilot = deal_detail(conn, s.pilot, cut=Cut(engine.head()), at=AFTER_ALL)
        assert deal_detail(conn, uuid4(), cut=Cut(engine.head()), at=AFTER_ALL) is None
    assert pilot is not None and pilot.status == "lost" and pilot.closed_at == utc(3, 1)
    assert stays_of(pilot) == [
        ("lead", Decimal("17.00"), False), ("needs_analysis", Decimal("28.00"), False), ("lost", Decimal("50.00"), True)]
    assert pilot.stages[-1].reason == "went with a competitor"


def test_the_same_questions_at_earlier_cuts_give_the_earlier_answers(
    told: tuple[ProjectionEngine, Story], app: SalesPlanning
) -> None:
    engine, s = told
    with app.database.engine.connect() as conn:
        # As of 15 February, as known today: back in qualified for 12 days, the slip already made.
        feb15 = utc(2, 15)
        big = deal_detail(conn, s.big_co, cut=Cut(engine.head(), feb15), at=feb15)
        assert big is not None
        assert (big.stage, big.status, big.closed_at, big.expected_close) == ("qualified", "open", None, date(2025, 4, 30))
        assert stays_of(big) == [
            ("lead", Decimal("4.00"), False), ("qualified", Decimal("10.00"), False),
            ("proposal", Decimal("14.00"), False), ("qualified", Decimal("12.00"), True),
        ]
        assert big.amount == Decimal("10000") and big.stage_entered_at == utc(2, 3)
        assert [d.deal_id for d in pipeline_deals(conn, cut=Cut(engine.head(), feb15), at=feb15)] == [
            s.pilot, s.big_co, s.side]

        # Known right after it went back to qualified: the slip was not known yet.
        feb5 = utc(2, 5)
        then = deal_detail(conn, s.big_co, cut=Cut(s.known_when_moved_back), at=feb5)
        assert then is not None
        assert (then.stage, then.expected_close) == ("qualified", date(2025, 3, 31))
        assert stays_of(then)[-2:] == [("proposal", Decimal("14.00"), False), ("qualified", Decimal("2.00"), True)]
        assert then.position == s.known_when_moved_back

        # Known at that position and as of 25 January: still in proposal, the move back not yet effective.
        jan25 = utc(1, 25)
        earlier = deal_detail(conn, s.big_co, cut=Cut(s.known_when_moved_back, jan25), at=jan25)
        assert earlier is not None and earlier.stage == "proposal"
        assert stays_of(earlier) == [
            ("lead", Decimal("4.00"), False), ("qualified", Decimal("10.00"), False), ("proposal", Decimal("5.00"), True)]

        # Before the deal existed at all.
        assert deal_detail(conn, s.export, cut=Cut(engine.head(), feb15), at=feb15) is None

        # The pilot's loss on 1 March was recorded last: as of 20 March, as known then, it was still open.
        mar20 = utc(3, 20)
        before = deal_detail(conn, s.pilot, cut=Cut(s.known_before_loss, mar20), at=mar20)
        now = deal_detail(conn, s.pilot, cut=Cut(engine.head(), mar20), at=mar20)
        assert before is not None and now is not None
        assert (before.stage, before.days_in_stage) == ("needs_analysis", Decimal("47.00"))
        assert (now.stage, now.days_in_stage, now.closed_at) == ("lost", Decimal("19.00"), utc(3, 1))
        assert stays_of(now)[-2:] == [("needs_analysis", Decimal("28.00"), False), ("lost", Decimal("19.00"), True)]


def test_pipeline_filters_and_pages(told: tuple[ProjectionEngine, Story], app: SalesPlanning) -> None:
    engine, s = told
    head = Cut(engine.head())

    def ids(**filters: Any) -> list[UUID]:
        with app.database.engine.connect() as conn:
            return [d.deal_id for d in pipeline_deals(conn, cut=head, at=AFTER_ALL, **filters)]

    # Ordered by expected close: quick (10 Mar), pilot (15 Mar), Big Co (30 Apr), side (15 May), export (31 May).
    assert ids() == [s.quick, s.pilot, s.big_co, s.side, s.export]
    assert ids(status="open") == [s.side, s.export]
    assert ids(status="won") == [s.quick, s.big_co]
    assert ids(status="lost") == [s.pilot]
    assert ids(stage="proposal") == [s.export]
    assert ids(owner_id=s.ann) == [s.quick, s.big_co, s.side]
    assert ids(expected_close_from=date(2025, 3, 15), expected_close_to=date(2025, 4, 30)) == [s.pilot, s.big_co]
    assert ids(limit=2) == [s.quick, s.pilot]
    assert ids(limit=2, after=s.pilot) == [s.big_co, s.side]
    assert ids(limit=2, after=s.side) == [s.export]
    assert ids(after=s.export) == []
    with app.database.engine.connect() as conn:
        for bad in ({"status": "closed"}, {"stage": "won-ish"}, {"limit": 0}, {"after": uuid4()}):
            with pytest.raises(ValidationError):
                pipeline_deals(conn, cut=head, at=AFTER_ALL, **bad)
        with pytest.raises(ValidationError):
            pipeline_deals(conn, cut=head, at=datetime(2025, 4, 20))  # naive: which day is it?
        with pytest.raises(ValidationError):
            deal_detail(conn, s.big_co, cut=Cut(engine.head(), utc(3, 1)), at=utc(2, 1))


def test_unit_filters_follow_the_owner_and_the_assignee_at_the_time(
    told: tuple[ProjectionEngine, Story], app: SalesPlanning
) -> None:
    engine, s = told
    head = engine.head()
    with app.database.engine.connect() as conn:
        def deals_in(unit: UUID, cut: Cut, at: datetime, **filters: Any) -> set[UUID]:
            return {d.deal_id for d in pipeline_deals(conn, cut=cut, at=at, unit_id=unit, **filters)}

        # 7 March: Ann is in East Team (under East), Bob in West; the pilot's loss is known now.
        mar7 = utc(3, 7)
        assert deals_in(s.east, Cut(head, mar7), mar7) == {s.big_co, s.side, s.quick}
        assert deals_in(s.east_team, Cut(head, mar7), mar7) == {s.big_co, s.side, s.quick}
        assert deals_in(s.west, Cut(head, mar7), mar7) == {s.pilot, s.export}
        assert deals_in(s.acme, Cut(head, mar7), mar7) == {s.big_co, s.side, s.quick, s.pilot, s.export}
        # Now: Ann moved to West on 15 March. Big Co was won in April (West), the side deal is open
        # (West, where she is now), but the quick win closed in March still counts for East.
        assert deals_in(s.east, Cut(head), AFTER_ALL) == {s.quick}
        assert deals_in(s.west, Cut(head), AFTER_ALL) == {s.big_co, s.side, s.pilot, s.export}
        assert deals_in(s.west, Cut(head), AFTER_ALL, status="open", limit=1) == {s.side}
        # As known before the move was recorded, Ann is still in East Team.
        assert deals_in(s.east, Cut(s.known_before_move), AFTER_ALL) == {s.big_co, s.side, s.quick}
        # Each row names what it points to, and says where the deal counts: the quick win in East Team, where Ann
        # was when she won it; the side deal in West, where she is now.
        named = {d.deal_id: d for d in pipeline_deals(conn, cut=Cut(head), at=AFTER_ALL)}
        assert (named[s.quick].owner_name, named[s.quick].unit_id, named[s.quick].unit_name) == (
            "Ann", s.east_team, "East Team")
        assert (named[s.side].unit_id, named[s.side].unit_name) == (s.west, "West")
        assert (named[s.side].product_name, named[s.side].account_name) == ("Analytics Suite", "Big Co")

        def task_ids(unit: UUID, cut: Cut, at: datetime) -> list[UUID]:
            return [t.task_id for t in tasks(conn, cut=cut, at=at, unit_id=unit)]

        assert task_ids(s.east, Cut(head), mar7) == [s.demos, s.calls]
        assert task_ids(s.east_team, Cut(head), mar7) == [s.demos]
        assert task_ids(s.west, Cut(head), mar7) == [s.proposal_task, s.follow_up]
        mar20 = utc(3, 20)
        assert task_ids(s.east, Cut(head), mar20) == [s.calls]
        assert task_ids(s.west, Cut(head), mar20) == [s.demos, s.proposal_task, s.follow_up]
        assert task_ids(s.east, Cut(s.known_before_move), mar20) == [s.demos, s.calls]

        assert [(m.name, m.unit_id) for m in task_summary(conn, cut=Cut(head), at=mar7, unit_id=s.east)] == [
            ("Ann", s.east_team), ("Cat", s.east)]
        assert [(m.name, m.unit_id) for m in task_summary(conn, cut=Cut(head), at=mar20, unit_id=s.east)] == [
            ("Cat", s.east)]
        assert [(m.name, m.unit_id) for m in task_summary(conn, cut=Cut(head), at=mar20, unit_id=s.west)] == [
            ("Ann", s.west), ("Bob", s.west)]


def test_tasks_overdue_reassigned_completed(told: tuple[ProjectionEngine, Story], app: SalesPlanning) -> None:
    engine, s = told
    head = Cut(engine.head())
    mar7 = utc(3, 7)
    with app.database.engine.connect() as conn:
        every = tasks(conn, cut=head, at=mar7)
        assert [(t.task_id, t.assignee_id, t.status, t.overdue) for t in every] == [
            (s.demos, s.ann, "open", True),  # due 28 Feb
            (s.proposal_task, s.bob, "done", False),
            (s.follow_up, s.bob, "open", False),  # reassigned from Ann; due 10 Mar
            (s.calls, s.cat, "cancelled", False),
        ]
        demos, done = every[0], every[1]
        assert (demos.progress, demos.due, demos.created_at) == (40, date(2025, 2, 28), utc(2, 1))
        assert (done.progress, done.completed_at) == (100, utc(3, 4))
        assert [t.task_id for t in tasks(conn, cut=head, at=mar7, overdue_only=True)] == [s.demos]
        assert [t.task_id for t in tasks(conn, cut=head, at=utc(3, 12), overdue_only=True)] == [s.demos, s.follow_up]
        assert [t.task_id for t in tasks(conn, cut=head, at=mar7, status="done")] == [s.proposal_task]
        assert [t.task_id for t in tasks(conn, cut=head, at=mar7, assignee_id=s.bob)] == [s.proposal_task, s.follow_up]
        # Due dates are calendar days of ``at``'s own timezone: 1 March 07:00 in Shanghai is still
        # 28 February in UTC.
        assert tasks(conn, cut=head, at=utc(2, 28, 23), overdue_only=True) == []
        early_march = datetime(2025, 3, 1, 7, tzinfo=SHANGHAI)
        assert [t.task_id for t in tasks(conn, cut=head, at=early_march, overdue_only=True)] == [s.demos]

        # As of 15 February the follow-up was still Ann's and nothing had been done.
        feb15 = utc(2, 15)
        then = tasks(conn, cut=Cut(engine.head(), feb15), at=feb15)
        assert [(t.task_id, t.assignee_id, t.status, t.overdue) for t in then] == [
            (s.demos, s.ann, "open", False), (s.proposal_task, s.bob, "open", False),
            (s.follow_up, s.ann, "open", False), (s.calls, s.cat, "open", False),
        ]
        with pytest.raises(ValidationError):
            tasks(conn, cut=head, at=mar7, status="late")

        summary = task_summary(conn, cut=head, at=mar7)
        assert summary == [
            MemberTaskSummary(s.ann, "Ann", s.east_team, open=1, overdue=1, done=0, cancelled=0),
            MemberTaskSummary(s.bob, "Bob", s.west, open=1, overdue=0, done=1, cancelled=0),
            MemberTaskSummary(s.cat, "Cat", s.east, open=0, overdue=0, done=0, cancelled=1),
        ]
        assert [(m.name, m.open, m.overdue) for m in task_summary(conn, cut=head, at=utc(3, 12))] == [
            ("Ann", 1, 1), ("Bob", 1, 1), ("Cat", 0, 0)]
        assert [(m.name, m.open, m.done) for m in task_summary(conn, cut=Cut(engine.head(), feb15), at=feb15)] == [
            ("Ann", 2, 0), ("Bob", 1, 0), ("Cat", 1, 0)]


def test_stage_summary_counts_amounts_and_ages_per_stage_and_currency(
    told: tuple[ProjectionEngine, Story], app: SalesPlanning
) -> None:
    engine, s = told
    head = Cut(engine.head())
    with app.database.engine.connect() as conn:
        rows = {(r.currency, r.stage): r for r in stage_summary(conn, cut=head, at=AFTER_ALL)}
        assert len(rows) == 14  # every stage, for each currency present
        qualified = rows[("EUR", "qualified")]
        assert (qualified.count, qualified.amount, qualified.weighted_amount) == (1, Decimal("2000"), Decimal("400.00"))
        assert qualified.average_days_in_stage == Decimal("78.00")  # 1 Feb → 20 Apr
        won = rows[("EUR", "won")]
        # Big Co won 15 Apr 13:00 (4.5 days ago), the quick win 10 Mar (41 days ago).
        assert (won.count, won.amount, won.weighted_amount, won.average_days_in_stage) == (
            2, Decimal("11000"), Decimal("11000.00"), Decimal("22.75"))
        lost = rows[("EUR", "lost")]
        assert (lost.count, lost.amount, lost.weighted_amount) == (1, Decimal("5000"), Decimal("0.00"))
        export = rows[("USD", "proposal")]
        assert (export.count, export.weighted_amount, export.average_days_in_stage) == (
            1, Decimal("1800.00"), Decimal("46.00"))
        lead = rows[("EUR", "lead")]
        assert (lead.count, lead.amount, lead.average_days_in_stage) == (0, Decimal(0), None)

        custom = {r.stage: r for r in stage_summary(conn, cut=head, at=AFTER_ALL,
                                                     probabilities={"qualified": Decimal("0.5")}) if r.currency == "EUR"}
        assert custom["qualified"].weighted_amount == Decimal("1000.00")
        assert custom["won"].weighted_amount == Decimal("0.00")  # a stage without a probability weighs nothing

        east_now = stage_summary(conn, cut=head, at=AFTER_ALL, unit_id=s.east)
        assert [(r.currency, r.stage, r.count, r.amount) for r in east_now if r.count] == [("EUR", "won", 1, Decimal(1000))]
        assert {r.currency for r in east_now} == {"EUR"}

        feb15 = utc(2, 15)
        east_then = {r.stage: r for r in stage_summary(conn, cut=Cut(engine.head(), feb15), at=feb15, unit_id=s.east)}
        # Big Co back in qualified for 12 days, the side deal qualified for 14.
        assert (east_then["qualified"].count, east_then["qualified"].amount, east_then["qualified"].weighted_amount,
                east_then["qualified"].average_days_in_stage) == (2, Decimal(12000), Decimal("2400.00"), Decimal("13.00"))
        assert stage_summary(conn, cut=head, at=AFTER_ALL, unit_id=uuid4()) == []


# --- rebuild ------------------------------------------------------------------------------------


def dump(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the pipeline's live tables, in primary-key order."""
    return {
        table.name: [tuple(row) for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns))]
        for table in LIVE.tables
    }


def test_processing_after_every_command_and_a_rebuild_give_identical_rows(app: SalesPlanning) -> None:
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    s = tell_story(app, step=lambda: caught_up(engine))
    with app.database.engine.connect() as conn:
        incremental = dump(conn)
    assert len(incremental["pipeline_stage_intervals"]) == 6 + 3 + 1 + 1 + 2  # Big Co, pilot, side, export, quick
    assert len(incremental["pipeline_tasks"]) == 4 + 4

    engine.rebuild("pipeline")
    with app.database.engine.connect() as conn:
        assert dump(conn) == incremental

    # In batches of two, stays are opened and closed within and across batches.
    small_batches = ProjectionEngine(app, all_projections(), batch_size=2)
    small_batches.rebuild("pipeline")
    with app.database.engine.connect() as conn:
        assert dump(conn) == incremental

    # The rebuilt tables keep folding new events.
    app.change_deal_stage(s.side, stage="negotiation", actor="ann", effective_at=day(4, 21))
    caught_up(engine)
    with app.database.engine.connect() as conn:
        side = deal_detail(conn, s.side, cut=Cut(engine.head()), at=utc(4, 23))
    assert side is not None
    assert stays_of(side) == [("qualified", Decimal("79.00"), False), ("negotiation", Decimal("2.00"), True)]

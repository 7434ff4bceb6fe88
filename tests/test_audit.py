"""Audit history: who changed what, when and why.

The story: Maria drafts FY2025 for East, sets the year's revenue, splits it into quarters and
publishes v1; in March she cuts Q2 because a key account slipped, drops Q4 to the next
plan, adds a new-deals target for Ann and publishes v2. Ann works a task and wins deals.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa

from domain.aggregate import SalesAggregate
from domain.application import SalesPlanning
from domain.deal import Deal
from domain.organisation import Member, Unit
from domain.plan import Plan
from domain.task import Task
from domain.values import Scope
from projections.engine import LIVE as RUNNING
from projections.engine import Envelope, Projection, ProjectionEngine
from projections.folds import audit
from projections.folds.audit import AuditRow, Subject, audit_rows, event_changes
from projections.queries.audit import audit_history, decode_cursor, encode_cursor
from projections.registry import all_projections
from tests.history_generator import generate_history

MARIA = "maria@acme.example"
ANN = "ann@acme.example"
ADMIN = "admin"


def at(month: int, day: int) -> datetime:
    return datetime(2025, month, day, 9, tzinfo=UTC)


# --- pure folds, no database ------------------------------------------------------------------


def fold(events: list[Any]) -> tuple[list[AuditRow], dict[UUID, Subject]]:
    """Every event through the pure fold, positions 1, 2, …"""
    rows: list[AuditRow] = []
    subjects: dict[UUID, Subject] = {}
    for position, event in enumerate(events, start=1):
        made, learnt = audit_rows(Envelope(position, event), subjects)
        rows.extend(made)
        subjects.update(learnt)
    return rows, subjects


@dataclass
class PlanInMemory:
    east: Unit
    ann: Member
    plan: Plan
    year: UUID
    quarters: list[UUID]
    events: list[Any]


def plan_in_memory() -> PlanInMemory:
    company = Unit.add(id=uuid4(), name="ACME", parent_id=None, actor=ADMIN, effective_at=at(1, 2))
    east = Unit.add(id=uuid4(), name="East", parent_id=company.id, actor=ADMIN, effective_at=at(1, 2))
    ann = Member.add(id=uuid4(), name="Ann", role="rep", unit_id=east.id, email="", actor=ADMIN, effective_at=at(1, 2))
    plan = Plan.draft(id=uuid4(), name="FY2025", span="2025", currency="EUR", unit_id=company.id, actor=MARIA,
                      effective_at=at(1, 3))
    year = uuid4()
    plan.set_target(target_id=year, metric="revenue", period="2025", scope=Scope(unit_id=east.id),
                    committed="4800000", stretch="5200000", actor=MARIA, effective_at=at(1, 6))
    quarters = [uuid4() for _ in range(4)]
    plan.decompose(parent_id=year, by="period", parts=[f"2025-Q{q}" for q in range(1, 5)], child_ids=quarters,
                   actor=MARIA, effective_at=at(1, 7))
    plan.publish(note="baseline", actor=MARIA, effective_at=at(1, 10))
    plan.revise_target(target_id=quarters[1], committed="1000000", absorb="parent", reason="key account slipped",
                       actor=MARIA, effective_at=at(3, 1))
    plan.remove_target(target_id=year, reason="replanned from scratch", actor=MARIA, effective_at=at(3, 2))
    events = [*company.collect_events(), *east.collect_events(), *ann.collect_events(), *plan.collect_events()]
    return PlanInMemory(east, ann, plan, year, quarters, events)


def test_a_revision_is_one_row_per_target_it_moves_with_before_after_and_its_reason() -> None:
    story = plan_in_memory()
    rows, _ = fold(story.events)
    revised = [r for r in rows if r.event_type == "Plan.TargetRevised"]
    assert [(r.seq, r.entity_id) for r in revised] == [(0, story.quarters[1]), (1, story.year)]
    assert len({r.position for r in revised}) == 1
    row = revised[0]
    assert (row.entity, row.entity_id, row.plan_id, row.actor) == ("target", story.quarters[1], story.plan.id, MARIA)
    assert row.changes == {"committed": {"before": "1200000.00", "after": "1000000"}}
    assert row.reason == "key account slipped"
    assert row.effective_at == at(3, 1)
    assert row.summary == ("target revenue 2025-Q2 for East revised: committed 1,200,000.00 → 1,000,000 "
                           "(its parent changes with it)")
    # The year gives up the same 200,000; its upside (5,200,000) does not move.
    year = revised[1]
    assert year.changes == {"committed": {"before": "4800000", "after": "4600000.00"}}
    assert year.reason == "key account slipped"
    assert year.summary == ("target revenue 2025 for East rolled up by revising revenue 2025-Q2 for East: "
                            "committed 4,800,000 → 4,600,000.00")


def test_a_decomposition_is_a_row_for_the_parent_and_one_per_child() -> None:
    story = plan_in_memory()
    rows, _ = fold(story.events)
    split = [r for r in rows if r.event_type == "Plan.TargetDecomposed"]
    assert [r.seq for r in split] == [0, 1, 2, 3, 4]
    assert len({r.position for r in split}) == 1
    assert [r.entity_id for r in split] == [story.year, *story.quarters]
    assert split[0].summary == "target revenue 2025 for East decomposed by period (equal) into 4 targets"
    assert split[0].changes["decomposed_by"] == {"before": None, "after": "period"}
    assert split[0].changes["children"]["after"] == [str(q) for q in story.quarters]
    assert split[2].changes == {
        "period": {"before": None, "after": "2025-Q2"},
        "unit_id": {"before": None, "after": str(story.east.id)},
        "parent_id": {"before": None, "after": str(story.year)},
        "committed": {"before": None, "after": "1200000.00"},
        "stretch": {"before": None, "after": "1300000.00"},
    }
    assert split[2].summary == (
        "target revenue 2025-Q2 for East added by decomposing revenue 2025 for East: "
        "committed 1,200,000.00, stretch 1,300,000.00"
    )


def test_a_removal_is_one_row_per_removed_target_with_the_same_reason() -> None:
    story = plan_in_memory()
    rows, _ = fold(story.events)
    removed = [r for r in rows if r.event_type == "Plan.TargetRemoved"]
    assert [r.entity_id for r in removed] == [story.year, *story.quarters]
    assert [r.seq for r in removed] == [0, 1, 2, 3, 4]
    assert {r.reason for r in removed} == {"replanned from scratch"}
    assert removed[0].summary == "target revenue 2025 for East removed"
    assert removed[1].summary == "target revenue 2025-Q1 for East removed with its parent revenue 2025 for East"
    assert removed[1].changes == {"removed": {"before": False, "after": True}}


def test_plan_rows_carry_the_plan_and_publication_shows_the_version_step() -> None:
    story = plan_in_memory()
    rows, _ = fold(story.events)
    by_type = {r.event_type: r for r in rows if r.plan_id == story.plan.id}
    assert set(by_type) == {"Plan.Drafted", "Plan.TargetSet", "Plan.TargetDecomposed", "Plan.Published",
                            "Plan.TargetRevised", "Plan.TargetRemoved"}
    published = by_type["Plan.Published"]
    assert published.changes == {"version": {"before": None, "after": 1},
                                 "status": {"before": "draft", "after": "published"},
                                 "note": {"before": None, "after": "baseline"}}
    assert published.summary == "plan FY2025 published as v1: baseline"
    assert published.reason == ""
    assert by_type["Plan.Drafted"].summary == "plan FY2025 drafted for 2025 in EUR, owned by ACME"
    assert [r.plan_id for r in rows if r.entity in ("unit", "member")] == [None, None, None]


def test_changes_come_from_the_event_alone() -> None:
    deal = Deal.open(id=uuid4(), name="Big renewal", account_id=None, owner_id=uuid4(), product_id=uuid4(),
                     product_line="GTX", region="EU", segment="enterprise", amount=Decimal("300000"), currency="EUR",
                     expected_close=date(2025, 3, 15), actor=ANN, effective_at=at(2, 1))
    deal.change_stage("proposal", actor=ANN, effective_at=at(2, 10))
    deal.change_expected_close(date(2025, 4, 30), reason="legal review", actor=ANN, effective_at=at(2, 11))
    deal.win(amount=Decimal("280000"), actor=ANN, effective_at=at(3, 10))
    opened, moved, slipped, won = deal.collect_events()
    assert event_changes(opened)["amount"] == {"before": None, "after": "300000"}
    assert event_changes(opened)["expected_close"] == {"before": None, "after": "2025-03-15"}
    assert event_changes(moved) == {"stage": {"before": "lead", "after": "proposal"}}
    assert event_changes(slipped) == {"expected_close": {"before": "2025-03-15", "after": "2025-04-30"}}
    # The owner a won deal counts for is attribution, not a change.
    assert event_changes(won) == {"stage": {"before": "proposal", "after": "won"}, "amount": {"before": None,
                                                                                              "after": "280000"}}
    rows, _ = fold([opened, moved, slipped, won])
    assert [r.summary for r in rows] == [
        f"deal Big renewal opened: 300,000 EUR, owner {str(deal.owner_id)[:8]}, lead, closing 2025-03-15",
        "deal Big renewal moved from lead to proposal",
        "deal Big renewal expected close 2025-03-15 → 2025-04-30",
        "deal Big renewal won at 280,000",
    ]
    assert [r.reason for r in rows] == ["", "", "legal review", ""]


def test_a_task_change_belongs_to_the_plan_its_task_was_created_for() -> None:
    plan_id, ann, bob = uuid4(), uuid4(), uuid4()
    task = Task.create(id=uuid4(), title="Run 40 demos in East", assignee_id=ann, due=date(2025, 5, 31),
                       plan_id=plan_id, actor=MARIA, effective_at=at(3, 4))
    task.reassign(bob, reason="Ann is on leave", actor=MARIA, effective_at=at(3, 6))
    task.complete(outcome="42 demos", actor=MARIA, effective_at=at(5, 30))
    names = [Member.add(id=i, name=n, role="rep", unit_id=uuid4(), email="", actor=ADMIN, effective_at=at(1, 1))
             for i, n in ((ann, "Ann"), (bob, "Bob"))]
    rows, _ = fold([*names[0].collect_events(), *names[1].collect_events(), *task.collect_events()])
    created, reassigned, done = rows[2:]
    assert [r.plan_id for r in (created, reassigned, done)] == [plan_id] * 3
    assert reassigned.summary == "task Run 40 demos in East reassigned from Ann to Bob"
    assert reassigned.changes == {"assignee_id": {"before": str(ann), "after": str(bob)}}
    assert reassigned.reason == "Ann is on leave"
    assert done.changes == {"status": {"before": "open", "after": "done"}, "progress": {"before": None, "after": 100},
                            "outcome": {"before": None, "after": "42 demos"}}


def test_summaries_use_the_name_known_when_the_change_was_made() -> None:
    unit = Unit.add(id=uuid4(), name="East", parent_id=None, actor=ADMIN, effective_at=at(1, 1))
    unit.rename("East China", actor=ADMIN, effective_at=at(2, 1))
    unit.deactivate("merged into APAC", actor=ADMIN, effective_at=at(3, 1))
    rows, subjects = fold(list(unit.collect_events()))
    assert [r.summary for r in rows] == ["unit East added", "unit East renamed to East China",
                                         "unit East China deactivated"]
    assert rows[2].changes == {"active": {"before": True, "after": False}}
    assert subjects[unit.id] == Subject("unit", "East China")


def test_an_unknown_entity_is_named_by_a_short_id() -> None:
    stranger = uuid4()
    deal = Deal.open(id=uuid4(), name="d", account_id=None, owner_id=stranger, product_id=uuid4(), product_line="GTX",
                     region="", segment="", amount=Decimal(1), currency="EUR", expected_close=date(2025, 1, 31),
                     actor=ANN, effective_at=at(1, 2))
    rows, _ = audit_rows(Envelope(7, deal.collect_events()[0]), {})
    assert str(stranger)[:8] in rows[0].summary


def test_every_domain_event_has_a_written_summary() -> None:
    def nested_events(cls: type[Any]) -> Iterator[type[Any]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from nested_events(sub)

    # The library generates field-less Event/Created bases per aggregate, and replaces each
    # declared event with a subclass of it: declared events are those with fields of their own.
    declared = {(e.__module__, e.__qualname__) for e in nested_events(SalesAggregate.Event)
                if e.__module__ != "domain.aggregate" and vars(e).get("__annotations__")}
    assert len(declared) == 36
    events = {(q, getattr(getattr(sys.modules[m], q.split(".")[0]), q.split(".")[1])) for m, q in declared}
    assert {q for q, e in events if e not in audit._SUMMARIES and e not in audit.TARGET_EVENTS} == set()


def test_cursors_round_trip_and_refuse_garbage() -> None:
    assert decode_cursor(encode_cursor((1234, 5))) == (1234, 5)
    assert decode_cursor((3, 0)) == (3, 0)
    for bad in ("", "12", "a.b", "1.2.3", "-1.0", "1.-2"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


# --- the story on SQLite and PostgreSQL -------------------------------------------------------


@dataclass
class Story:
    company: UUID
    east: UUID
    ann: UUID
    bob: UUID
    plan: UUID
    year: UUID
    quarters: list[UUID]
    new_deals: UUID
    task: UUID
    deals: list[UUID]


def tell_story(app: SalesPlanning, step: Callable[[], None] = lambda: None) -> Story:
    """The FY2025 story, calling ``step`` after every command (e.g. to catch projections up)."""

    def run(result: Any) -> Any:
        step()
        return result

    company = run(app.add_unit(name="ACME", actor=ADMIN, effective_at=at(1, 2))).id
    east = run(app.add_unit(name="East", parent_id=company, actor=ADMIN, effective_at=at(1, 2))).id
    ann = run(app.add_member(name="Ann", role="rep", unit_id=east, actor=ADMIN, effective_at=at(1, 2))).id
    bob = run(app.add_member(name="Bob", role="rep", unit_id=east, actor=ADMIN, effective_at=at(1, 2))).id
    plan = run(app.draft_plan(name="FY2025", span="2025", currency="EUR", unit_id=company, actor=MARIA,
                              effective_at=at(1, 3))).id
    year = UUID(run(app.set_target(plan, metric="revenue", period="2025", scope=Scope(unit_id=east),
                                   committed="4800000", stretch="5200000", actor=MARIA,
                                   effective_at=at(1, 6))).details["target_id"])
    quarters = [UUID(c) for c in run(app.decompose_target(
        plan, parent_id=year, by="period", parts=[f"2025-Q{q}" for q in range(1, 5)], actor=MARIA,
        effective_at=at(1, 7))).details["child_ids"]]
    run(app.publish_plan(plan, note="baseline", actor=MARIA, effective_at=at(1, 10)))
    # Q2 gives up 200,000 and the year with it; Q4 leaves and takes its 1,200,000 out of the year.
    run(app.revise_target(plan, target_id=quarters[1], committed="1000000", absorb="parent",
                          reason="key account slipped", actor=MARIA, effective_at=at(3, 1)))
    run(app.remove_target(plan, target_id=quarters[3], mode="subtree", reason="Q4 moves to the FY2026 plan",
                          actor=MARIA, effective_at=at(3, 2)))
    new_deals = UUID(run(app.set_target(plan, metric="new_deals", period="2025-Q3", scope=Scope(member_id=ann),
                                        committed="30", reason="more pipeline for H2", actor=MARIA,
                                        effective_at=at(3, 3))).details["target_id"])
    task = run(app.create_task(title="Run 40 demos in East", assignee_id=ann, due=date(2025, 5, 31), plan_id=plan,
                               target_id=quarters[1], actor=MARIA, effective_at=at(3, 4))).id
    run(app.revise_target(plan, target_id=quarters[1], stretch="1100000", absorb="parent",
                          reason="no upside left in Q2", actor=MARIA, effective_at=at(3, 5)))
    run(app.reassign_task(task, assignee_id=bob, reason="Ann is on leave", actor=MARIA, effective_at=at(3, 6)))
    run(app.publish_plan(plan, note="March rolling adjustment", actor=MARIA, effective_at=at(3, 31)))
    product = run(app.add_product(name="GTX Pro", product_line="GTX", list_price="1000", currency="EUR",
                                  actor=ADMIN, effective_at=at(1, 2))).id
    first = run(app.open_deal(name="Big renewal", account_id=None, owner_id=ann, product_id=product,
                              amount="300000", currency="EUR", expected_close=date(2025, 3, 15), actor=ANN,
                              effective_at=at(2, 1))).id
    run(app.win_deal(first, actor=ANN, effective_at=at(3, 10)))
    second = run(app.open_deal(name="Autumn upsell", account_id=None, owner_id=ann, product_id=product,
                               amount="500000", currency="EUR", expected_close=date(2025, 10, 31), actor=ANN,
                               effective_at=at(9, 1))).id
    run(app.win_deal(second, actor=ANN, effective_at=at(10, 15)))
    return Story(company, east, ann, bob, plan, year, quarters, new_deals, task, [first, second])


def projected(app: SalesPlanning, batch_size: int = 500, projections: list[Projection] | None = None
              ) -> ProjectionEngine:
    engine = ProjectionEngine(app, all_projections() if projections is None else projections, batch_size=batch_size)
    engine.setup()
    return engine


def caught_up(engine: ProjectionEngine) -> None:
    engine.catch_up()
    for status in engine.status():
        if status.name in ("audit", "plan_version"):
            assert (status.status, status.error, status.position) == (RUNNING, None, engine.head())


def log_of(app: SalesPlanning) -> list[Envelope]:
    return [Envelope(n.id, app.mapper.to_domain_event(n))
            for n in app.recorder.select_notifications(start=1, limit=10**6)]


def everything(app: SalesPlanning, **filters: Any) -> list[AuditRow]:
    with app.database.engine.connect() as conn:
        page = audit_history(conn, limit=1000, **filters)
    assert page.next_cursor is None
    return page.rows


def test_the_story_reads_back_in_order_with_before_after_and_reasons(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app)
    caught_up(engine)
    rows = everything(app)
    # The view holds exactly what the pure fold makes of the log.
    assert rows == _fold_log(app)
    assert [(r.position, r.seq) for r in rows] == sorted((r.position, r.seq) for r in rows)
    plan_rows = everything(app, plan_id=s.plan)
    assert [(r.event_type, r.entity, r.reason) for r in plan_rows] == [
        ("Plan.Drafted", "plan", ""),
        ("Plan.TargetSet", "target", ""),
        *[("Plan.TargetDecomposed", "target", "")] * 5,
        ("Plan.Published", "plan", ""),
        *[("Plan.TargetRevised", "target", "key account slipped")] * 2,  # Q2 and the year with it
        *[("Plan.TargetRemoved", "target", "Q4 moves to the FY2026 plan")] * 2,  # Q4, and the year shrinks
        ("Plan.TargetSet", "target", "more pipeline for H2"),
        ("Task.Created", "task", ""),
        *[("Plan.TargetRevised", "target", "no upside left in Q2")] * 2,
        ("Task.Reassigned", "task", "Ann is on leave"),
        ("Plan.Published", "plan", ""),
    ]
    q2 = [r for r in plan_rows if r.entity_id == s.quarters[1] and r.event_type == "Plan.TargetRevised"]
    assert [r.changes for r in q2] == [
        {"committed": {"before": "1200000.00", "after": "1000000"}},
        {"stretch": {"before": "1300000.00", "after": "1100000"}},
    ]
    assert [r.summary for r in q2] == [
        "target revenue 2025-Q2 for East revised: committed 1,200,000.00 → 1,000,000 (its parent changes with it)",
        "target revenue 2025-Q2 for East revised: stretch 1,300,000.00 → 1,100,000 (its parent changes with it)",
    ]
    assert [r.effective_at for r in q2] == [at(3, 1), at(3, 5)]
    # The year follows: −200,000 with Q2; −1,200,000 and −100,000 of upside with Q4 (1,200,000 / 1,300,000);
    # then Q2's upside above committed falls from 300,000 to 100,000, and the year's with it.
    year = [r for r in plan_rows if r.entity_id == s.year and r.position > q2[0].position - 1]
    assert [(r.event_type, r.changes) for r in year] == [
        ("Plan.TargetRevised", {"committed": {"before": "4800000", "after": "4600000.00"}}),
        ("Plan.TargetRemoved", {"committed": {"before": "4600000.00", "after": "3400000.00"},
                                "stretch": {"before": "5200000", "after": "3900000.00"}}),
        ("Plan.TargetRevised", {"stretch": {"before": "3900000.00", "after": "3700000.00"}}),
    ]
    assert year[1].summary == ("target revenue 2025 for East rolled up by removing revenue 2025-Q4 for East: "
                               "committed 4,600,000.00 → 3,400,000.00; stretch 5,200,000 → 3,900,000.00")
    assert all(r.recorded_at.tzinfo is not None and r.actor == MARIA for r in plan_rows)
    assert plan_rows[-1].summary == "plan FY2025 published as v2: March rolling adjustment"
    assert plan_rows[-1].changes["version"] == {"before": 1, "after": 2}


def _fold_log(app: SalesPlanning) -> list[AuditRow]:
    rows: list[AuditRow] = []
    subjects: dict[UUID, Subject] = {}
    for envelope in log_of(app):
        made, learnt = audit_rows(envelope, subjects)
        rows.extend(made)
        subjects.update(learnt)
    return rows


def test_every_filter_selects_exactly_its_rows(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app)
    caught_up(engine)
    rows = everything(app)
    assert rows == _fold_log(app)
    assert len(rows) == len({(r.position, r.seq) for r in rows})

    def check(expected: list[AuditRow], **filters: Any) -> None:
        assert expected, filters
        assert everything(app, **filters) == expected

    check([r for r in rows if r.entity == "target"], entity="target")
    check([r for r in rows if r.entity == "deal"], entity="deal")
    q2 = everything(app, entity_id=s.quarters[1])
    assert [(r.event_type, r.seq) for r in q2] == [
        ("Plan.TargetDecomposed", 2), ("Plan.TargetRevised", 0), ("Plan.TargetRevised", 0)]
    check(q2, entity="target", entity_id=s.quarters[1])
    assert everything(app, entity="plan", entity_id=s.quarters[1]) == []
    check([r for r in rows if r.actor == ANN], actor=ANN)
    assert {r.entity for r in everything(app, actor=ANN)} == {"deal"}
    by_plan = everything(app, plan_id=s.plan)
    assert {r.entity for r in by_plan} == {"plan", "target", "task"}
    check([r for r in rows if r.plan_id == s.plan], plan_id=s.plan)
    middle = rows[len(rows) // 2].recorded_at
    check([r for r in rows if r.recorded_at >= middle], recorded_from=middle)
    check([r for r in rows if r.recorded_at < middle], recorded_to=middle)
    march = [r for r in rows if at(3, 1) <= r.effective_at < at(4, 1)]
    check(march, effective_from=at(3, 1), effective_to=at(4, 1))
    assert {r.event_type for r in march} >= {"Plan.TargetRevised", "Plan.TargetRemoved", "Deal.Won"}
    check([r for r in march if r.entity == "target" and r.actor == MARIA], entity="target", actor=MARIA,
          effective_from=at(3, 1), effective_to=at(4, 1))


def test_paging_by_cursor_is_complete_and_stable_while_changes_arrive(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app)
    caught_up(engine)
    before = everything(app)
    with app.database.engine.connect() as conn:
        pages = [audit_history(conn, limit=4)]
        while pages[-1].next_cursor is not None:
            pages.append(audit_history(conn, limit=4, after=pages[-1].next_cursor))
        assert [r for p in pages for r in p.rows] == before
        assert all(len(p.rows) == 4 for p in pages[:-1]) and pages[-1].next_cursor is None
        cursor = pages[1].next_cursor
        assert cursor is not None
        third = audit_history(conn, limit=4, after=decode_cursor(cursor))
        assert third == pages[2]
        with pytest.raises(ValueError):
            audit_history(conn, limit=0)
        with pytest.raises(ValueError):
            audit_history(conn, after="not a cursor")
        # A filtered listing pages the same way.
        target_pages = [audit_history(conn, entity="target", limit=3)]
        while target_pages[-1].next_cursor is not None:
            target_pages.append(audit_history(conn, entity="target", limit=3, after=target_pages[-1].next_cursor))
        assert [r for p in target_pages for r in p.rows] == [r for r in before if r.entity == "target"]
    app.revise_target(s.plan, target_id=s.quarters[0], committed="1250000", absorb="parent", reason="strong January",
                      actor=MARIA, effective_at=at(4, 2))
    app.log_activity(kind="visit", member_id=s.bob, actor="bob@acme.example", effective_at=at(4, 3))
    caught_up(engine)
    with app.database.engine.connect() as conn:
        assert audit_history(conn, limit=4, after=cursor) == third
        rest: list[AuditRow] = []
        page = audit_history(conn, limit=4, after=cursor)
        while True:
            rest.extend(page.rows)
            if page.next_cursor is None:
                break
            page = audit_history(conn, limit=4, after=page.next_cursor)
    after = everything(app)
    assert after[: len(before)] == before
    assert rest == after[8:]
    assert [r.summary for r in after[len(before):]] == [
        "target revenue 2025-Q1 for East revised: committed 1,200,000.00 → 1,250,000 (its parent changes with it)",
        "target revenue 2025 for East rolled up by revising revenue 2025-Q1 for East: "
        "committed 3,400,000.00 → 3,450,000.00",
        "visit logged by Bob",
    ]


def dump(app: SalesPlanning, tables: list[sa.Table]) -> dict[str, list[tuple[Any, ...]]]:
    with app.database.engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for t in tables
        }


def test_incremental_processing_and_a_rebuild_give_identical_rows(app: SalesPlanning) -> None:
    engine = projected(app)
    s = tell_story(app, step=lambda: caught_up(engine))
    # A rename in a later batch updates the stored name that later summaries use.
    app.rename_unit(s.east, name="East China", actor=ADMIN, effective_at=at(4, 1))
    caught_up(engine)
    app.set_target(s.plan, metric="revenue", period="2025-Q4", scope=Scope(unit_id=s.east), committed="900000",
                   reason="Q4 back, smaller", actor=MARIA, effective_at=at(4, 2))
    caught_up(engine)
    assert [r.summary for r in everything(app)[-2:]] == [
        "unit East renamed to East China", "target revenue 2025-Q4 for East China set: committed 900,000"]
    tables = audit.LIVE.tables
    live = dump(app, tables)
    assert len(live["audit_history"]) == len(_fold_log(app)) and live["audit_subjects"]
    engine.rebuild("audit")
    assert dump(app, tables) == live


def test_small_batches_and_a_rebuild_agree_on_a_long_history(app: SalesPlanning) -> None:
    generate_history(app, seed=7, commands=150)
    engine = projected(app, batch_size=7, projections=[audit.AuditProjection()])
    caught_up(engine)
    tables = audit.LIVE.tables
    live = dump(app, tables)
    engine.rebuild("audit")
    assert dump(app, tables) == live
    assert everything(app) == _fold_log(app)

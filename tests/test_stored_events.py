"""Stored events are a persisted schema: every event type round-trips through the real store,
the list of topics is held here, and a golden corpus of v1 events must stay readable forever.

- ``EVENT_TOPICS`` is compared with the event classes found by walking the aggregates: a
  renamed, moved or new event class fails until this list (and an alias or upcaster for old
  history) is updated on purpose.
- ``tests/golden/events-v1.json`` holds events as they were stored by the first schema
  (topic + state as text). It was generated once by ``write_every_event`` and is never
  regenerated: a later schema gets a new file (``python -m tests.test_stored_events
  tests/golden/events-v2.json``), and old files keep being decoded and replayed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import fields
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import pytest
from eventsourcing.persistence import Notification, Recording, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from domain.aggregate import SalesAggregate
from domain.application import SalesPlanning
from domain.catalogue import Product
from domain.deal import Activity, Deal
from domain.organisation import Member, Unit
from domain.persistence import Database, close_database, open_database
from domain.plan import Plan
from domain.task import Task
from domain.values import Scope

GOLDEN = Path(__file__).parent / "golden"

EVENT_TOPICS = [
    "domain.organisation:Unit.Added",
    "domain.organisation:Unit.Renamed",
    "domain.organisation:Unit.Moved",
    "domain.organisation:Unit.Deactivated",
    "domain.organisation:Member.Added",
    "domain.organisation:Member.Renamed",
    "domain.organisation:Member.Moved",
    "domain.organisation:Member.Deactivated",
    "domain.catalogue:Product.Added",
    "domain.catalogue:Product.ListPriceChanged",
    "domain.catalogue:Account.Added",
    "domain.catalogue:Account.Reclassified",
    "domain.plan:Plan.Drafted",
    "domain.plan:Plan.TargetSet",
    "domain.plan:Plan.TargetDecomposed",
    "domain.plan:Plan.TargetRevised",
    "domain.plan:Plan.TargetRemoved",
    "domain.plan:Plan.Published",
    "domain.plan:Plan.Closed",
    "domain.plan:Plan.PeriodLocked",
    "domain.plan:Plan.PeriodUnlocked",
    "domain.task:Task.Created",
    "domain.task:Task.Reassigned",
    "domain.task:Task.Rescheduled",
    "domain.task:Task.ProgressReported",
    "domain.task:Task.Completed",
    "domain.task:Task.Cancelled",
    "domain.deal:Deal.Opened",
    "domain.deal:Deal.StageChanged",
    "domain.deal:Deal.AmountChanged",
    "domain.deal:Deal.ExpectedCloseChanged",
    "domain.deal:Deal.Reassigned",
    "domain.deal:Deal.Won",
    "domain.deal:Deal.Lost",
    "domain.deal:Deal.Reopened",
    "domain.deal:Activity.Logged",
]


def discovered_event_classes() -> dict[str, type[SalesAggregate.Event]]:
    """The event classes the aggregates declare, by topic.

    The library gives every aggregate a base ``Event`` (never triggered) and, next to the
    creation event the aggregate declares (``Added``, ``Opened`` …), a default ``Created``
    that it never uses; neither is ever stored.
    """
    def aggregates(cls: type[SalesAggregate]) -> Iterator[type[SalesAggregate]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from aggregates(sub)

    found: dict[str, type[SalesAggregate.Event]] = {}
    for aggregate in aggregates(SalesAggregate):
        nested = [c for c in vars(aggregate).values() if isinstance(c, type) and issubclass(c, SalesAggregate.Event)]
        creators = [c for c in nested if issubclass(c, SalesAggregate.Created)]
        for cls in nested:
            if cls.__name__ == "Event" or (cls.__name__ == "Created" and len(creators) > 1):
                continue
            found[get_topic(cls)] = cls
    return found


def test_the_event_topics_are_exactly_the_declared_event_classes() -> None:
    assert len(EVENT_TOPICS) == len(set(EVENT_TOPICS))
    assert sorted(discovered_event_classes()) == sorted(EVENT_TOPICS)
    for topic in EVENT_TOPICS:
        assert get_topic(resolve_topic(topic)) == topic


# --- a history that holds every event type -------------------------------------------------

NAMESPACE = UUID("6c1d3f52-2b7e-4f0a-9d55-0d6a1f3b8e21")
SHANGHAI = timezone(timedelta(hours=8))


def ident(name: str) -> UUID:
    return uuid5(NAMESPACE, name)


class Moments:
    """Business moments an hour apart, written in Shanghai time: offsets must survive the store."""

    def __init__(self) -> None:
        self.current = datetime(2025, 1, 6, 9, 0, tzinfo=SHANGHAI)

    def next(self) -> datetime:
        self.current += timedelta(hours=1)
        return self.current


def write_every_event(app: SalesPlanning) -> None:
    """One deterministic history with at least one event of every type (ids and times fixed)."""
    t = Moments()
    actor = "admin@acme.example"
    company, east, team, old_team = ident("company"), ident("east"), ident("team"), ident("old-team")
    app.add_unit(id=company, name="Acme Sales", actor=actor, effective_at=t.next())
    app.add_unit(id=east, name="East", parent_id=company, actor=actor, effective_at=t.next())
    app.add_unit(id=team, name="East SMB", parent_id=east, actor=actor, effective_at=t.next())
    app.add_unit(id=old_team, name="Old Team", parent_id=east, actor=actor, effective_at=t.next())
    app.rename_unit(team, name="East Small Business", actor=actor, effective_at=t.next())
    app.move_unit(team, parent_id=company, reason="flatter structure", actor=actor, effective_at=t.next())
    app.deactivate_unit(old_team, reason="merged into East Small Business", actor=actor, effective_at=t.next())

    wei, ana, gus = ident("wei"), ident("ana"), ident("gus")
    app.add_member(id=wei, name="Li Wei", role="rep", unit_id=team, email="wei@acme.example", actor=actor,
                   effective_at=t.next())
    app.add_member(id=ana, name="Ana", role="manager", unit_id=team, actor=actor, effective_at=t.next())
    app.add_member(id=gus, name="Gus", role="rep", unit_id=team, actor=actor, effective_at=t.next())
    app.rename_member(wei, name="Wei Li", actor=actor, effective_at=t.next())
    app.move_member(ana, unit_id=east, reason="heads East now", actor=actor, effective_at=t.next())
    app.deactivate_member(gus, reason="left the company", actor=actor, effective_at=t.next())

    product, account = ident("product"), ident("account")
    app.add_product(id=product, name="Platform licence", product_line="Platform", list_price="40000.00",
                    currency="EUR", actor=actor, effective_at=t.next())
    app.change_list_price(product, list_price="42000.50", actor=actor, effective_at=t.next())
    app.add_account(id=account, name="Müller GmbH", segment="enterprise", region="East", actor=actor,
                    effective_at=t.next())
    app.reclassify_account(account, segment="mid-market", region="West", actor=actor, effective_at=t.next())

    plan, year, spare = ident("plan"), ident("year"), ident("spare")
    app.draft_plan(id=plan, name="FY2025", span="2025", currency="EUR", unit_id=company, actor=actor,
                   effective_at=t.next())
    app.set_target(plan, target_id=year, metric="revenue", period="2025",
                   scope=Scope(unit_id=company, product_line="Platform"), committed="1000000.00",
                   stretch="1200000.00", currency="EUR", actor=actor, effective_at=t.next())
    quarters = app.decompose_target(
        plan, parent_id=year, by="period", parts=["2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4"], method="weights",
        weights=[Decimal("0.1"), Decimal("0.2"), Decimal("0.3"), Decimal("0.4")], residue_to=3,
        reason="seasonality", actor=actor, effective_at=t.next(),
    )
    q2_id = UUID(quarters.details["child_ids"][1])  # child ids are the application's, not ours
    q3_id = UUID(quarters.details["child_ids"][2])
    # Q3 absorbs what Q2 gives up: the year keeps its 1,000,000.
    app.revise_target(plan, target_id=q2_id, committed="150000.00", absorb=str(q3_id), reason="slow spring",
                      actor=actor, effective_at=t.next())
    app.set_target(plan, target_id=spare, metric="new_deals", period="2025-Q3", scope=Scope(member_id=wei),
                   committed=12, actor=actor, effective_at=t.next())
    app.remove_target(plan, target_id=spare, reason="counted at team level", actor=actor, effective_at=t.next())
    months = app.decompose_target(plan, parent_id=UUID(quarters.details["child_ids"][0]), by="period",
                                  parts=["2025-01", "2025-02", "2025-03"], actor=actor, effective_at=t.next())
    app.remove_target(plan, target_id=UUID(months.details["child_ids"][2]), mode="respread",
                      reason="March folds into January and February", actor=actor, effective_at=t.next())
    app.publish_plan(plan, note="baseline", actor=actor, effective_at=t.next())
    app.lock_period(plan, period="2025-01", reason="January closed", actor=actor, effective_at=t.next())
    app.unlock_period(plan, period="2025-01", reason="a late invoice reopened January", actor=actor,
                      effective_at=t.next())

    task, dropped = ident("task"), ident("dropped-task")
    app.create_task(id=task, title="Run 10 demos in May", assignee_id=wei, due=date(2025, 5, 31), plan_id=plan,
                    target_id=q2_id, actor=actor, effective_at=t.next())
    app.reassign_task(task, assignee_id=ana, reason="Wei is on leave", actor=actor, effective_at=t.next())
    app.reschedule_task(task, due=date(2025, 6, 15), reason="trade fair moved", actor=actor, effective_at=t.next())
    app.report_task_progress(task, progress=40, note="4 demos held", actor=actor, effective_at=t.next())
    app.complete_task(task, outcome="11 demos held", actor=actor, effective_at=t.next())
    app.create_task(id=dropped, title="Cold-call list B", assignee_id=wei, due=date(2025, 3, 1), actor=actor,
                    effective_at=t.next())
    app.cancel_task(dropped, reason="list bought elsewhere", actor=actor, effective_at=t.next())

    deal = ident("deal")
    app.open_deal(id=deal, name="Müller framework", account_id=account, owner_id=wei, product_id=product,
                  amount="120000.00", currency="EUR", expected_close=date(2025, 6, 20), actor=actor,
                  effective_at=t.next())
    app.change_deal_stage(deal, stage="proposal", actor=actor, effective_at=t.next())
    app.change_deal_amount(deal, amount="99999.99", reason="discount", actor=actor, effective_at=t.next())
    app.change_deal_expected_close(deal, expected_close=date(2025, 10, 15), reason="budget moved to H2",
                                   actor=actor, effective_at=t.next())
    app.reassign_deal(deal, owner_id=ana, reason="key account", actor=actor, effective_at=t.next())
    app.lose_deal(deal, reason="competitor", actor=actor, effective_at=t.next())
    app.reopen_deal(deal, reason="competitor failed the pilot", stage="negotiation", actor=actor,
                    effective_at=t.next())
    app.win_deal(deal, amount="101000.10", actor=actor, effective_at=t.next())
    app.log_activity(id=ident("call"), kind="call", member_id=wei, deal_id=deal, note="intro call", actor=actor,
                     effective_at=t.next())
    app.log_activity(id=ident("visit"), kind="visit", member_id=ana, actor=actor, effective_at=t.next())
    app.close_plan(plan, reason="FY2025 ended", actor=actor, effective_at=t.next())


class RecordingPlanning(SalesPlanning):
    """Keeps what each save recorded: the events and aggregates as they were before storage."""

    name = SalesPlanning.name  # the library names a subclass after itself, and its tables after that

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.recorded: list[Recording[UUID]] = []
        self.saved: dict[UUID, Any] = {}

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        recordings = super().save(*objs, **kwargs)
        self.recorded.extend(recordings)
        self.saved.update({obj.id: obj for obj in objs if isinstance(obj, SalesAggregate)})
        return recordings


def same(a: Any, b: Any, where: str = "") -> None:
    """Equal, of exactly the same types all the way down (Decimal('1.50') is not Decimal('1.5'))."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}/{i}")
    else:
        assert a == b and repr(a) == repr(b), f"{where}: {a!r} != {b!r}"


def payload(event: Any) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in fields(event)}


def all_notifications(app: SalesPlanning) -> list[Notification]:
    notifications: list[Notification] = []
    while True:
        start = notifications[-1].id + 1 if notifications else 1
        batch = app.recorder.select_notifications(start=start, limit=100)
        if not batch:
            return notifications
        notifications.extend(batch)


@pytest.fixture
def recording_app(database: Database) -> RecordingPlanning:
    app = RecordingPlanning(database)
    write_every_event(app)
    return app


def test_every_event_type_round_trips_through_the_store(recording_app: RecordingPlanning) -> None:
    app = recording_app
    originals = {(r.domain_event.originator_id, r.domain_event.originator_version): r.domain_event
                 for r in app.recorded}
    notifications = all_notifications(app)
    assert {n.topic for n in notifications} == set(EVENT_TOPICS)
    assert len(notifications) == len(originals)

    for notification in notifications:
        decoded = app.mapper.to_domain_event(notification)
        key = (decoded.originator_id, decoded.originator_version)
        original = originals[key]
        assert type(decoded) is type(original)
        same(payload(decoded), payload(original), notification.topic)
        # Encoding what was decoded gives back the very bytes that were stored.
        assert app.mapper.to_stored_event(decoded).state == notification.state

    # Read per entity through the event store, and replayed into aggregates by the repository.
    for entity_id, saved in app.saved.items():
        events = list(app.events.get(entity_id))
        assert [e.originator_version for e in events] == list(range(1, saved.version + 1))
        for event in events:
            same(payload(event), payload(originals[(entity_id, event.originator_version)]), get_topic(type(event)))
        replayed: Any = app.repository.get(entity_id)
        same({k: v for k, v in vars(replayed).items() if k != "_pending_events"},
             {k: v for k, v in vars(saved).items() if k != "_pending_events"}, type(saved).__name__)


def test_the_payload_types_survive_the_store(recording_app: RecordingPlanning) -> None:
    app = recording_app
    by_topic: dict[str, Any] = {}
    for notification in all_notifications(app):
        by_topic.setdefault(notification.topic, app.mapper.to_domain_event(notification))

    price = by_topic["domain.catalogue:Product.ListPriceChanged"]
    assert (price.list_price, price.previous_list_price) == (Decimal("42000.50"), Decimal("40000.00"))
    assert str(price.previous_list_price) == "40000.00"  # the cents are kept, not normalised away

    slipped = by_topic["domain.deal:Deal.ExpectedCloseChanged"]
    assert type(slipped.expected_close) is date and slipped.expected_close == date(2025, 10, 15)
    opened = by_topic["domain.deal:Deal.Opened"]
    assert type(opened.owner_id) is UUID and opened.owner_id == ident("wei")

    # Written in Shanghai time, kept as the same instant in UTC; the recorded time too is aware.
    first = by_topic["domain.organisation:Unit.Added"]
    assert first.effective_at == datetime(2025, 1, 6, 10, 0, tzinfo=SHANGHAI)
    assert first.effective_at.utcoffset() == timedelta(0)
    assert first.timestamp.tzinfo is not None

    decomposed = by_topic["domain.plan:Plan.TargetDecomposed"]
    assert [c["period"] for c in decomposed.children] == ["2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4"]
    assert [c["committed"] for c in decomposed.children] == [
        Decimal("100000.00"), Decimal("200000.00"), Decimal("300000.00"), Decimal("400000.00")
    ]
    assert all(type(c["target_id"]) is UUID and c["scope"]["unit_id"] == ident("company")
               for c in decomposed.children)
    assert decomposed.children[0]["scope"]["product_line"] == "Platform"
    removed = by_topic["domain.plan:Plan.TargetRemoved"]
    assert removed.removed_ids == [ident("spare")]
    task = by_topic["domain.task:Task.Created"]
    assert type(task.due) is date and task.target_id == decomposed.children[1]["target_id"]


# --- the golden corpus ---------------------------------------------------------------------

# Key fields of the first v1 event of each topic, as the corpus holds them.
COMPANY, EAST, TEAM = ident("company"), ident("east"), ident("team")
WEI, ANA = ident("wei"), ident("ana")
GOLDEN_V1: dict[str, dict[str, Any]] = {
    "domain.organisation:Unit.Added": {"originator_id": COMPANY, "name": "Acme Sales", "parent_id": None,
                                       "actor": "admin@acme.example",
                                       "effective_at": datetime(2025, 1, 6, 2, 0, tzinfo=timezone.utc)},
    "domain.organisation:Unit.Renamed": {"name": "East Small Business", "previous_name": "East SMB"},
    "domain.organisation:Unit.Moved": {"parent_id": COMPANY, "previous_parent_id": EAST,
                                       "reason": "flatter structure"},
    "domain.organisation:Unit.Deactivated": {"originator_id": ident("old-team"),
                                             "reason": "merged into East Small Business"},
    "domain.organisation:Member.Added": {"originator_id": WEI, "name": "Li Wei", "role": "rep", "unit_id": TEAM,
                                         "email": "wei@acme.example"},
    "domain.organisation:Member.Renamed": {"name": "Wei Li", "previous_name": "Li Wei"},
    "domain.organisation:Member.Moved": {"unit_id": EAST, "previous_unit_id": TEAM, "reason": "heads East now"},
    "domain.organisation:Member.Deactivated": {"originator_id": ident("gus"), "reason": "left the company"},
    "domain.catalogue:Product.Added": {"name": "Platform licence", "product_line": "Platform",
                                       "list_price": Decimal("40000.00"), "currency": "EUR"},
    "domain.catalogue:Product.ListPriceChanged": {"list_price": Decimal("42000.50"),
                                                  "previous_list_price": Decimal("40000.00")},
    "domain.catalogue:Account.Added": {"name": "Müller GmbH", "segment": "enterprise", "region": "East"},
    "domain.catalogue:Account.Reclassified": {"segment": "mid-market", "region": "West",
                                              "previous_segment": "enterprise", "previous_region": "East"},
    "domain.plan:Plan.Drafted": {"name": "FY2025", "span": "2025", "currency": "EUR", "unit_id": COMPANY},
    "domain.plan:Plan.TargetSet": {
        "target_id": ident("year"), "metric": "revenue", "period": "2025", "committed": Decimal("1000000.00"),
        "stretch": Decimal("1200000.00"), "parent_id": None, "reason": "",
        "scope": {"unit_id": COMPANY, "member_id": None, "product_line": "Platform", "region": None,
                  "segment": None},
    },
    "domain.plan:Plan.TargetDecomposed": {"parent_id": ident("year"), "by": "period", "method": "weights",
                                          "reason": "seasonality"},
    "domain.plan:Plan.TargetRevised": {"committed": Decimal("150000.00"), "previous_committed": Decimal("200000.00"),
                                       "stretch": Decimal("240000.00"), "previous_stretch": Decimal("240000.00"),
                                       "reason": "slow spring"},
    "domain.plan:Plan.TargetRemoved": {"target_id": ident("spare"), "removed_ids": [ident("spare")],
                                       "reason": "counted at team level"},
    "domain.plan:Plan.Published": {"version": 1, "note": "baseline"},
    "domain.plan:Plan.Closed": {"reason": "FY2025 ended"},
    "domain.task:Task.Created": {"title": "Run 10 demos in May", "assignee_id": WEI, "due": date(2025, 5, 31),
                                 "plan_id": ident("plan")},
    "domain.task:Task.Reassigned": {"assignee_id": ANA, "previous_assignee_id": WEI, "reason": "Wei is on leave"},
    "domain.task:Task.Rescheduled": {"due": date(2025, 6, 15), "previous_due": date(2025, 5, 31),
                                     "reason": "trade fair moved"},
    "domain.task:Task.ProgressReported": {"progress": 40, "previous_progress": 0, "note": "4 demos held"},
    "domain.task:Task.Completed": {"outcome": "11 demos held"},
    "domain.task:Task.Cancelled": {"originator_id": ident("dropped-task"), "reason": "list bought elsewhere"},
    "domain.deal:Deal.Opened": {
        "name": "Müller framework", "account_id": ident("account"), "owner_id": WEI, "product_id": ident("product"),
        "product_line": "Platform", "region": "West", "segment": "mid-market", "amount": Decimal("120000.00"),
        "currency": "EUR", "expected_close": date(2025, 6, 20), "stage": "lead",
    },
    "domain.deal:Deal.StageChanged": {"stage": "proposal", "previous_stage": "lead", "reason": ""},
    "domain.deal:Deal.AmountChanged": {"amount": Decimal("99999.99"), "previous_amount": Decimal("120000.00"),
                                       "reason": "discount"},
    "domain.deal:Deal.ExpectedCloseChanged": {"expected_close": date(2025, 10, 15),
                                              "previous_expected_close": date(2025, 6, 20),
                                              "reason": "budget moved to H2"},
    "domain.deal:Deal.Reassigned": {"owner_id": ANA, "previous_owner_id": WEI, "reason": "key account"},
    "domain.deal:Deal.Lost": {"previous_stage": "proposal", "reason": "competitor"},
    "domain.deal:Deal.Reopened": {"stage": "negotiation", "previous_stage": "lost",
                                  "reason": "competitor failed the pilot"},
    "domain.deal:Deal.Won": {"amount": Decimal("101000.10"), "previous_stage": "negotiation", "owner_id": ANA},
    "domain.deal:Activity.Logged": {"originator_id": ident("call"), "kind": "call", "member_id": WEI,
                                    "deal_id": ident("deal"), "note": "intro call"},
}


def load_corpus(name: str) -> list[StoredEvent]:
    raw = json.loads((GOLDEN / name).read_text(encoding="utf-8"))
    return [
        StoredEvent(originator_id=UUID(e["originator_id"]), originator_version=e["originator_version"],
                    topic=e["topic"], state=e["state"].encode("utf-8"))
        for e in raw["events"]
    ]


def test_the_v1_corpus_still_decodes_to_the_same_facts(app: SalesPlanning) -> None:
    corpus = load_corpus("events-v1.json")
    assert {e.topic for e in corpus} == set(GOLDEN_V1)
    # Old history uses only topics that still resolve (a rename needs an alias first).
    assert {e.topic for e in corpus} <= set(EVENT_TOPICS)

    first: dict[str, Any] = {}
    for stored in corpus:
        event: Any = app.mapper.to_domain_event(stored)
        assert (event.originator_id, event.originator_version) == (stored.originator_id, stored.originator_version)
        assert isinstance(event.timestamp, datetime) and event.timestamp.tzinfo is not None
        first.setdefault(stored.topic, event)
    for topic, expected in GOLDEN_V1.items():
        actual = {name: getattr(first[topic], name) for name in expected}
        same(actual, expected, topic)
    children = first["domain.plan:Plan.TargetDecomposed"].children
    assert [(c["period"], c["committed"], c["stretch"]) for c in children] == [
        ("2025-Q1", Decimal("100000.00"), Decimal("120000.00")),
        ("2025-Q2", Decimal("200000.00"), Decimal("240000.00")),
        ("2025-Q3", Decimal("300000.00"), Decimal("360000.00")),
        ("2025-Q4", Decimal("400000.00"), Decimal("480000.00")),
    ]


def test_the_v1_corpus_replays_into_todays_aggregates(app: SalesPlanning) -> None:
    """Old events go through today's apply bodies: the replayed state is what v1 meant."""
    corpus = load_corpus("events-v1.json")
    app.recorder.insert_events(corpus)

    plan = app.get(Plan, ident("plan"))
    assert (plan.status, plan.published_version, plan.currency) == ("closed", 1, "EUR")
    assert sorted(t["committed"] for t in plan.targets.values()) == [
        Decimal("100000.00"), Decimal("150000.00"), Decimal("300000.00"), Decimal("400000.00"), Decimal("1000000.00")
    ]
    deal = app.get(Deal, ident("deal"))
    assert (deal.stage, deal.amount, deal.owner_id, deal.expected_close) == (
        "won", Decimal("101000.10"), ANA, date(2025, 10, 15)
    )
    task = app.get(Task, ident("task"))
    assert (task.status, task.progress, task.assignee_id, task.due) == ("done", 100, ANA, date(2025, 6, 15))
    assert app.get(Unit, ident("old-team")).active is False
    assert app.get(Unit, TEAM).parent_id == COMPANY
    assert app.get(Member, ident("ana")).unit_id == EAST
    assert app.get(Product, ident("product")).list_price == Decimal("42000.50")
    assert app.get(Activity, ident("call")).deal_id == ident("deal")
    # Every stored aggregate replays to the version its history ends at.
    last: dict[UUID, int] = {}
    for stored in corpus:
        assert isinstance(stored.originator_id, UUID)
        last[stored.originator_id] = max(last.get(stored.originator_id, 0), stored.originator_version)
    assert all(app.repository.get(entity_id).version == version for entity_id, version in last.items())


def test_the_v2_corpus_still_decodes_to_the_same_facts(app: SalesPlanning) -> None:
    """v2 added what one change moved (``effects``), where a child's difference went (``absorb``),
    how a removal treated its siblings (``mode``), each child's window and the period locks."""
    corpus = load_corpus("events-v2.json")
    assert {e.topic for e in corpus} == set(EVENT_TOPICS)
    by_topic: dict[str, list[Any]] = {}
    for stored in corpus:
        by_topic.setdefault(stored.topic, []).append(app.mapper.to_domain_event(stored))

    revised = by_topic["domain.plan:Plan.TargetRevised"][0]
    _, q2, q3, _ = (c["target_id"] for c in by_topic["domain.plan:Plan.TargetDecomposed"][0].children)
    assert (revised.target_id, revised.previous_committed, revised.committed, revised.absorb) == (
        q2, Decimal("200000.00"), Decimal("150000.00"), str(q3))
    same(revised.effects, [{"target_id": q3, "previous_committed": Decimal("300000.00"),
                            "committed": Decimal("350000.00"), "previous_stretch": Decimal("360000.00"),
                            "stretch": Decimal("360000.00"), "via": "absorbed"}], "effects")
    quarters = by_topic["domain.plan:Plan.TargetDecomposed"][0].children
    assert [(c["start"], c["end"]) for c in quarters] == [
        (date(2025, 1, 1), date(2025, 4, 1)), (date(2025, 4, 1), date(2025, 7, 1)),
        (date(2025, 7, 1), date(2025, 10, 1)), (date(2025, 10, 1), date(2026, 1, 1)),
    ]
    spare, march = by_topic["domain.plan:Plan.TargetRemoved"]
    assert (spare.mode, spare.effects) == ("subtree", [])
    jan, feb, _ = (c["target_id"] for c in by_topic["domain.plan:Plan.TargetDecomposed"][1].children)
    # Q1's 100,000 (upside 120,000) over January and February in proportion to 33,333.34 : 33,333.33.
    assert march.mode == "respread"
    assert [(e["target_id"], e["committed"], e["stretch"], e["via"]) for e in march.effects] == [
        (jan, Decimal("50000.01"), Decimal("60000.03"), "re_spread"),
        (feb, Decimal("49999.99"), Decimal("59999.97"), "re_spread"),
    ]
    locked = by_topic["domain.plan:Plan.PeriodLocked"][0]
    assert (locked.period, locked.start, locked.end, locked.plan_version, locked.reason) == (
        "2025-01", date(2025, 1, 1), date(2025, 2, 1), 1, "January closed")
    unlocked = by_topic["domain.plan:Plan.PeriodUnlocked"][0]
    assert (unlocked.period, unlocked.start, unlocked.end) == ("2025-01", date(2025, 1, 1), date(2025, 2, 1))


def test_the_v2_corpus_replays_into_todays_aggregates(app: SalesPlanning) -> None:
    corpus = load_corpus("events-v2.json")
    app.recorder.insert_events(corpus)
    plan = app.get(Plan, ident("plan"))
    assert (plan.status, plan.published_version, plan.locked_periods) == ("closed", 1, {})
    assert sorted(t["committed"] for t in plan.targets.values()) == [
        Decimal("49999.99"), Decimal("50000.01"), Decimal("100000.00"), Decimal("150000.00"), Decimal("350000.00"),
        Decimal("400000.00"), Decimal("1000000.00"),
    ]
    for parent_id, decompositions in plan.decompositions.items():
        for d in decompositions:
            assert sum(plan.targets[c]["committed"] for c in d["children"]) == plan.targets[parent_id]["committed"]
            assert sum(plan.targets[c]["stretch"] for c in d["children"]) == plan.targets[parent_id]["stretch"]


def write_corpus(path: Path) -> None:
    """Write a new corpus from today's schema; an existing corpus is history and is never overwritten."""
    if path.exists():
        raise SystemExit(f"{path} exists: a corpus is written once, a new schema gets a new file")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/golden.db"
        app = SalesPlanning(open_database(url))
        write_every_event(app)
        events = [
            {"topic": n.topic, "originator_id": str(n.originator_id), "originator_version": n.originator_version,
             "state": n.state.decode("utf-8")}
            for n in all_notifications(app)
        ]
        close_database(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"description": "salesplan stored events, as written by the schema of this file's version",
                "events": events}
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.test_stored_events tests/golden/events-vN.json")
    write_corpus(Path(sys.argv[1]))

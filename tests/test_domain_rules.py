"""Every invariant of the write side: a broken rule is refused with a domain error that names the
rule and the field, and nothing is written (the log's last position does not move).

The application-level tests run on SQLite and PostgreSQL; the pure arithmetic of
decomposition and periods is tested on its own, with hypothesis for the splits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.aggregate import SalesAggregate
from domain.application import CommandResult, Idempotency, SalesPlanning
from domain.deal import Deal
from domain.decomposition import split
from domain.errors import DomainError, NotFound, RuleViolation, ValidationError, VersionConflict
from domain.persistence import Database
from domain.plan import Plan
from domain.values import CLOSED_STAGES, STAGES, Period, Scope

ADMIN = "admin@acme.example"
A = TypeVar("A", bound=SalesAggregate)
E = TypeVar("E", bound=DomainError)


@contextmanager
def refused(app: SalesPlanning, error: type[E], rule: str, field: str | None) -> Iterator[pytest.ExceptionInfo[E]]:
    """The block must raise ``error`` naming ``rule`` and ``field``, and write nothing."""
    before = app.recorder.max_notification_id()
    with pytest.raises(error) as info:
        yield info
    assert (info.value.rule, info.value.field) == (rule, field), repr(info.value)
    assert info.value.message
    assert app.recorder.max_notification_id() == before


@dataclass(frozen=True)
class World:
    company: UUID
    team: UUID
    closed_team: UUID
    rep: UUID
    other_rep: UUID
    gone: UUID  # a rep who left: deactivated
    product: UUID
    account: UUID
    plan: UUID  # FY2025 in EUR, still a draft
    deal: UUID  # an open lead owned by rep


@pytest.fixture
def world(app: SalesPlanning) -> World:
    company = app.add_unit(name="Acme", actor=ADMIN).id
    team = app.add_unit(name="Team North", parent_id=company, actor=ADMIN).id
    closed_team = app.add_unit(name="Team South", parent_id=company, actor=ADMIN).id
    app.deactivate_unit(closed_team, reason="merged into North", actor=ADMIN)
    rep = app.add_member(name="Rita", role="rep", unit_id=team, actor=ADMIN).id
    other_rep = app.add_member(name="Omar", role="rep", unit_id=team, actor=ADMIN).id
    gone = app.add_member(name="Gus", role="rep", unit_id=team, actor=ADMIN).id
    app.deactivate_member(gone, reason="left the company", actor=ADMIN)
    product = app.add_product(name="Widget", product_line="Hardware", list_price="99.90", currency="EUR",
                              actor=ADMIN).id
    account = app.add_account(name="Globex", segment="mid-market", region="North", actor=ADMIN).id
    plan = app.draft_plan(name="FY2025", span="2025", currency="EUR", unit_id=company, actor=ADMIN).id
    deal = app.open_deal(name="Globex widgets", account_id=account, owner_id=rep, product_id=product,
                         amount="5000.00", currency="EUR", expected_close=date(2025, 6, 30), actor=ADMIN).id
    return World(company, team, closed_team, rep, other_rep, gone, product, account, plan, deal)


def new_target(app: SalesPlanning, world: World, period: str = "2025", committed: Any = "1000000.00",
               **kwargs: Any) -> UUID:
    result = app.set_target(world.plan, metric="revenue", period=period, scope=Scope(unit_id=world.company),
                            committed=committed, actor=ADMIN, **kwargs)
    return UUID(result.details["target_id"])


# --- money -------------------------------------------------------------------------------

BAD_MONEY: list[tuple[Any, type[DomainError], str]] = [
    ("-0.01", ValidationError, "money.negative"),
    (-5, ValidationError, "money.negative"),
    ("NaN", ValidationError, "money.not_finite"),
    (Decimal("NaN"), ValidationError, "money.not_finite"),
    (Decimal("sNaN"), ValidationError, "money.not_finite"),
    ("Infinity", ValidationError, "money.not_finite"),
    (Decimal("-Infinity"), ValidationError, "money.not_finite"),
    ("1.005", ValidationError, "money.too_precise"),
    (Decimal("0.001"), ValidationError, "money.too_precise"),
    ("1e15", ValidationError, "money.too_large"),
    (12.5, ValidationError, "money.type"),
    ("twelve", ValidationError, "money.not_a_number"),
]


def test_money_is_refused_when_negative_not_finite_or_finer_than_a_cent(app: SalesPlanning, world: World) -> None:
    target = new_target(app, world)
    commands: list[tuple[str, Callable[[Any], object]]] = [
        ("committed", lambda m: new_target(app, world, period="2025-Q1", committed=m)),
        ("stretch", lambda m: new_target(app, world, period="2025-Q2", stretch=m)),
        ("committed", lambda m: app.revise_target(world.plan, target_id=target, committed=m, actor=ADMIN)),
        ("amount", lambda m: app.open_deal(name="d", account_id=None, owner_id=world.rep, product_id=world.product,
                                           amount=m, currency="EUR", expected_close=date(2025, 3, 1), actor=ADMIN)),
        ("amount", lambda m: app.change_deal_amount(world.deal, amount=m, actor=ADMIN)),
        ("amount", lambda m: app.win_deal(world.deal, amount=m, actor=ADMIN)),
        ("list_price", lambda m: app.add_product(name="p", product_line="l", list_price=m, currency="EUR",
                                                 actor=ADMIN)),
        ("list_price", lambda m: app.change_list_price(world.product, list_price=m, actor=ADMIN)),
    ]
    for field, command in commands:
        for value, error, rule in BAD_MONEY:
            with refused(app, error, rule, field):
                command(value)

    # Trailing zeros beyond the cent are not extra precision: they are normalised away.
    app.change_deal_amount(world.deal, amount="5100.000", actor=ADMIN)
    assert app.get(Deal, world.deal).amount == Decimal("5100.00")
    # A count metric counts whole deals.
    with refused(app, ValidationError, "target.not_whole", "committed"):
        app.set_target(world.plan, metric="deals_won", period="2025", scope=Scope(unit_id=world.company),
                       committed="2.5", actor=ADMIN)
    with refused(app, ValidationError, "target.value_negative", "committed"):
        app.set_target(world.plan, metric="new_deals", period="2025", scope=Scope(unit_id=world.company),
                       committed=Decimal("NaN"), actor=ADMIN)
    with refused(app, RuleViolation, "target.stretch_below_committed", "stretch"):
        new_target(app, world, period="2025-Q3", committed="100.00", stretch="99.99")


# --- decomposition -----------------------------------------------------------------------


def test_a_decomposition_must_sum_exactly_and_its_weights_to_one(app: SalesPlanning, world: World) -> None:
    parent = new_target(app, world, committed="10.00")
    months = ["2025-01", "2025-02", "2025-03"]

    def decompose(**kwargs: Any) -> CommandResult:
        return app.decompose_target(world.plan, parent_id=parent, by="period", parts=months, actor=ADMIN, **kwargs)

    with refused(app, RuleViolation, "decomposition.sum_mismatch", "values"):
        decompose(method="values", values=[Decimal("3.33"), Decimal("3.33"), Decimal("3.33")])
    with refused(app, ValidationError, "decomposition.value", "values/1"):
        decompose(method="values", values=[Decimal("3.33"), Decimal("3.335"), Decimal("3.335")])
    with refused(app, ValidationError, "decomposition.value", "values/0"):
        decompose(method="values", values=[Decimal("-1.00"), Decimal("5.50"), Decimal("5.50")])
    with refused(app, ValidationError, "decomposition.value", "values/0"):
        decompose(method="values", values=[Decimal("NaN"), Decimal("5.00"), Decimal("5.00")])
    with refused(app, ValidationError, "decomposition.value", "values/1"):
        decompose(method="values", values=[Decimal("1e30"), Decimal("-1e30"), Decimal("10.00")])
    with refused(app, ValidationError, "decomposition.values_count", "values"):
        decompose(method="values", values=[Decimal("5.00"), Decimal("5.00")])

    with refused(app, RuleViolation, "decomposition.weights_sum", "weights"):
        decompose(method="weights", weights=[Decimal("0.3"), Decimal("0.3"), Decimal("0.3")])
    with refused(app, RuleViolation, "decomposition.weights_sum", "weights"):
        decompose(method="weights", weights=[Decimal("0.5"), Decimal("0.5"), Decimal("0.0001")])
    for broken in ([Decimal("1.5"), Decimal("-0.5"), Decimal(0)], [Decimal("NaN"), Decimal(1), Decimal(0)],
                   [Decimal("Infinity"), Decimal(0), Decimal(0)]):
        with refused(app, ValidationError, "decomposition.weight_negative", "weights"):
            decompose(method="weights", weights=broken)

    with refused(app, RuleViolation, "decomposition.history_empty", "history"):
        decompose(method="history", history=[Decimal(0)] * 3)
    with refused(app, ValidationError, "decomposition.history_negative", "history"):
        decompose(method="history", history=[Decimal("NaN"), Decimal(1), Decimal(1)])
    with refused(app, ValidationError, "decomposition.method", "method"):
        decompose(method="gut feeling")
    with refused(app, ValidationError, "decomposition.residue_to", "residue_to"):
        decompose(method="equal", residue_to=3)
    with refused(app, RuleViolation, "decomposition.period_outside", "parts/1"):
        app.decompose_target(world.plan, parent_id=parent, by="period", parts=["2025-Q1", "2026-Q1"], actor=ADMIN)
    with refused(app, RuleViolation, "decomposition.period_outside", "parts/0"):
        app.decompose_target(world.plan, parent_id=parent, by="period", parts=["2025"], actor=ADMIN)
    with refused(app, ValidationError, "decomposition.parts", "parts"):
        app.decompose_target(world.plan, parent_id=parent, by="period", parts=["2025-01", "2025-01"], actor=ADMIN)

    # The exact values are accepted as given.
    result = decompose(method="values", values=[Decimal("3.33"), Decimal("3.33"), Decimal("3.34")])
    plan = app.get(Plan, world.plan)
    assert [plan.targets[UUID(c)]["committed"] for c in result.details["child_ids"]] == [
        Decimal("3.33"), Decimal("3.33"), Decimal("3.34")
    ]


def test_a_ratio_does_not_sum_and_a_member_target_is_not_split_by_people(app: SalesPlanning, world: World) -> None:
    rate = UUID(app.set_target(world.plan, metric="win_rate", period="2025", scope=Scope(unit_id=world.company),
                               committed="0.35", actor=ADMIN).details["target_id"])
    with refused(app, RuleViolation, "decomposition.ratio_metric", "parent_id"):
        app.decompose_target(world.plan, parent_id=rate, by="period", parts=["2025-Q1", "2025-Q2"], actor=ADMIN)
    with refused(app, ValidationError, "target.win_rate_range", "committed"):
        app.set_target(world.plan, metric="win_rate", period="2025-Q1", scope=Scope(unit_id=world.company),
                       committed="1.2", actor=ADMIN)
    mine = UUID(app.set_target(world.plan, metric="revenue", period="2025", scope=Scope(member_id=world.rep),
                               committed="100.00", actor=ADMIN).details["target_id"])
    with refused(app, RuleViolation, "decomposition.member_scope", "parent_id"):
        app.decompose_target(world.plan, parent_id=mine, by="member", parts=[str(world.other_rep)], actor=ADMIN)
    with refused(app, NotFound, "target.not_found", "parent_id"):
        app.decompose_target(world.plan, parent_id=uuid4(), by="period", parts=["2025-Q1"], actor=ADMIN)


# --- the target tree ---------------------------------------------------------------------


def test_one_target_per_metric_period_and_scope(app: SalesPlanning, world: World) -> None:
    first = new_target(app, world, period="2025-Q1")
    with refused(app, RuleViolation, "target.duplicate", "scope") as info:
        new_target(app, world, period="2025-Q1", committed="5.00")
    assert info.value.details["target_id"] == str(first)

    # Narrowed to a product line it is another cell of the plan; twice is a duplicate again.
    narrowed = Scope(unit_id=world.company, product_line="Hardware")
    app.set_target(world.plan, metric="revenue", period="2025-Q1", scope=narrowed, committed="10.00", actor=ADMIN)
    with refused(app, RuleViolation, "target.duplicate", "scope"):
        app.set_target(world.plan, metric="revenue", period="2025-Q1", scope=narrowed, committed="9.00", actor=ADMIN)

    # A trailing newline is not another name for the same period.
    with refused(app, ValidationError, "period.format", "period"):
        new_target(app, world, period="2025-Q1\n")

    # A decomposition may not create a cell that already exists either.
    new_target(app, world, period="2025-02")
    with refused(app, RuleViolation, "target.duplicate", "parts/1"):
        app.decompose_target(world.plan, parent_id=first, by="period", parts=["2025-01", "2025-02", "2025-03"],
                             actor=ADMIN)


def test_a_target_lies_inside_the_plan_span_and_in_the_plan_currency(app: SalesPlanning, world: World) -> None:
    with refused(app, RuleViolation, "target.period_outside_span", "period"):
        new_target(app, world, period="2026-Q1")
    # ISO week 1 of 2025 starts on Monday 30 December 2024: not inside the fiscal year 2025.
    with refused(app, RuleViolation, "target.period_outside_span", "period"):
        new_target(app, world, period="2025-W01")
    with refused(app, ValidationError, "period.format", "period"):
        new_target(app, world, period="2025-Q5")
    with refused(app, RuleViolation, "currency.mismatch", "currency"):
        new_target(app, world, period="2025-Q1", currency="USD")
    for malformed in ("eur", "EURO", "EUR\n"):
        with refused(app, ValidationError, "currency.format", "currency"):
            app.draft_plan(name="odd currency", span="2025", currency=malformed, unit_id=world.company, actor=ADMIN)
    with refused(app, ValidationError, "plan.span_kind", "span"):
        app.draft_plan(name="a month", span="2025-03", currency="EUR", unit_id=world.company, actor=ADMIN)
    new_target(app, world, period="2025-W02", currency="EUR")


def test_a_published_plan_changes_only_with_a_reason(app: SalesPlanning, world: World) -> None:
    target = new_target(app, world)
    app.publish_plan(world.plan, actor=ADMIN)
    changes: list[Callable[[str | None], object]] = [
        lambda why: app.revise_target(world.plan, target_id=target, committed="900000.00", reason=why, actor=ADMIN),
        lambda why: new_target(app, world, period="2025-Q1", reason=why),
        lambda why: app.decompose_target(world.plan, parent_id=target, by="period", parts=["2025-Q1"],
                                         reason=why, actor=ADMIN),
        lambda why: app.remove_target(world.plan, target_id=target, reason=why, actor=ADMIN),
    ]
    for change in changes:
        for missing in (None, "", "  \n "):
            with refused(app, RuleViolation, "reason.required", "reason"):
                change(missing)
    assert app.get(Plan, world.plan).published_version == 1
    app.revise_target(world.plan, target_id=target, committed="900000.00", reason="market shrank", actor=ADMIN)
    with refused(app, RuleViolation, "target.unchanged", "committed"):
        app.revise_target(world.plan, target_id=target, committed="900000.00", reason="again", actor=ADMIN)


def test_a_closed_plan_never_changes(app: SalesPlanning, world: World) -> None:
    target = new_target(app, world)
    app.close_plan(world.plan, reason="abandoned", actor=ADMIN)
    for change in (
        lambda: new_target(app, world, period="2025-Q1", reason="late"),
        lambda: app.revise_target(world.plan, target_id=target, committed="1.00", reason="late", actor=ADMIN),
        lambda: app.decompose_target(world.plan, parent_id=target, by="period", parts=["2025-Q1"], reason="late",
                                     actor=ADMIN),
        lambda: app.remove_target(world.plan, target_id=target, reason="late", actor=ADMIN),
        lambda: app.publish_plan(world.plan, actor=ADMIN),
        lambda: app.close_plan(world.plan, actor=ADMIN),
    ):
        with refused(app, RuleViolation, "plan.closed", None):
            change()


# --- organisation ------------------------------------------------------------------------


def test_unknown_or_inactive_members_and_units_are_refused(app: SalesPlanning, world: World) -> None:
    nobody, nowhere = uuid4(), uuid4()
    plan_target = new_target(app, world)
    cases: list[tuple[Callable[[], object], type[DomainError], str, str]] = [
        (lambda: app.add_unit(name="x", parent_id=nowhere, actor=ADMIN), NotFound, "unit.not_found", "parent_id"),
        (lambda: app.add_unit(name="x", parent_id=world.closed_team, actor=ADMIN),
         RuleViolation, "unit.inactive", "parent_id"),
        (lambda: app.add_member(name="x", role="rep", unit_id=nowhere, actor=ADMIN), NotFound, "unit.not_found",
         "unit_id"),
        # A member's id is not a unit's.
        (lambda: app.add_member(name="x", role="rep", unit_id=world.rep, actor=ADMIN), NotFound, "unit.not_found",
         "unit_id"),
        (lambda: app.add_member(name="x", role="rep", unit_id=world.closed_team, actor=ADMIN), RuleViolation,
         "unit.inactive", "unit_id"),
        (lambda: app.add_member(name="x", role="intern", unit_id=world.team, actor=ADMIN), RuleViolation,
         "member.role", "role"),
        (lambda: app.move_member(world.rep, unit_id=world.closed_team, actor=ADMIN), RuleViolation,
         "unit.inactive", "unit_id"),
        (lambda: app.rename_member(world.gone, name="Gustav", actor=ADMIN), RuleViolation, "member.inactive",
         "member_id"),
        (lambda: app.rename_unit(world.closed_team, name="South", actor=ADMIN), RuleViolation, "unit.inactive",
         "unit_id"),
        (lambda: app.move_unit(world.team, parent_id=world.team, reason="loop", actor=ADMIN), RuleViolation,
         "unit.cycle", "parent_id"),
        (lambda: app.draft_plan(name="x", span="2025", currency="EUR", unit_id=world.closed_team, actor=ADMIN),
         RuleViolation, "unit.inactive", "unit_id"),
        (lambda: app.set_target(world.plan, metric="revenue", period="2025", scope=Scope(member_id=world.gone),
                                committed="1.00", actor=ADMIN), RuleViolation, "member.inactive", "scope/member_id"),
        (lambda: app.set_target(world.plan, metric="revenue", period="2025", scope=Scope(unit_id=nowhere),
                                committed="1.00", actor=ADMIN), NotFound, "unit.not_found", "scope/unit_id"),
        (lambda: app.decompose_target(world.plan, parent_id=plan_target, by="member",
                                      parts=[str(world.rep), str(world.gone)], actor=ADMIN),
         RuleViolation, "member.inactive", "parts/1"),
        (lambda: app.decompose_target(world.plan, parent_id=plan_target, by="member", parts=[str(nobody)],
                                      actor=ADMIN), NotFound, "member.not_found", "parts/0"),
        (lambda: app.decompose_target(world.plan, parent_id=plan_target, by="unit", parts=["Team North"],
                                      actor=ADMIN), RuleViolation, "decomposition.part_id", "parts/0"),
        (lambda: app.open_deal(name="x", account_id=None, owner_id=world.gone, product_id=world.product,
                               amount="1.00", currency="EUR", expected_close=date(2025, 1, 1), actor=ADMIN),
         RuleViolation, "member.inactive", "owner_id"),
        (lambda: app.open_deal(name="x", account_id=nobody, owner_id=world.rep, product_id=world.product,
                               amount="1.00", currency="EUR", expected_close=date(2025, 1, 1), actor=ADMIN),
         NotFound, "account.not_found", "account_id"),
        (lambda: app.reassign_deal(world.deal, owner_id=nobody, reason="x", actor=ADMIN), NotFound,
         "member.not_found", "owner_id"),
        (lambda: app.create_task(title="x", assignee_id=world.gone, due=date(2025, 1, 1), actor=ADMIN),
         RuleViolation, "member.inactive", "assignee_id"),
        (lambda: app.log_activity(kind="call", member_id=world.gone, actor=ADMIN), RuleViolation,
         "member.inactive", "member_id"),
        (lambda: app.log_activity(kind="call", member_id=world.team, actor=ADMIN), NotFound, "member.not_found",
         "member_id"),
    ]
    for command, error, rule, field in cases:
        with refused(app, error, rule, field):
            command()

    task = app.create_task(title="call Globex", assignee_id=world.rep, due=date(2025, 1, 1), actor=ADMIN).id
    with refused(app, RuleViolation, "member.inactive", "assignee_id"):
        app.reassign_task(task, assignee_id=world.gone, reason="cover", actor=ADMIN)


# --- the pipeline ------------------------------------------------------------------------


def test_stage_transitions_follow_the_pipeline(app: SalesPlanning, world: World) -> None:
    deal = world.deal
    with refused(app, RuleViolation, "deal.illegal_transition", "stage") as same:
        app.change_deal_stage(deal, stage="lead", actor=ADMIN)
    assert same.value.details["allowed_next_stages"] == [s for s in STAGES if s != "lead"]
    with refused(app, ValidationError, "stage.unknown", "stage"):
        app.change_deal_stage(deal, stage="signed", actor=ADMIN)
    with refused(app, RuleViolation, "deal.not_closed", None) as still_open:
        app.reopen_deal(deal, reason="why not", actor=ADMIN)
    assert "won" in still_open.value.details["allowed_next_stages"]
    with refused(app, RuleViolation, "deal.opened_closed", "stage"):
        app.open_deal(name="x", account_id=None, owner_id=world.rep, product_id=world.product, amount="1.00",
                      currency="EUR", expected_close=date(2025, 1, 1), stage="won", actor=ADMIN)

    app.change_deal_stage(deal, stage="negotiation", actor=ADMIN)
    with refused(app, RuleViolation, "reason.required", "reason"):
        app.change_deal_stage(deal, stage="needs_analysis", actor=ADMIN)

    # Won is terminal: nothing moves it except a reopening with a reason.
    app.win_deal(deal, actor=ADMIN)
    terminal: list[Callable[[], object]] = [
        lambda: app.change_deal_stage(deal, stage="negotiation", reason="buyer wants to renegotiate", actor=ADMIN),
        lambda: app.change_deal_stage(deal, stage="won", actor=ADMIN),
        lambda: app.lose_deal(deal, reason="changed our mind", actor=ADMIN),
        lambda: app.win_deal(deal, actor=ADMIN),
        lambda: app.change_deal_amount(deal, amount="1.00", reason="x", actor=ADMIN),
        lambda: app.change_deal_expected_close(deal, expected_close=date(2025, 12, 1), reason="x", actor=ADMIN),
        lambda: app.reassign_deal(deal, owner_id=world.other_rep, reason="x", actor=ADMIN),
    ]
    for change in terminal:
        with refused(app, RuleViolation, "deal.closed", None) as closed:
            change()
        assert closed.value.details["allowed_next_stages"] == []
    with refused(app, RuleViolation, "reason.required", "reason"):
        app.reopen_deal(deal, reason=None, actor=ADMIN)
    with refused(app, RuleViolation, "deal.reopen_stage", "stage"):
        app.reopen_deal(deal, reason="invoice bounced", stage="lost", actor=ADMIN)

    app.reopen_deal(deal, reason="invoice bounced", stage="proposal", actor=ADMIN)
    app.lose_deal(deal, reason="customer went bankrupt", actor=ADMIN)
    with refused(app, RuleViolation, "deal.closed", None):
        app.win_deal(deal, actor=ADMIN)
    assert app.get(Deal, deal).stage in CLOSED_STAGES


# --- time --------------------------------------------------------------------------------

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def test_an_effective_time_may_not_lie_in_the_future_beyond_the_clock_skew(database: Database) -> None:
    app = SalesPlanning(database, clock=lambda: NOW)
    company = app.add_unit(name="Acme", actor=ADMIN, effective_at=NOW - timedelta(days=30)).id
    with refused(app, RuleViolation, "time.in_future", "effective_at"):
        app.add_unit(name="Tomorrow", parent_id=company, actor=ADMIN, effective_at=NOW + timedelta(days=1))
    with refused(app, RuleViolation, "time.in_future", "effective_at"):
        app.rename_unit(company, name="Acme AG", actor=ADMIN, effective_at=NOW + timedelta(minutes=5, microseconds=1))
    with refused(app, ValidationError, "time.naive", "effective_at"):
        app.rename_unit(company, name="Acme AG", actor=ADMIN, effective_at=datetime(2025, 5, 1, 12, 0))
    # Five minutes ahead is clock skew between machines, not the future; an offset is just a notation.
    skewed = app.rename_unit(company, name="Acme AG", actor=ADMIN,
                             effective_at=(NOW + timedelta(minutes=5)).astimezone(timezone(timedelta(hours=8))))
    assert skewed.version == 2
    # Without an effective time the command happened now, by the application's clock.
    team = app.add_unit(name="North", parent_id=company, actor=ADMIN)
    assert app.repository.get(team.id).last_effective_at == NOW


def test_a_change_may_not_take_effect_before_the_entitys_previous_change(app: SalesPlanning, world: World) -> None:
    def last_effective(entity_id: UUID) -> datetime:
        at: datetime = app.repository.get(entity_id).last_effective_at
        return at

    target = new_target(app, world)
    task = app.create_task(title="call Globex", assignee_id=world.rep, due=date(2025, 1, 1), actor=ADMIN).id
    changes: list[tuple[UUID, Callable[[datetime], object]]] = [
        (world.team, lambda t: app.rename_unit(world.team, name="North", actor=ADMIN, effective_at=t)),
        (world.rep, lambda t: app.move_member(world.rep, unit_id=world.company, actor=ADMIN, effective_at=t)),
        (world.product, lambda t: app.change_list_price(world.product, list_price="89.90", actor=ADMIN,
                                                        effective_at=t)),
        (world.account, lambda t: app.reclassify_account(world.account, segment="enterprise", region="North",
                                                         actor=ADMIN, effective_at=t)),
        (world.plan, lambda t: app.revise_target(world.plan, target_id=target, committed="2.00", actor=ADMIN,
                                                 effective_at=t)),
        (world.plan, lambda t: app.publish_plan(world.plan, actor=ADMIN, effective_at=t)),
        (task, lambda t: app.report_task_progress(task, progress=10, actor=ADMIN, effective_at=t)),
        (world.deal, lambda t: app.change_deal_stage(world.deal, stage="qualified", actor=ADMIN, effective_at=t)),
        (world.deal, lambda t: app.win_deal(world.deal, actor=ADMIN, effective_at=t)),
    ]
    for entity_id, change in changes:
        previous = last_effective(entity_id)
        with refused(app, RuleViolation, "time.before_previous_change", "effective_at"):
            change(previous - timedelta(microseconds=1))
        # At the same moment is fine: the order of the log breaks the tie.
        change(previous)
        assert last_effective(entity_id) == previous


# --- concurrent writers ------------------------------------------------------------------


def test_two_applications_that_read_the_same_version_cannot_both_write_it(database: Database, world: World) -> None:
    mine, theirs = SalesPlanning(database), SalesPlanning(database)
    version = mine.get(Deal, world.deal).version
    assert theirs.get(Deal, world.deal).version == version

    mine.change_deal_amount(world.deal, amount="6000.00", actor="mine", expected_version=version)
    with refused(theirs, VersionConflict, "concurrency.version_conflict", None) as conflict:
        theirs.change_deal_amount(world.deal, amount="7000.00", actor="theirs", expected_version=version)
    assert conflict.value.current_version == version + 1
    assert conflict.value.details == {
        "entity_id": str(world.deal), "expected_version": version, "current_version": version + 1
    }
    deal = theirs.get(Deal, world.deal)
    assert (deal.version, deal.amount) == (version + 1, Decimal("6000.00"))


def race(database: Database, make: Callable[[SalesPlanning, int], Callable[[], CommandResult]],
         apps: list[SalesPlanning] | None = None) -> list[CommandResult | DomainError]:
    """Two threads, each with its own application, released together by a barrier."""
    contenders = apps or [SalesPlanning(database), SalesPlanning(database)]
    barrier = threading.Barrier(len(contenders), timeout=30)

    def contend(i: int) -> CommandResult | DomainError:
        command = make(contenders[i], i)
        barrier.wait()
        try:
            return command()
        except DomainError as e:
            return e

    with ThreadPoolExecutor(max_workers=len(contenders)) as pool:
        return list(pool.map(contend, range(len(contenders))))


def test_racing_writers_without_expected_version_lose_no_update(database: Database, world: World) -> None:
    app = SalesPlanning(database)
    version = app.get(Deal, world.deal).version
    amounts = ["6000.00", "7000.00"]
    outcomes = race(database, lambda a, i: lambda: a.change_deal_amount(world.deal, amount=amounts[i], actor=f"w{i}"))

    won = [o for o in outcomes if isinstance(o, CommandResult)]
    lost = [o for o in outcomes if not isinstance(o, CommandResult)]
    assert won, outcomes
    assert all(isinstance(o, VersionConflict) and o.current_version > version for o in lost), lost
    if not database.is_postgres:
        # SQLite takes the write lock at BEGIN: the second writer waits, then reads the first's change.
        assert len(won) == 2
    changes: list[Any] = list(app.events.get(world.deal, gt=version))
    assert len(changes) == len(won) and app.get(Deal, world.deal).version == version + len(won)
    assert sorted(str(e.amount) for e in changes) == sorted(
        amounts[i] for i, o in enumerate(outcomes) if isinstance(o, CommandResult)
    )


def test_racing_writers_with_expected_version_exactly_one_wins(database: Database, world: World) -> None:
    app = SalesPlanning(database)
    version = app.get(Deal, world.deal).version
    outcomes = race(database, lambda a, i: lambda: a.change_deal_stage(
        world.deal, stage="qualified" if i else "proposal", actor=f"w{i}", expected_version=version))

    won = [o for o in outcomes if isinstance(o, CommandResult)]
    lost = [o for o in outcomes if isinstance(o, VersionConflict)]
    assert (len(won), len(lost)) == (1, 1), outcomes
    assert won[0].version == version + 1 and lost[0].current_version == version + 1
    assert app.get(Deal, world.deal).version == version + 1


class PausingPlanning(SalesPlanning):
    """Waits at a barrier after loading an entity: both writers hold the same version before either saves."""

    # The library names a subclass after itself, and its tables after its name: keep the store.
    name = SalesPlanning.name

    def __init__(self, database: Database, barrier: threading.Barrier) -> None:
        super().__init__(database)
        self.barrier = barrier

    def get(self, cls: type[A], entity_id: UUID, field: str | None = None) -> A:
        aggregate = super().get(cls, entity_id, field)
        self.barrier.wait()
        return aggregate


# SQLite takes the write lock at BEGIN IMMEDIATE: there two writers never hold one version at
# once (the second would wait at BEGIN while the first waits at the barrier).
postgres_only = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def overlapping(database: Database) -> list[SalesPlanning]:
    assert database.is_postgres
    barrier = threading.Barrier(2, timeout=30)
    return [PausingPlanning(database, barrier), PausingPlanning(database, barrier)]


@postgres_only
def test_writers_holding_the_same_version_cannot_both_append(database: Database, world: World) -> None:
    apps = overlapping(database)
    version = SalesPlanning(database).get(Deal, world.deal).version
    outcomes = race(database, lambda a, i: lambda: a.change_deal_amount(
        world.deal, amount=f"{6000 + i}.00", actor=f"w{i}"), apps)

    won = [o for o in outcomes if isinstance(o, CommandResult)]
    lost = [o for o in outcomes if isinstance(o, VersionConflict)]
    # Neither passed an expected version: the store's (id, version) key still lets only one append.
    assert (len(won), len(lost)) == (1, 1), outcomes
    assert lost[0].current_version == version + 1
    assert lost[0].details["expected_version"] is None
    assert SalesPlanning(database).get(Deal, world.deal).version == version + 1


@postgres_only
def test_a_retried_request_racing_itself_appends_once(database: Database, world: World) -> None:
    apps = overlapping(database)
    app = SalesPlanning(database)
    before = app.recorder.max_notification_id()
    key = Idempotency("retry-1", "stage=qualified")
    outcomes = race(database, lambda a, i: lambda: a.change_deal_stage(
        world.deal, stage="qualified", actor="client", idempotency=key), apps)

    assert all(isinstance(o, CommandResult) for o in outcomes), outcomes
    assert outcomes[0] == outcomes[1]
    assert len(app.recorder.select_notifications(start=(before or 0) + 1, limit=10)) == 1


# --- idempotency -------------------------------------------------------------------------


def test_the_same_request_twice_is_answered_once(app: SalesPlanning, world: World) -> None:
    before = app.recorder.max_notification_id() or 0
    key = Idempotency("add-east-1", "name=East")
    first = app.add_unit(name="East", parent_id=world.company, actor=ADMIN, idempotency=key)
    again = app.add_unit(name="East", parent_id=world.company, actor=ADMIN, idempotency=key)
    assert again == first
    assert app.recorder.max_notification_id() == first.position
    assert len(app.recorder.select_notifications(start=before + 1, limit=10)) == 1

    change = Idempotency("stage-1", "qualified")
    moved = app.change_deal_stage(world.deal, stage="qualified", actor=ADMIN, idempotency=change)
    assert app.change_deal_stage(world.deal, stage="qualified", actor=ADMIN, idempotency=change) == moved
    assert app.get(Deal, world.deal).version == moved.version

    with refused(app, RuleViolation, "idempotency.key_reused", "Idempotency-Key"):
        app.add_unit(name="West", parent_id=world.company, actor=ADMIN, idempotency=Idempotency("add-east-1", "W"))


def test_a_refused_request_does_not_use_up_its_key(app: SalesPlanning, world: World) -> None:
    key = "lose-1"
    with refused(app, RuleViolation, "reason.required", "reason"):
        app.lose_deal(world.deal, reason=None, actor=ADMIN, idempotency=Idempotency(key, "no reason"))
    lost = app.lose_deal(world.deal, reason="budget cut", actor=ADMIN, idempotency=Idempotency(key, "budget cut"))
    assert app.get(Deal, world.deal).stage == "lost" and lost.version == app.get(Deal, world.deal).version


# --- pure arithmetic: decomposition ------------------------------------------------------

CENTS = st.integers(min_value=0, max_value=10**17 - 1).map(lambda c: Decimal(c).scaleb(-2))
COUNTS = st.integers(min_value=0, max_value=10**9).map(Decimal)


@st.composite
def exact_weights(draw: st.DrawFn, parts: int) -> list[Decimal]:
    """Weights that sum to exactly 1: cuts of 10^d into ``parts`` pieces, scaled down."""
    digits = draw(st.integers(min_value=0, max_value=27))
    whole = 10**digits
    cuts = sorted(draw(st.lists(st.integers(0, whole), min_size=parts - 1, max_size=parts - 1)))
    bounds = [0, *cuts, whole]
    return [Decimal(bounds[i + 1] - bounds[i]).scaleb(-digits) for i in range(parts)]


def check_split(total: Decimal, shares: list[Decimal], exact: list[Fraction], places: int, residue_to: int) -> None:
    quantum = Fraction(1, 10**places)
    assert sum(shares) == total
    assert all(s >= 0 and s == s.quantize(Decimal(1).scaleb(-places)) for s in shares)
    # Every share but the stated one is its exact part rounded down; the residue (fewer
    # quanta than parts) lands on the stated one.
    floors = [Fraction(int(x / quantum)) * quantum for x in exact]
    for i, (share, floor) in enumerate(zip(shares, floors, strict=True)):
        if i != residue_to:
            assert Fraction(share) == floor
    assert 0 <= Fraction(shares[residue_to]) - floors[residue_to] < len(shares) * quantum


@settings(database=None, deadline=None, max_examples=300)
@given(data=st.data(), money=st.booleans(), parts=st.integers(min_value=1, max_value=12))
def test_an_equal_split_sums_exactly_and_is_never_negative(data: st.DataObject, money: bool, parts: int) -> None:
    total = data.draw(CENTS if money else COUNTS)
    residue_to = data.draw(st.integers(0, parts - 1))
    places = 2 if money else 0
    shares = split(total, parts=parts, method="equal", places=places, residue_to=residue_to)
    check_split(total, shares, [Fraction(total) / parts] * parts, places, residue_to)


@settings(database=None, deadline=None, max_examples=300)
@given(data=st.data(), money=st.booleans(), parts=st.integers(min_value=1, max_value=12))
def test_a_weighted_split_sums_exactly_and_is_never_negative(data: st.DataObject, money: bool, parts: int) -> None:
    total = data.draw(CENTS if money else COUNTS)
    weights = data.draw(exact_weights(parts))
    residue_to = data.draw(st.integers(0, parts - 1))
    places = 2 if money else 0
    shares = split(total, parts=parts, method="weights", weights=weights, places=places, residue_to=residue_to)
    check_split(total, shares, [Fraction(total) * Fraction(w) for w in weights], places, residue_to)


@settings(database=None, deadline=None, max_examples=300)
@given(data=st.data(), money=st.booleans(), parts=st.integers(min_value=1, max_value=12))
def test_a_split_by_history_sums_exactly_and_is_never_negative(data: st.DataObject, money: bool, parts: int) -> None:
    total = data.draw(CENTS if money else COUNTS)
    # Up to the money limit: beyond Decimal's default 28 digits the products must still be exact.
    actuals = data.draw(st.lists(CENTS, min_size=parts, max_size=parts).filter(lambda h: sum(h) > 0))
    residue_to = data.draw(st.integers(0, parts - 1))
    places = 2 if money else 0
    shares = split(total, parts=parts, method="history", history=actuals, places=places, residue_to=residue_to)
    base = sum(Fraction(h) for h in actuals)
    check_split(total, shares, [Fraction(total) * Fraction(h) / base for h in actuals], places, residue_to)


def test_explicit_values_are_kept_and_large_splits_stay_exact() -> None:
    values = [Decimal("0.00"), Decimal("7.50"), Decimal("2.50")]
    assert split(Decimal("10.00"), parts=3, method="values", values=values, places=2) == values
    assert split(Decimal(10), parts=4, method="equal", places=0, residue_to=3) == [2, 2, 2, 4]
    # Equal history is an equal split, also where the products outgrow Decimal's default 28 digits.
    big, half = Decimal("1780058631588.46"), Decimal("890029315794.23")
    assert split(big, parts=2, method="history", history=[Decimal("890029315794.22")] * 2, places=2) == [half, half]
    assert split(Decimal("0.01"), parts=2, method="history", history=[Decimal("0.01"), Decimal("1e26")], places=2,
                 residue_to=0) == [Decimal("0.01"), Decimal("0.00")]
    # Thirds written with 29 digits come close to 1, but not exactly: rounding may not hide it.
    with pytest.raises(RuleViolation) as near:
        split(Decimal(10), parts=3, method="weights", weights=[Decimal("0." + "3" * 29)] * 3, places=2)
    assert near.value.rule == "decomposition.weights_sum"
    with pytest.raises(ValidationError) as info:
        split(Decimal(10), parts=0, method="equal", places=0)
    assert info.value.rule == "decomposition.no_parts"


# --- pure arithmetic: periods ------------------------------------------------------------


@pytest.mark.parametrize(("key", "kind", "start", "end"), [
    ("2026", "year", date(2026, 1, 1), date(2027, 1, 1)),
    ("2026-Q2", "quarter", date(2026, 4, 1), date(2026, 7, 1)),
    ("2026-Q4", "quarter", date(2026, 10, 1), date(2027, 1, 1)),
    ("2024-02", "month", date(2024, 2, 1), date(2024, 3, 1)),
    ("2026-12", "month", date(2026, 12, 1), date(2027, 1, 1)),
    ("2026-W14", "week", date(2026, 3, 30), date(2026, 4, 6)),
    ("2026-W01", "week", date(2025, 12, 29), date(2026, 1, 5)),
    # Years with 53 ISO weeks: those starting on a Thursday, or leap years starting on a Wednesday.
    ("2026-W53", "week", date(2026, 12, 28), date(2027, 1, 4)),
    ("2020-W53", "week", date(2020, 12, 28), date(2021, 1, 4)),
    ("2015-W53", "week", date(2015, 12, 28), date(2016, 1, 4)),
])
def test_a_period_is_parsed_from_its_key(key: str, kind: str, start: date, end: date) -> None:
    period = Period.parse(key)
    assert (period.key, period.kind, period.start, period.end) == (key, kind, start, end)


@pytest.mark.parametrize(("key", "rule"), [
    ("2021-W53", "period.week_range"),  # 2021 has 52 ISO weeks
    ("2026-W00", "period.week_range"),
    ("2026-13", "period.month_range"),
    ("2026-00", "period.month_range"),
    ("2026-Q5", "period.format"),
    ("26-Q1", "period.format"),
    ("2026-3", "period.format"),
    ("2026 ", "period.format"),
    ("2026-Q1\n", "period.format"),
    ("1899", "period.year_range"),
])
def test_a_malformed_period_is_refused(key: str, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        Period.parse(key, "period")
    assert (info.value.rule, info.value.field) == (rule, "period")


def test_a_period_is_tiled_by_its_children() -> None:
    year = Period.parse("2026")
    assert [p.key for p in year.children("quarter")] == ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"]
    months = year.children("month")
    assert [p.key for p in months] == [f"2026-{m:02d}" for m in range(1, 13)]
    assert months[0].start == year.start and months[-1].end == year.end
    assert all(a.end == b.start for a, b in pairwise(months))
    assert [p.key for p in Period.parse("2026-Q1").children("month")] == ["2026-01", "2026-02", "2026-03"]
    assert all(year.contains(p) for p in months) and not Period.parse("2026-Q1").contains(months[3])

    # Weeks belong to the period they start in: March 2026 holds W10..W14 (W14 ends in April).
    assert [p.key for p in Period.parse("2026-03").children("week")] == [f"2026-W{w}" for w in range(10, 15)]
    weeks = year.children("week")
    assert (len(weeks), weeks[0].key, weeks[-1].key) == (52, "2026-W02", "2026-W53")
    assert all(year.contains_date(w.start) for w in weeks)
    assert [p.key for p in Period.parse("2021").children("week")][-1] == "2021-W52"

    for coarse, kind in (("2026-Q2", "quarter"), ("2026-03", "month"), ("2026-03", "year"), ("2026", "day")):
        with pytest.raises(RuleViolation) as info:
            Period.parse(coarse).children(kind)
        assert info.value.rule == "decomposition.period_kind"


def test_the_elapsed_share_paces_a_period_linearly() -> None:
    q1 = Period.parse("2026-Q1")  # 90 days
    utc = timezone.utc
    assert q1.elapsed_share(datetime(2025, 12, 1, tzinfo=utc)) == 0
    assert q1.elapsed_share(q1.start_at) == 0
    assert q1.elapsed_share(datetime(2026, 2, 15, tzinfo=utc)) == Decimal("0.5")
    assert q1.elapsed_share(datetime(2026, 1, 10, tzinfo=utc)) == Decimal("0.1")
    assert q1.elapsed_share(datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))) == 0
    assert q1.elapsed_share(q1.end_at) == 1
    assert q1.elapsed_share(datetime(2026, 6, 1, tzinfo=utc)) == 1
    assert isinstance(q1.elapsed_share(datetime(2026, 3, 1, tzinfo=utc)), Decimal)

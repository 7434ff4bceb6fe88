"""Stories of a sales organisation, told through the application and run on SQLite and PostgreSQL.

Acme Sales plans its fiscal year 2025: a company with two regions and three teams, reps and a
manager. The year is planned, decomposed, published, revised in April with a reason and closed
in January; a framework deal with Müller GmbH walks the pipeline, slips, is lost and won back;
tasks move between people; a rep changes teams mid-quarter. All dates lie in the past, so
every effective time is a legitimate back-dated one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID

import pytest

from domain.application import SalesPlanning
from domain.deal import Activity, Deal
from domain.errors import DomainError, NotFound, RuleViolation, ValidationError
from domain.organisation import Member, Unit
from domain.plan import Plan
from domain.task import Task
from domain.values import Period, Scope

MANAGER = "maria@acme.example"
ANNA, BEN, CHEN = "anna@acme.example", "ben@acme.example", "chen@acme.example"


def at(day: str, time: str = "09:00") -> datetime:
    """A business moment in Berlin winter time (stored as UTC)."""
    return datetime.fromisoformat(f"{day}T{time}:00+01:00")


def history(app: SalesPlanning, entity_id: UUID) -> list[Any]:
    """The entity's stored events, oldest first: what an auditor reads."""
    return list(app.events.get(entity_id))


def refuse(app: SalesPlanning, call: Any, error: type[DomainError], rule: str) -> DomainError:
    """Run a command that must be refused; check the rule and that nothing was written."""
    before = app.recorder.max_notification_id()
    with pytest.raises(error) as refused:
        call()
    assert refused.value.rule == rule
    assert app.recorder.max_notification_id() == before
    return refused.value


@dataclass(frozen=True)
class Org:
    company: UUID
    east: UUID
    west: UUID
    east_enterprise: UUID
    east_smb: UUID
    west_enterprise: UUID
    maria: UUID  # head of sales East, a manager
    anna: UUID
    ben: UUID
    chen: UUID
    dana: UUID


def build_org(app: SalesPlanning) -> Org:
    founded = at("2024-12-02")

    def unit(name: str, parent: UUID | None = None) -> UUID:
        return app.add_unit(name=name, parent_id=parent, actor=MANAGER, effective_at=founded).id

    def member(name: str, role: str, team: UUID) -> UUID:
        email = f"{name.lower()}@acme.example"
        return app.add_member(name=name, role=role, unit_id=team, email=email, actor=MANAGER, effective_at=founded).id

    company = unit("Acme Sales")
    east, west = unit("East", company), unit("West", company)
    east_enterprise, east_smb = unit("East Enterprise", east), unit("East SMB", east)
    west_enterprise = unit("West Enterprise", west)
    return Org(
        company, east, west, east_enterprise, east_smb, west_enterprise,
        maria=member("Maria", "manager", east),
        anna=member("Anna", "rep", east_enterprise),
        ben=member("Ben", "rep", east_enterprise),
        chen=member("Chen", "rep", east_smb),
        dana=member("Dana", "rep", west_enterprise),
    )


@pytest.fixture
def org(app: SalesPlanning) -> Org:
    return build_org(app)


def children_of(plan: Plan, parent_id: UUID) -> list[dict[str, Any]]:
    return [t for t in plan.targets.values() if t["parent_id"] == parent_id]


# --- organisation ------------------------------------------------------------------------


def test_acme_builds_its_unit_tree_and_staffs_its_teams(app: SalesPlanning, org: Org) -> None:
    def path_to_root(unit_id: UUID) -> list[str]:
        names = []
        current: UUID | None = unit_id
        while current is not None:
            unit = app.get(Unit, current)
            names.append(unit.name)
            current = unit.parent_id
        return names

    assert path_to_root(org.east_smb) == ["East SMB", "East", "Acme Sales"]
    assert path_to_root(org.west_enterprise) == ["West Enterprise", "West", "Acme Sales"]

    anna, maria = app.get(Member, org.anna), app.get(Member, org.maria)
    assert (anna.name, anna.role, anna.unit_id, anna.email) == ("Anna", "rep", org.east_enterprise, "anna@acme.example")
    assert (maria.role, maria.unit_id) == ("manager", org.east)
    assert anna.active and maria.active
    # The back-dated founding day is the business time; UTC is how it is kept.
    assert anna.last_effective_at == at("2024-12-02")
    assert anna.last_effective_at.utcoffset() == timedelta(0)


def test_a_rep_moves_team_mid_quarter_without_rewriting_where_she_was_before(app: SalesPlanning, org: Org) -> None:
    # Chen backfills the West team from 15 March; her March deals before that stay with East SMB.
    app.move_member(org.chen, unit_id=org.west_enterprise, reason="backfill for West Enterprise", actor=MANAGER,
                    effective_at=at("2025-03-15"))

    chen = app.get(Member, org.chen)
    assert chen.unit_id == org.west_enterprise
    moved = history(app, org.chen)[-1]
    assert isinstance(moved, Member.Moved)
    assert (moved.unit_id, moved.previous_unit_id, moved.reason) == (
        org.west_enterprise, org.east_smb, "backfill for West Enterprise"
    )
    assert moved.effective_at == at("2025-03-15")
    # As of 10 March she was still in East SMB: the version before the move says so.
    assert app.repository.get(org.chen, version=moved.originator_version - 1).unit_id == org.east_smb

    # A move cannot be slipped in before the change already recorded, nor go nowhere.
    refuse(app, lambda: app.move_member(org.chen, unit_id=org.east_enterprise, actor=MANAGER,
                                        effective_at=at("2025-03-01")), RuleViolation, "time.before_previous_change")
    refuse(app, lambda: app.move_member(org.chen, unit_id=org.west_enterprise, actor=MANAGER,
                                        effective_at=at("2025-04-01")), RuleViolation, "member.same_unit")

    # When East SMB is disbanded nobody can be moved into it.
    app.deactivate_unit(org.east_smb, reason="merged into East Enterprise", actor=MANAGER, effective_at=at("2025-04-01"))
    error = refuse(app, lambda: app.move_member(org.dana, unit_id=org.east_smb, actor=MANAGER,
                                                effective_at=at("2025-04-02")), RuleViolation, "unit.inactive")
    assert error.field == "unit_id"


# --- the plan ----------------------------------------------------------------------------


def test_the_year_is_planned_decomposed_published_revised_with_a_reason_and_closed(
    app: SalesPlanning, org: Org
) -> None:
    plan_id = app.draft_plan(name="FY2025 Acme Sales", span="2025", currency="EUR", unit_id=org.company,
                             actor=MANAGER, effective_at=at("2024-12-10")).id
    drafting = at("2024-12-11")

    # The board wants 10M revenue in 2025, with an upside of 11.5M.
    year = UUID(app.set_target(
        plan_id, metric="revenue", period="2025", scope=Scope(unit_id=org.company), committed="10000000.00",
        stretch="11500000.00", currency="EUR", actor=MANAGER, effective_at=drafting,
    ).details["target_id"])

    # Seasonality: a slow first quarter, a strong year end.
    quarters = app.decompose_target(
        plan_id, parent_id=year, by="period", parts=["2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4"], method="weights",
        weights=[Decimal("0.20"), Decimal("0.25"), Decimal("0.25"), Decimal("0.30")], residue_to=3,
        actor=MANAGER, effective_at=drafting,
    )
    q1, q2, q3, q4 = (UUID(c) for c in quarters.details["child_ids"])
    plan = app.get(Plan, plan_id)
    assert [plan.targets[q]["committed"] for q in (q1, q2, q3, q4)] == [
        Decimal("2000000.00"), Decimal("2500000.00"), Decimal("2500000.00"), Decimal("3000000.00")
    ]
    assert [plan.targets[q]["stretch"] for q in (q1, q2, q3, q4)] == [
        Decimal("2300000.00"), Decimal("2875000.00"), Decimal("2875000.00"), Decimal("3450000.00")
    ]

    # Q1 is spread evenly over its months; March, the closing month, takes the odd cents.
    months = app.decompose_target(
        plan_id, parent_id=q1, by="period", parts=["2025-01", "2025-02", "2025-03"], method="equal", residue_to=2,
        actor=MANAGER, effective_at=drafting,
    )
    jan, feb, mar = (UUID(c) for c in months.details["child_ids"])
    plan = app.get(Plan, plan_id)
    assert [plan.targets[m]["committed"] for m in (jan, feb, mar)] == [
        Decimal("666666.66"), Decimal("666666.66"), Decimal("666666.68")
    ]
    assert [plan.targets[m]["stretch"] for m in (jan, feb, mar)] == [
        Decimal("766666.66"), Decimal("766666.66"), Decimal("766666.68")
    ]
    assert [plan.targets[m]["period"] for m in (jan, feb, mar)] == ["2025-01", "2025-02", "2025-03"]

    # Q3 goes to the East reps in proportion to what each sold in Q3 2024; Anna, the top
    # seller, takes the rounding cent.
    reps = app.decompose_target(
        plan_id, parent_id=q3, by="member", parts=[str(org.anna), str(org.ben), str(org.chen)], method="history",
        history=[Decimal("410000"), Decimal("295000"), Decimal("180000")], residue_to=0,
        reason="weighted by Q3 2024 actuals", actor=MANAGER, effective_at=drafting,
    )
    anna_q3, ben_q3, chen_q3 = (UUID(c) for c in reps.details["child_ids"])
    plan = app.get(Plan, plan_id)
    assert [plan.targets[r]["committed"] for r in (anna_q3, ben_q3, chen_q3)] == [
        Decimal("1158192.10"), Decimal("833333.33"), Decimal("508474.57")
    ]
    # The upside above committed (2,875,000 − 2,500,000 = 375,000) is split the same way:
    # 173,728.81 + 125,000.00 + 76,271.18 (floored), and Anna takes the odd cent.
    assert [plan.targets[r]["stretch"] for r in (anna_q3, ben_q3, chen_q3)] == [
        Decimal("1331920.92"), Decimal("958333.33"), Decimal("584745.75")
    ]
    assert plan.targets[ben_q3]["scope"]["member_id"] == org.ben
    assert plan.targets[ben_q3]["period"] == "2025-Q3"

    # Every decomposition sums exactly, in Decimal, to its parent: committed and stretch.
    for parent in (year, q1, q3):
        kids = children_of(plan, parent)
        assert sum(k["committed"] for k in kids) == plan.targets[parent]["committed"]
        assert sum(k["stretch"] for k in kids) == plan.targets[parent]["stretch"]
        assert all(isinstance(k["committed"], Decimal) for k in kids)
    decomposed = history(app, plan_id)[-1]
    assert isinstance(decomposed, Plan.TargetDecomposed)
    assert (decomposed.by, decomposed.method, decomposed.residue_to) == ("member", "history", anna_q3)

    # The board approves: v1 is the baseline.
    v1 = app.publish_plan(plan_id, note="approved by the board", actor=MANAGER, effective_at=at("2024-12-20"))
    assert v1.details == {"plan_version": 1}
    plan = app.get(Plan, plan_id)
    assert (plan.status, plan.published_version, plan.unpublished_changes) == ("published", 1, False)

    # April: the Müller GmbH framework deal slips from Q2 into Q4. A revision without a
    # reason is refused, and nothing is written: the plan is still at the same version.
    version_before = app.get(Plan, plan_id).version
    error = refuse(app, lambda: app.revise_target(plan_id, target_id=q2, committed="2200000.00", actor=MANAGER,
                                                  effective_at=at("2025-04-03")), RuleViolation, "reason.required")
    assert error.field == "reason"
    refuse(app, lambda: app.revise_target(plan_id, target_id=q2, committed="2200000.00", reason="   ", actor=MANAGER,
                                          effective_at=at("2025-04-03")), RuleViolation, "reason.required")
    assert app.get(Plan, plan_id).version == version_before

    why = "Müller GmbH framework deal slipped from June to October"
    # One revision moves the 300,000 from Q2 to Q4: Q4, a sibling, absorbs the difference.
    app.revise_target(plan_id, target_id=q2, committed="2200000.00", absorb=str(q4), reason=why, actor=MANAGER,
                      effective_at=at("2025-04-03"))
    plan = app.get(Plan, plan_id)
    assert plan.version == version_before + 1
    assert (plan.targets[q2]["committed"], plan.targets[q2]["stretch"]) == (Decimal("2200000.00"), Decimal("2875000.00"))
    # Q4's upside does not move: only the committed value moved between the quarters.
    assert (plan.targets[q4]["committed"], plan.targets[q4]["stretch"]) == (Decimal("3300000.00"), Decimal("3450000.00"))
    # The year still adds up: the revision moved the target, it did not lose it.
    assert sum(k["committed"] for k in children_of(plan, year)) == Decimal("10000000.00")
    assert plan.targets[year]["committed"] == Decimal("10000000.00")
    assert plan.unpublished_changes and plan.published_version == 1

    revised = [e for e in history(app, plan_id) if isinstance(e, Plan.TargetRevised)]
    assert [(e.target_id, e.previous_committed, e.committed, e.absorb, e.reason, e.actor) for e in revised] == [
        (q2, Decimal("2500000.00"), Decimal("2200000.00"), str(q4), why, MANAGER),
    ]
    assert revised[0].effects == [{
        "target_id": q4, "previous_committed": Decimal("3000000.00"), "committed": Decimal("3300000.00"),
        "previous_stretch": Decimal("3450000.00"), "stretch": Decimal("3450000.00"), "via": "absorbed",
    }]

    v2 = app.publish_plan(plan_id, note="April rolling adjustment", actor=MANAGER, effective_at=at("2025-04-04"))
    assert v2.details == {"plan_version": 2}
    assert app.get(Plan, plan_id).published_version == 2
    refuse(app, lambda: app.publish_plan(plan_id, actor=MANAGER, effective_at=at("2025-04-05")),
           RuleViolation, "plan.nothing_to_publish")

    # The year is over: the plan is closed and nothing about it can change any more.
    app.close_plan(plan_id, reason="FY2025 ended", actor=MANAGER, effective_at=at("2026-01-15"))
    assert app.get(Plan, plan_id).status == "closed"
    later = at("2026-01-20")
    for change in (
        lambda: app.revise_target(plan_id, target_id=q2, committed="1.00", reason="too late", actor=MANAGER,
                                  effective_at=later),
        lambda: app.set_target(plan_id, metric="new_deals", period="2025", scope=Scope(unit_id=org.company),
                               committed=100, reason="too late", actor=MANAGER, effective_at=later),
        lambda: app.decompose_target(plan_id, parent_id=q2, by="period", parts=["2025-04", "2025-05", "2025-06"],
                                     reason="too late", actor=MANAGER, effective_at=later),
        lambda: app.remove_target(plan_id, target_id=q4, reason="too late", actor=MANAGER, effective_at=later),
        lambda: app.publish_plan(plan_id, actor=MANAGER, effective_at=later),
        lambda: app.close_plan(plan_id, reason="again", actor=MANAGER, effective_at=later),
    ):
        refuse(app, change, RuleViolation, "plan.closed")

    audit = [(type(e).__name__, e.effective_at) for e in history(app, plan_id)]
    assert [name for name, _ in audit] == [
        "Drafted", "TargetSet", "TargetDecomposed", "TargetDecomposed", "TargetDecomposed", "Published",
        "TargetRevised", "Published", "Closed",
    ]
    assert [when for _, when in audit] == sorted(when for _, when in audit)


def test_a_draft_changes_freely_but_a_removed_target_takes_its_decomposition_with_it(
    app: SalesPlanning, org: Org
) -> None:
    plan_id = app.draft_plan(name="East Q2", span="2025-Q2", currency="EUR", unit_id=org.east, actor=MANAGER,
                             effective_at=at("2025-03-20")).id
    quarter = UUID(app.set_target(plan_id, metric="new_deals", period="2025-Q2", scope=Scope(unit_id=org.east),
                                  committed=90, actor=MANAGER, effective_at=at("2025-03-20")).details["target_id"])
    app.decompose_target(plan_id, parent_id=quarter, by="period", parts=["2025-04", "2025-05", "2025-06"],
                         actor=MANAGER, effective_at=at("2025-03-20"))
    # Counts never split into half deals: 90 new deals are 30 a month.
    assert sorted(t["committed"] for t in app.get(Plan, plan_id).targets.values()) == [30, 30, 30, 90]

    # Before publication no reason is needed; the draft is still being worked on.
    app.revise_target(plan_id, target_id=quarter, committed=120, stretch=150, actor=MANAGER,
                      effective_at=at("2025-03-21"))
    app.remove_target(plan_id, target_id=quarter, actor=MANAGER, effective_at=at("2025-03-22"))
    removed = history(app, plan_id)[-1]
    assert isinstance(removed, Plan.TargetRemoved)
    assert removed.removed_ids[0] == quarter and len(removed.removed_ids) == 4
    assert app.get(Plan, plan_id).targets == {}
    refuse(app, lambda: app.publish_plan(plan_id, actor=MANAGER, effective_at=at("2025-03-23")),
           RuleViolation, "plan.no_targets")


# --- the pipeline ------------------------------------------------------------------------


@pytest.fixture
def muller_deal(app: SalesPlanning, org: Org) -> UUID:
    account = app.add_account(name="Müller GmbH", segment="enterprise", region="East", actor=MANAGER,
                              effective_at=at("2025-01-10")).id
    product = app.add_product(name="Platform licence", product_line="Platform", list_price="40000.00",
                              currency="EUR", actor=MANAGER, effective_at=at("2025-01-10")).id
    return app.open_deal(
        name="Müller framework agreement", account_id=account, owner_id=org.anna, product_id=product,
        amount="120000.00", currency="EUR", expected_close=date(2025, 6, 20), actor=ANNA,
        effective_at=at("2025-02-03"),
    ).id


def test_a_deal_walks_the_pipeline_slips_is_lost_and_won_back(app: SalesPlanning, org: Org, muller_deal: UUID) -> None:
    deal_id, anna = muller_deal, ANNA
    deal = app.get(Deal, deal_id)
    # The deal remembers where it was sold as it was known when it opened.
    assert (deal.stage, deal.product_line, deal.region, deal.segment) == ("lead", "Platform", "East", "enterprise")
    assert (deal.amount, deal.expected_close) == (Decimal("120000.00"), date(2025, 6, 20))

    app.change_deal_stage(deal_id, stage="qualified", actor=anna, effective_at=at("2025-02-10"))
    app.change_deal_stage(deal_id, stage="proposal", actor=anna, effective_at=at("2025-03-01"))

    # A new CFO reopens the requirements: going back needs a reason.
    error = refuse(app, lambda: app.change_deal_stage(deal_id, stage="qualified", actor=anna,
                                                      effective_at=at("2025-03-15")), RuleViolation, "reason.required")
    assert error.field == "reason"
    app.change_deal_stage(deal_id, stage="qualified", reason="new CFO re-opens the requirements", actor=anna,
                          effective_at=at("2025-03-15"))
    app.change_deal_stage(deal_id, stage="proposal", actor=anna, effective_at=at("2025-04-01"))

    # The deal slips out of Q2: its expected close moves from June to October.
    app.change_deal_expected_close(deal_id, expected_close=date(2025, 10, 15), reason="budget moved to H2",
                                   actor=anna, effective_at=at("2025-06-18"))
    slipped = history(app, deal_id)[-1]
    assert isinstance(slipped, Deal.ExpectedCloseChanged)
    q2 = Period.parse("2025-Q2")
    assert q2.contains_date(slipped.previous_expected_close) and not q2.contains_date(slipped.expected_close)

    # Lost to a competitor; losing needs a reason, and a lost deal cannot move on its own.
    refuse(app, lambda: app.lose_deal(deal_id, reason=None, actor=anna, effective_at=at("2025-07-01")),
           RuleViolation, "reason.required")
    app.lose_deal(deal_id, reason="chose a competitor's cheaper offer", actor=anna, effective_at=at("2025-07-01"))
    assert app.get(Deal, deal_id).stage == "lost"
    error = refuse(app, lambda: app.change_deal_stage(deal_id, stage="negotiation", actor=anna,
                                                      effective_at=at("2025-07-02")), RuleViolation, "deal.closed")
    assert error.details["allowed_next_stages"] == []
    refuse(app, lambda: app.win_deal(deal_id, actor=anna, effective_at=at("2025-07-02")), RuleViolation, "deal.closed")

    # The competitor fails the pilot: the deal is reopened, with a reason, and won.
    refuse(app, lambda: app.reopen_deal(deal_id, reason="", actor=anna, effective_at=at("2025-09-01")),
           RuleViolation, "reason.required")
    app.reopen_deal(deal_id, reason="competitor failed the pilot", stage="negotiation", actor=anna,
                    effective_at=at("2025-09-01"))
    assert app.get(Deal, deal_id).stage == "negotiation"
    won = app.win_deal(deal_id, amount="110000.00", actor=anna, effective_at=at("2025-10-10"))

    deal = app.get(Deal, deal_id)
    assert (deal.stage, deal.amount, deal.version) == ("won", Decimal("110000.00"), won.version)
    trail = [(type(e).__name__, getattr(e, "stage", None), getattr(e, "reason", None)) for e in history(app, deal_id)]
    assert trail == [
        ("Opened", "lead", None),
        ("StageChanged", "qualified", ""),
        ("StageChanged", "proposal", ""),
        ("StageChanged", "qualified", "new CFO re-opens the requirements"),
        ("StageChanged", "proposal", ""),
        ("ExpectedCloseChanged", None, "budget moved to H2"),
        ("Lost", None, "chose a competitor's cheaper offer"),
        ("Reopened", "negotiation", "competitor failed the pilot"),
        ("Won", None, None),
    ]
    final = history(app, deal_id)[-1]
    assert isinstance(final, Deal.Won)
    assert (final.amount, final.previous_stage, final.owner_id) == (Decimal("110000.00"), "negotiation", org.anna)


def test_a_deal_changes_hands_and_value_on_the_way(app: SalesPlanning, org: Org, muller_deal: UUID) -> None:
    refuse(app, lambda: app.reassign_deal(muller_deal, owner_id=org.ben, reason=None, actor=MANAGER,
                                          effective_at=at("2025-02-05")), RuleViolation, "reason.required")
    app.reassign_deal(muller_deal, owner_id=org.ben, reason="Anna moves to key accounts", actor=MANAGER,
                      effective_at=at("2025-02-05"))
    app.change_deal_amount(muller_deal, amount="135000.50", actor=MANAGER, effective_at=at("2025-02-06"))
    deal = app.get(Deal, muller_deal)
    assert (deal.owner_id, deal.amount) == (org.ben, Decimal("135000.50"))
    refuse(app, lambda: app.change_deal_amount(muller_deal, amount="135000.50", actor=MANAGER,
                                               effective_at=at("2025-02-07")), RuleViolation, "deal.unchanged")
    # A deal is won by its owner at the time: Ben, not Anna.
    app.change_deal_stage(muller_deal, stage="won", actor=MANAGER, effective_at=at("2025-02-28"))
    won = history(app, muller_deal)[-1]
    assert isinstance(won, Deal.Won)
    assert (won.owner_id, won.amount) == (org.ben, Decimal("135000.50"))


def test_reps_log_calls_visits_and_demos(app: SalesPlanning, org: Org, muller_deal: UUID) -> None:
    call = app.log_activity(kind="call", member_id=org.anna, deal_id=muller_deal, note="intro call with the CFO",
                            actor=ANNA, effective_at=at("2025-02-04"))
    visit = app.log_activity(kind="visit", member_id=org.chen, actor=CHEN,
                             effective_at=at("2025-02-05"))
    logged = app.get(Activity, call.id)
    assert (logged.kind, logged.member_id, logged.deal_id, logged.note) == (
        "call", org.anna, muller_deal, "intro call with the CFO"
    )
    assert app.get(Activity, visit.id).deal_id is None
    assert visit.version == 1 and visit.position > call.position

    error = refuse(app, lambda: app.log_activity(kind="lunch", member_id=org.anna, actor=MANAGER),
                   ValidationError, "activity.kind")
    assert error.details["allowed"] == ["call", "visit", "meeting", "demo", "email"]
    refuse(app, lambda: app.log_activity(kind="demo", member_id=org.anna, deal_id=org.company, actor=MANAGER),
           NotFound, "deal.not_found")


# --- the action plan ---------------------------------------------------------------------


def test_a_task_toward_a_target_is_handed_over_rescheduled_and_done(app: SalesPlanning, org: Org) -> None:
    plan_id = app.draft_plan(name="East SMB Q2", span="2025-Q2", currency="EUR", unit_id=org.east_smb,
                             actor=MANAGER, effective_at=at("2025-03-25")).id
    target = UUID(app.set_target(plan_id, metric="activities", period="2025-05", scope=Scope(unit_id=org.east_smb),
                                 committed=40, actor=MANAGER, effective_at=at("2025-03-25")).details["target_id"])
    task_id = app.create_task(title="Run 40 demos for East SMB in May", assignee_id=org.chen, due=date(2025, 5, 31),
                              plan_id=plan_id, target_id=target, actor=MANAGER, effective_at=at("2025-04-01")).id
    task = app.get(Task, task_id)
    assert (task.plan_id, task.target_id, task.status, task.progress) == (plan_id, target, "open", 0)

    refuse(app, lambda: app.reassign_task(task_id, assignee_id=org.ben, reason=None, actor=MANAGER,
                                          effective_at=at("2025-04-10")), RuleViolation, "reason.required")
    app.reassign_task(task_id, assignee_id=org.ben, reason="Chen is on parental leave in May", actor=MANAGER,
                      effective_at=at("2025-04-10"))
    refuse(app, lambda: app.reschedule_task(task_id, due=date(2025, 6, 15), reason="", actor=MANAGER,
                                            effective_at=at("2025-05-20")), RuleViolation, "reason.required")
    app.reschedule_task(task_id, due=date(2025, 6, 15), reason="trade fair moved to June", actor=MANAGER,
                        effective_at=at("2025-05-20"))

    app.report_task_progress(task_id, progress=0, actor=BEN, effective_at=at("2025-05-21"))
    app.report_task_progress(task_id, progress=55, note="22 demos held", actor=BEN,
                             effective_at=at("2025-06-01"))
    for bad in (101, -1):
        refuse(app, partial(app.report_task_progress, task_id, progress=bad, actor=MANAGER,
                            effective_at=at("2025-06-02")), ValidationError, "task.progress_range")
    app.complete_task(task_id, outcome="42 demos held, 9 new deals", actor=BEN,
                      effective_at=at("2025-06-14"))

    task = app.get(Task, task_id)
    assert (task.assignee_id, task.due, task.status, task.progress, task.outcome) == (
        org.ben, date(2025, 6, 15), "done", 100, "42 demos held, 9 new deals"
    )
    trail = [(type(e).__name__, getattr(e, "reason", None)) for e in history(app, task_id)]
    assert trail == [
        ("Created", None),
        ("Reassigned", "Chen is on parental leave in May"),
        ("Rescheduled", "trade fair moved to June"),
        ("ProgressReported", None),
        ("ProgressReported", None),
        ("Completed", None),
    ]
    progress = [e for e in history(app, task_id) if isinstance(e, Task.ProgressReported)]
    assert [(e.previous_progress, e.progress) for e in progress] == [(0, 0), (0, 55)]
    # Done is done.
    refuse(app, lambda: app.reschedule_task(task_id, due=date(2025, 7, 1), reason="more", actor=MANAGER,
                                            effective_at=at("2025-06-20")), RuleViolation, "task.closed")


def test_a_task_nobody_needs_any_more_is_cancelled_with_a_reason(app: SalesPlanning, org: Org) -> None:
    task_id = app.create_task(title="Call every lapsed SMB customer", assignee_id=org.chen, due=date(2025, 3, 31),
                              actor=MANAGER, effective_at=at("2025-02-01")).id
    refuse(app, lambda: app.cancel_task(task_id, reason=None, actor=MANAGER, effective_at=at("2025-02-15")),
           RuleViolation, "reason.required")
    app.cancel_task(task_id, reason="campaign replaced by the spring mailing", actor=MANAGER,
                    effective_at=at("2025-02-15"))
    assert app.get(Task, task_id).status == "cancelled"
    refuse(app, lambda: app.complete_task(task_id, actor=MANAGER, effective_at=at("2025-02-16")),
           RuleViolation, "task.closed")

    # A task for a target names a target of that plan.
    plan_id = app.draft_plan(name="Q2", span="2025-Q2", currency="EUR", unit_id=org.east, actor=MANAGER,
                             effective_at=at("2025-03-01")).id
    error = refuse(app, lambda: app.create_task(title="t", assignee_id=org.chen, due=date(2025, 4, 1), plan_id=plan_id,
                                                target_id=org.company, actor=MANAGER), NotFound, "target.not_found")
    assert error.field == "target_id"

"""A seeded, realistic history with back-dated entries, member moves, revisions and reopened deals.

Used by the time-travel tests: every entity's effective times increase, but entities are
written out of business order (late entries), so "as of T" and "known at P" really differ.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

from domain.application import SalesPlanning
from domain.errors import DomainError
from domain.plan import Plan
from domain.values import OPEN_STAGES, Scope

START = datetime(2025, 1, 2, 9, tzinfo=UTC)


@dataclass
class GeneratedHistory:
    plan_id: UUID
    units: list[UUID]
    members: list[UUID]
    deals: list[UUID] = field(default_factory=list)
    effective_times: list[datetime] = field(default_factory=list)


def generate_history(app: SalesPlanning, *, seed: int, commands: int) -> GeneratedHistory:
    rnd = random.Random(seed)
    # Where a child's difference goes is drawn apart, so the rest of a seed's history stays as it was.
    where = random.Random(seed + 1)
    last: dict[UUID, datetime] = {}

    def after(entity: UUID | None, *, max_days: int = 20) -> datetime:
        """An effective time after the entity's last change, sometimes well before 'today' (late entry)."""
        base = last.get(entity, START) if entity else START
        return base + timedelta(days=rnd.randint(0, max_days), hours=rnd.randint(1, 8))

    def mark(entity: UUID, at: datetime) -> None:
        last[entity] = at

    actor = "generator"
    company = app.add_unit(name="Company", actor=actor, effective_at=START).id
    mark(company, START)
    regions = []
    for name in ("East", "West", "North"):
        r = app.add_unit(name=name, parent_id=company, actor=actor, effective_at=START).id
        mark(r, START)
        regions.append(r)
    teams = []
    for i, region in enumerate(regions):
        for j in range(2):
            t = app.add_unit(name=f"Team {i}-{j}", parent_id=region, actor=actor, effective_at=START).id
            mark(t, START)
            teams.append(t)
    members = []
    for i in range(9):
        m = app.add_member(name=f"Rep {i}", role="rep", unit_id=teams[i % len(teams)], actor=actor,
                           effective_at=START).id
        mark(m, START)
        members.append(m)
    products = []
    for name, line in (("Basic", "GTX"), ("Pro", "GTX"), ("Mini", "MG")):
        products.append(app.add_product(name=name, product_line=line, list_price="1000", currency="EUR",
                                        actor=actor, effective_at=START).id)
    accounts = []
    for name, segment, region in (("Acme", "enterprise", "US"), ("Beta", "smb", "EU"), ("Gamma", "smb", "US")):
        accounts.append(app.add_account(name=name, segment=segment, region=region, actor=actor,
                                        effective_at=START).id)
    plan = app.draft_plan(name="FY2025", span="2025", currency="EUR", unit_id=company, actor=actor,
                          effective_at=START).id
    mark(plan, START)
    targets: list[UUID] = []

    def plan_change(make: object) -> None:
        nonlocal targets
        at = after(plan, max_days=10)
        try:
            result = make(at)  # type: ignore[operator]
        except DomainError:
            return
        mark(plan, at)
        for key in ("target_id",):
            if key in result.details:
                targets.append(UUID(result.details[key]))
        targets.extend(UUID(c) for c in result.details.get("child_ids", []))

    for metric, committed in (("revenue", "50000"), ("deals_won", "12"), ("new_deals", "30"),
                              ("activities", "40"), ("win_rate", "0.5"), ("average_order_value", "2000")):
        plan_change(lambda at, m=metric, c=committed: app.set_target(
            plan, metric=m, period="2025", scope=Scope(unit_id=company), committed=c, actor=actor, effective_at=at))
    plan_change(lambda at: app.decompose_target(
        plan, parent_id=targets[0], by="period", parts=["2025-Q1", "2025-Q2", "2025-Q3", "2025-Q4"],
        method="weights", weights=[Decimal("0.2"), Decimal("0.3"), Decimal("0.3"), Decimal("0.2")], actor=actor,
        effective_at=at))
    q1 = targets[-4]
    plan_change(lambda at: app.decompose_target(
        plan, parent_id=q1, by="unit", parts=[str(r) for r in regions], actor=actor, effective_at=at))
    plan_change(lambda at: app.set_target(
        plan, metric="revenue", period="2025-Q1", scope=Scope(member_id=members[0], product_line="GTX"),
        committed="5000", actor=actor, effective_at=at))
    plan_change(lambda at: app.set_target(
        plan, metric="deals_won", period="2025-Q2", scope=Scope(unit_id=teams[0], segment="smb"),
        committed="3", actor=actor, effective_at=at))
    plan_change(lambda at: app.publish_plan(plan, actor=actor, effective_at=at))

    history = GeneratedHistory(plan, [company, *regions, *teams], members)
    deal_state: dict[UUID, str] = {}
    for _ in range(commands):
        roll = rnd.random()
        try:
            if roll < 0.25 or not history.deals:
                owner = rnd.choice(members)
                at = after(owner, max_days=25)
                deal = app.open_deal(
                    name="deal", account_id=rnd.choice([*accounts, None]), owner_id=owner,
                    product_id=rnd.choice(products), amount=str(rnd.randint(5, 60) * 100),
                    currency=rnd.choice(["EUR", "EUR", "EUR", "USD"]),
                    expected_close=(at + timedelta(days=rnd.randint(10, 120))).date(),
                    actor=actor, effective_at=at).id
                mark(deal, at)
                history.deals.append(deal)
                deal_state[deal] = "lead"
            elif roll < 0.55:
                deal = rnd.choice(history.deals)
                at = after(deal)
                stage = deal_state[deal]
                if stage in ("won", "lost"):
                    if rnd.random() < 0.3:
                        app.reopen_deal(deal, reason="customer came back", actor=actor, effective_at=at)
                        deal_state[deal] = "negotiation"
                        mark(deal, at)
                    continue
                choice = rnd.random()
                if choice < 0.35:
                    app.win_deal(deal, actor=actor, effective_at=at,
                                 amount=str(rnd.randint(5, 60) * 100) if rnd.random() < 0.3 else None)
                    deal_state[deal] = "won"
                elif choice < 0.5:
                    app.lose_deal(deal, reason="price", actor=actor, effective_at=at)
                    deal_state[deal] = "lost"
                elif choice < 0.7:
                    app.change_deal_expected_close(deal, expected_close=(at + timedelta(days=rnd.randint(5, 90))).date(),
                                                   reason="slipped", actor=actor, effective_at=at)
                elif choice < 0.8:
                    app.change_deal_amount(deal, amount=str(rnd.randint(5, 60) * 100), actor=actor, effective_at=at)
                else:
                    target_stage = rnd.choice([s for s in OPEN_STAGES if s != stage])
                    app.change_deal_stage(deal, stage=target_stage, reason="requalified", actor=actor, effective_at=at)
                    deal_state[deal] = target_stage
                mark(deal, at)
            elif roll < 0.7:
                member = rnd.choice(members)
                at = after(member, max_days=10)
                app.log_activity(kind=rnd.choice(["call", "visit", "demo"]), member_id=member, actor=actor,
                                 effective_at=at)
            elif roll < 0.78:
                member = rnd.choice(members)
                at = after(member, max_days=40)
                app.move_member(member, unit_id=rnd.choice(teams), reason="reorganisation", actor=actor,
                                effective_at=at)
                mark(member, at)
            elif roll < 0.9 and targets:
                target = rnd.choice(targets)
                # A child sends its difference to its parent or to a sibling (which may refuse to go negative).
                siblings = _siblings(app, plan, target)
                absorb = None if siblings is None else str(where.choice([*siblings, "parent"]))
                plan_change(lambda at, t=target, a=absorb: app.revise_target(
                    plan, target_id=t, committed=str(rnd.randint(1, 40) * (1000 if rnd.random() < 0.5 else 1)),
                    absorb=a, reason="monthly rolling adjustment", actor=actor, effective_at=at))
            elif roll < 0.93 and len(targets) > 6:
                target = rnd.choice(targets[6:])
                mode = None if _siblings(app, plan, target) is None else where.choice(["subtree", "respread"])
                plan_change(lambda at, t=target, m=mode: app.remove_target(
                    plan, target_id=t, mode=m, reason="no longer relevant", actor=actor, effective_at=at))
            elif roll < 0.96:
                plan_change(lambda at: app.publish_plan(plan, actor=actor, effective_at=at))
            elif roll < 0.97:
                team = rnd.choice(teams)
                at = after(team, max_days=40)
                app.move_unit(team, parent_id=rnd.choice(regions), reason="new territory", actor=actor,
                              effective_at=at)
                mark(team, at)
            elif roll < 0.98 and history.deals:
                deal = rnd.choice(history.deals)
                at = after(deal)
                app.reassign_deal(deal, owner_id=rnd.choice(members), reason="hand-over", actor=actor,
                                  effective_at=at)
                mark(deal, at)
            else:
                member = rnd.choice(members)
                at = after(member)
                app.create_task(title="Run demos", assignee_id=member, due=date(2025, 6, 30), actor=actor,
                                effective_at=at)
        except DomainError:
            # A generated command the domain refuses (a duplicate, an unchanged value…): skip it.
            continue
    history.effective_times = sorted(last.values())
    return history


def _siblings(app: SalesPlanning, plan: UUID, target: UUID) -> list[UUID] | None:
    """The target's siblings in its decomposition; None for a target without a parent (or gone)."""
    state = app.get(Plan, plan)
    if target not in state.targets:
        return None
    decomposition = state.decomposition_of(target)
    return None if decomposition is None else [c for c in decomposition["children"] if c != target]

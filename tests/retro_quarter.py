"""Q1 2026 of a small company, told twice: up to mid-March, then the week after.

Shared by the analytics, alerts and reports suites; their right answers are worked out by
hand in each test. Every business time is 09:00 UTC unless said otherwise.

    Company ─┬─ East: Ann (rep, moves to West on 1 March), Bob (rep), Mia (manager)
             └─ West: Cid (rep)

Accounts: Acme (North, enterprise), Bolt (South, smb). Products: GTX Pro (line GTX), RTX One (RTX).

Deals (EUR unless said; expected close 31 March):
    d1 Ann GTX Acme 10,000  lead 5 Jan → qualified 10 Jan → proposal 20 Jan → won 3 Feb
    d2 Ann GTX Bolt  4,000  lead 6 Jan → qualified 16 Jan → lost 5 Feb
    d3 Bob RTX Acme  6,000  lead 8 Jan → qualified 18 Jan → needs_analysis 28 Jan → proposal 7 Feb
                            → back to needs_analysis 10 Feb → proposal 12 Feb → negotiation 17 Feb → won 9 Mar
    d4 Bob RTX Bolt  3,000  lead 1 Feb (second half: qualified 18 Mar)
    d5 Cid GTX Bolt  2,000 USD  opens in qualified 10 Jan → won 30 Jan
    d6 Cid GTX Acme  5,000  lead 20 Dec 2025 → qualified 30 Dec → proposal 15 Jan
    d7 Ann GTX Acme  5,000  (second half) lead 20 Mar → qualified 25 Mar

Activities: Ann calls 2 Feb, 3 Feb (twice, 09:00 and 14:00), visits 4 Feb; Bob demos 3 Feb;
(second half) Ann calls 20 Mar.

Tasks:
    t0 Bob "send proposal" due 6 Feb, done 5 Feb      t5 Bob "prepare the demo" due 4 Feb, done 12 Feb
    t1 Ann "call back Acme" due 10 Mar (second half: done 20 Mar)
    t2 Bob "pricing review" due 12 Mar, done 11 Mar   t3 Cid "visit Bolt" due 20 Mar, open
    t4 Ann "review deck" due 5 Mar, rescheduled on 3 Mar to 25 Mar

Plan "Q1 2026" (published 2 Jan), Q1 targets: East revenue 30,000; Ann revenue 12,000;
Cid deals won 2; Company new deals 10. A draft plan targets West revenue 50,000.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID, uuid4

from domain.application import SalesPlanning
from domain.values import Scope
from projections.engine import ProjectionEngine
from projections.registry import all_projections


def at(month: int, day: int, hour: int = 9, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def catch_up(app: SalesPlanning) -> int:
    """Bring every projection to the head; returns the head."""
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    return app.recorder.max_notification_id() or 0


class RetroQuarter:
    def __init__(self, app: SalesPlanning) -> None:
        self.app = app
        a = "admin"
        start = at(12, 1, year=2025)
        self.company = app.add_unit(name="Company", actor=a, effective_at=start).id
        self.east = app.add_unit(name="East", parent_id=self.company, actor=a, effective_at=start).id
        self.west = app.add_unit(name="West", parent_id=self.company, actor=a, effective_at=start).id
        self.ann = app.add_member(name="Ann", role="rep", unit_id=self.east, actor=a, effective_at=start).id
        self.bob = app.add_member(name="Bob", role="rep", unit_id=self.east, actor=a, effective_at=start).id
        self.mia = app.add_member(name="Mia", role="manager", unit_id=self.east, actor=a, effective_at=start).id
        self.cid = app.add_member(name="Cid", role="rep", unit_id=self.west, actor=a, effective_at=start).id
        self.acme = app.add_account(name="Acme", region="North", segment="enterprise", actor=a, effective_at=start).id
        self.bolt = app.add_account(name="Bolt", region="South", segment="smb", actor=a, effective_at=start).id
        self.gtx = app.add_product(name="GTX Pro", product_line="GTX", list_price="5000", currency="EUR", actor=a,
                                   effective_at=start).id
        self.rtx = app.add_product(name="RTX One", product_line="RTX", list_price="3000", currency="EUR", actor=a,
                                   effective_at=start).id
        self.plan = app.draft_plan(name="Q1 2026", span="2026-Q1", currency="EUR", unit_id=self.company, actor=a,
                                   effective_at=at(1, 1)).id
        self.east_revenue = self.target(self.plan, "revenue", Scope(unit_id=self.east), "30000")
        self.ann_revenue = self.target(self.plan, "revenue", Scope(member_id=self.ann), "12000")
        self.cid_won = self.target(self.plan, "deals_won", Scope(member_id=self.cid), "2")
        self.company_new = self.target(self.plan, "new_deals", Scope(unit_id=self.company), "10")
        app.publish_plan(self.plan, actor=a, effective_at=at(1, 2))
        self.draft = app.draft_plan(name="Q1 ideas", span="2026-Q1", currency="EUR", unit_id=self.company, actor=a,
                                    effective_at=at(1, 1)).id
        self.west_revenue_draft = self.target(self.draft, "revenue", Scope(unit_id=self.west), "50000")

        self.d6 = self.deal(self.cid, self.gtx, self.acme, "5000", at(12, 20, year=2025))
        self.stage(self.d6, "qualified", at(12, 30, year=2025))
        self.d1 = self.deal(self.ann, self.gtx, self.acme, "10000", at(1, 5))
        self.d2 = self.deal(self.ann, self.gtx, self.bolt, "4000", at(1, 6))
        self.d3 = self.deal(self.bob, self.rtx, self.acme, "6000", at(1, 8))
        self.d5 = self.deal(self.cid, self.gtx, self.bolt, "2000", at(1, 10), stage="qualified", currency="USD")
        self.stage(self.d1, "qualified", at(1, 10))
        self.stage(self.d6, "proposal", at(1, 15))
        self.stage(self.d2, "qualified", at(1, 16))
        self.stage(self.d3, "qualified", at(1, 18))
        self.stage(self.d1, "proposal", at(1, 20))
        self.stage(self.d3, "needs_analysis", at(1, 28))
        app.win_deal(self.d5, actor="cid", effective_at=at(1, 30))
        self.d4 = self.deal(self.bob, self.rtx, self.bolt, "3000", at(2, 1))
        app.win_deal(self.d1, actor="ann", effective_at=at(2, 3))
        app.lose_deal(self.d2, reason="budget cut", actor="ann", effective_at=at(2, 5))
        self.stage(self.d3, "proposal", at(2, 7))
        self.stage(self.d3, "needs_analysis", at(2, 10), reason="scope unclear")
        self.stage(self.d3, "proposal", at(2, 12))
        self.stage(self.d3, "negotiation", at(2, 17))
        app.win_deal(self.d3, actor="bob", effective_at=at(3, 9))

        for member, kind, when in ((self.ann, "call", at(2, 2)), (self.ann, "call", at(2, 3)),
                                   (self.ann, "call", at(2, 3, 14)), (self.ann, "visit", at(2, 4)),
                                   (self.bob, "demo", at(2, 3))):
            app.log_activity(kind=kind, member_id=member, actor="rep", effective_at=when)

        self.t0 = self.task(self.bob, "send proposal", date(2026, 2, 6), at(1, 20))
        app.complete_task(self.t0, actor="bob", effective_at=at(2, 5))
        self.t5 = self.task(self.bob, "prepare the demo", date(2026, 2, 4), at(1, 25))
        app.complete_task(self.t5, actor="bob", effective_at=at(2, 12))
        app.move_member(self.ann, unit_id=self.west, reason="covers West from March", actor=a, effective_at=at(3, 1))
        self.t1 = self.task(self.ann, "call back Acme", date(2026, 3, 10), at(3, 1))
        self.t2 = self.task(self.bob, "pricing review", date(2026, 3, 12), at(3, 1))
        app.complete_task(self.t2, actor="bob", effective_at=at(3, 11))
        self.t3 = self.task(self.cid, "visit Bolt", date(2026, 3, 20), at(3, 2))
        self.t4 = self.task(self.ann, "review deck", date(2026, 3, 5), at(3, 1))
        app.reschedule_task(self.t4, due=date(2026, 3, 25), reason="numbers come late", actor="ann",
                            effective_at=at(3, 3))
        self.d7: UUID | None = None

    def second_half(self) -> None:
        """The week after the mid-March review: recorded later, effective 18–25 March."""
        app = self.app
        self.stage(self.d4, "qualified", at(3, 18))
        app.complete_task(self.t1, outcome="meeting booked", actor="ann", effective_at=at(3, 20))
        self.d7 = self.deal(self.ann, self.gtx, self.acme, "5000", at(3, 20))
        app.log_activity(kind="call", member_id=self.ann, actor="ann", effective_at=at(3, 20))
        self.stage(self.d7, "qualified", at(3, 25))

    # --- helpers ---

    def target(self, plan: UUID, metric: str, scope: Scope, committed: str) -> UUID:
        target_id = uuid4()
        self.app.set_target(plan, metric=metric, period="2026-Q1", scope=scope, committed=committed,
                            target_id=target_id, actor="admin", effective_at=at(1, 1))
        return target_id

    def deal(self, owner: UUID, product: UUID, account: UUID, amount: str, opened: datetime, stage: str = "lead",
             currency: str = "EUR") -> UUID:
        return self.app.open_deal(name=f"deal {amount}", account_id=account, owner_id=owner, product_id=product,
                                  amount=amount, currency=currency, expected_close=date(2026, 3, 31), stage=stage,
                                  actor="rep", effective_at=opened).id

    def stage(self, deal: UUID, stage: str, when: datetime, reason: str | None = None) -> None:
        self.app.change_deal_stage(deal, stage=stage, reason=reason, actor="rep", effective_at=when)

    def task(self, assignee: UUID, title: str, due: date, created: datetime) -> UUID:
        return self.app.create_task(title=title, assignee_id=assignee, due=due, actor="admin", effective_at=created).id

"""A realistic demo quarter written through the application's commands.

``write_demo`` builds a sales organisation (a company, regions, teams, reps and their
managers), a catalogue, a plan for one quarter decomposed to reps and months and published
as v1, a mid-quarter revision published as v2, an action plan of tasks, a few hundred deals
walking the pipeline and the activities logged on them.

Every effective time lies inside the quarter and never after the application's clock: a
quarter in the future is replaced by the clock's current quarter, and a quarter in progress
is played only up to now. Each entity's changes are back-dated in order. Given the seed (and
the clock) the demo is deterministic (``random.Random(seed)``, ids by ``uuid5`` from the
seed); it is written in one transaction, and a second run on the same database finds the
demo company and writes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID, uuid5

from eventsourcing.application import AggregateNotFoundError

from domain.application import CommandResult, SalesPlanning
from domain.errors import ValidationError
from domain.persistence import IMMEDIATE
from domain.plan import Plan
from domain.values import Period, Scope

DEMO_NAMESPACE: Final = UUID("0b7f6c3e-58a4-4f57-9a53-2a1d3c9e7d10")
CURRENCY: Final = "EUR"
ADMIN: Final = "demo@salesplan.example"

REGIONS: Final = ("North", "South", "West")
TEAMS: Final = ("Enterprise", "SMB")
SEGMENTS: Final = ("enterprise", "mid-market", "smb")
PRODUCTS: Final = (
    ("Platform Starter", "Platform", "12000.00"),
    ("Platform Enterprise", "Platform", "48000.00"),
    ("Analytics Add-on", "Analytics", "9500.00"),
    ("Analytics Pro", "Analytics", "24000.00"),
    ("Onboarding Package", "Services", "6000.00"),
    ("Premium Support", "Services", "15000.00"),
)
FIRST_NAMES: Final = (
    "Anna", "Ben", "Chen", "Dana", "Elif", "Finn", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Lars", "Mia",
    "Noah", "Olga", "Paul", "Quinn", "Rosa", "Sami", "Tara", "Uwe", "Vera", "Wei", "Yara", "Zoe",
)
LAST_NAMES: Final = (
    "Albers", "Berger", "Costa", "Dietz", "Engel", "Fischer", "Graf", "Hahn", "Ivanova", "Jansen", "Keller",
    "Lang", "Moreau", "Novak", "Ortiz", "Peters", "Quast", "Roth", "Schulz", "Tan", "Ulrich", "Vogel", "Weber",
)
ACCOUNT_WORDS: Final = (
    "Nordlicht", "Alpen", "Rhein", "Hansa", "Sonnen", "Blau", "Eichen", "Falken", "Kristall", "Linden",
    "Mosel", "Polar", "Quelle", "Stern", "Tannen", "Wolken",
)
ACCOUNT_TRADES: Final = (
    "Logistik", "Maschinenbau", "Pharma", "Energie", "Handel", "Bau", "Medien", "Versicherung", "Textil", "Foods",
)
ACCOUNT_FORMS: Final = ("GmbH", "AG", "KG", "SE")
BACKWARD_REASONS: Final = (
    "new stakeholder re-opens the requirements",
    "buyer asked for a second proposal round",
    "procurement restarted the evaluation",
)
SLIP_REASONS: Final = (
    "budget moved to the next quarter",
    "legal review takes longer than planned",
    "customer reorganisation delays the decision",
)
LOSS_REASONS: Final = (
    "chose a competitor",
    "budget frozen",
    "no decision made",
    "price too high",
    "project cancelled",
)
REOPEN_REASONS: Final = ("competitor failed the pilot", "budget unfrozen after all")
MONTH_WEIGHTS: Final = (Decimal("0.30"), Decimal("0.33"), Decimal("0.37"))  # the end-of-quarter push


@dataclass
class DemoSummary:
    """What a demo run wrote (all zero, with ``already_present``, when the demo was there already)."""

    seed: int
    quarter: str
    company_id: UUID
    already_present: bool = False
    start: datetime | None = None
    end: datetime | None = None
    units: int = 0
    members: int = 0
    products: int = 0
    accounts: int = 0
    plans: int = 0
    plan_version: int = 0
    targets: int = 0
    deals: int = 0
    won: int = 0
    lost: int = 0
    tasks: int = 0
    activities: int = 0
    events: int = 0

    def format(self) -> str:
        if self.already_present:
            return (
                f"The demo for seed {self.seed} is already in this database (company unit {self.company_id}): "
                "nothing written."
            )
        assert self.start is not None and self.end is not None
        rows = [
            ("units", self.units, "a company, its regions and their teams"),
            ("members", self.members, "reps and their managers"),
            ("products", self.products, "in product lines"),
            ("accounts", self.accounts, "with segments and regions"),
            ("plans", self.plans, f"published up to v{self.plan_version}"),
            ("targets", self.targets, "decomposed to reps and months"),
            ("deals", self.deals, f"{self.won} won, {self.lost} lost, {self.deals - self.won - self.lost} open"),
            ("tasks", self.tasks, "the action plan"),
            ("activities", self.activities, "calls, visits, meetings, demos, emails"),
            ("events", self.events, "appended to the log"),
        ]
        lines = [
            f"Demo quarter {self.quarter} (seed {self.seed}), company unit {self.company_id}",
            f"business time {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC",
        ]
        lines += [f"  {name:<11}{count:>6}  {note}" for name, count, note in rows]
        return "\n".join(lines)


def demo_company_id(seed: int) -> UUID:
    return uuid5(DEMO_NAMESPACE, f"{seed}/company")


def demo_quarter(requested: str, now: datetime) -> Period:
    """The requested quarter, or the clock's current one when the requested one has not begun yet."""
    period = Period.parse(requested, "quarter")
    if period.kind != "quarter":
        raise ValidationError("demo.quarter", "the demo plays a quarter, like 2026-Q1", "quarter")
    if period.start_at > now:
        period = Period.parse(f"{now.year}-Q{(now.month + 2) // 3}")
    return period


def write_demo(app: SalesPlanning, *, seed: int = 7, quarter: str = "2026-Q1", deals: int | None = None,
               progress: Callable[[int], None] | None = None) -> DemoSummary:
    """Write a demo quarter into the application's database; skip it when it is there already.

    ``deals`` overrides how many deals are opened (by default a few hundred, drawn from the seed);
    ``progress`` is told the number of commands written so far, now and then.
    """
    now = app.clock()
    period = demo_quarter(quarter, now)
    if deals is not None and deals < 0:
        raise ValidationError("demo.deals", "the number of deals must not be negative", "deals")
    company = demo_company_id(seed)
    # One transaction around all the commands: the demo is there whole or not at all (so an
    # existing company means an existing demo), and it commits once instead of ~1,900 times.
    # Other writers wait for it meanwhile.
    with app.database.datastore.transaction(commit=True) as session:
        session.connection(execution_options=IMMEDIATE)
        try:
            app.repository.get(company)
        except AggregateNotFoundError:
            pass
        else:
            return DemoSummary(seed=seed, quarter=period.key, company_id=company, already_present=True)
        demo = _Demo(app, seed, period, now, deals, progress)
        demo.write()
    return demo.summary


@dataclass
class _Rep:
    id: UUID
    email: str
    team: UUID
    region: str
    weight: float  # how much of the pipeline this rep carries


@dataclass
class _Demo:
    app: SalesPlanning
    seed: int
    period: Period
    now: datetime
    deal_count: int | None
    progress: Callable[[int], None] | None = None
    rng: random.Random = field(init=False)
    start: datetime = field(init=False)
    end: datetime = field(init=False)
    summary: DemoSummary = field(init=False)
    reps: list[_Rep] = field(default_factory=list)
    managers: dict[UUID, str] = field(default_factory=dict)  # unit -> its manager's email
    products: list[tuple[UUID, str]] = field(default_factory=list)  # (id, list price)
    accounts: list[tuple[UUID, str, str]] = field(default_factory=list)  # (id, name, region)
    rep_targets: dict[UUID, UUID] = field(default_factory=dict)  # rep -> the rep's quarter revenue target
    rep_months: dict[UUID, list[UUID]] = field(default_factory=dict)  # rep -> the rep's month targets

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # The quarter's end is exclusive; a quarter in progress is played up to now.
        self.start = self.period.start_at
        self.end = min(self.period.end_at - timedelta(minutes=1), self.now)
        self.summary = DemoSummary(seed=self.seed, quarter=self.period.key, company_id=demo_company_id(self.seed),
                                   start=self.start, end=self.end)

    # --- helpers ------------------------------------------------------------------------

    def id(self, kind: str, n: int | str = 0) -> UUID:
        return uuid5(DEMO_NAMESPACE, f"{self.seed}/{kind}/{n}")

    def at(self, share: float) -> datetime:
        """The moment ``share`` (0..1) of the way through the played window, to the minute."""
        minutes = int((self.end - self.start).total_seconds() // 60 * min(max(share, 0.0), 1.0))
        return self.start + timedelta(minutes=minutes)

    def day(self, share: float) -> date:
        return self.at(share).date()

    def done(self, result: CommandResult) -> CommandResult:
        self.summary.events += 1
        if self.progress is not None and self.summary.events % 50 == 0:
            self.progress(self.summary.events)
        return result

    # --- the story ----------------------------------------------------------------------

    def write(self) -> None:
        self.organisation()
        self.catalogue()
        self.plan()
        self.backfill()
        self.tasks()
        count = self.rng.randint(230, 270) if self.deal_count is None else self.deal_count
        deals = [self.deal(n) for n in range(count)]
        self.activities(deals)

    def organisation(self) -> None:
        s, opening = self.summary, self.at(0)
        names = iter(self.rng.sample([f"{f} {last}" for f in FIRST_NAMES for last in LAST_NAMES], 40))

        def member(name: str, role: str, unit: UUID, n: int) -> tuple[UUID, str]:
            email = name.lower().replace(" ", ".") + "@acme.example"
            self.done(self.app.add_member(id=self.id("member", n), name=name, role=role, unit_id=unit, email=email,
                                          actor=ADMIN, effective_at=opening))
            s.members += 1
            return self.id("member", n), email

        company = self.done(self.app.add_unit(id=s.company_id, name="Acme Demo", actor=ADMIN, effective_at=opening)).id
        s.units += 1
        n = 0
        self.managers[company] = member(next(names), "manager", company, n)[1]
        for region in REGIONS:
            region_id = self.done(self.app.add_unit(id=self.id("unit", region), name=region, parent_id=company,
                                                    actor=ADMIN, effective_at=opening)).id
            s.units += 1
            n += 1
            self.managers[region_id] = member(next(names), "manager", region_id, n)[1]
            for team in TEAMS:
                team_id = self.done(self.app.add_unit(id=self.id("unit", f"{region} {team}"), name=f"{region} {team}",
                                                      parent_id=region_id, actor=ADMIN, effective_at=opening)).id
                s.units += 1
                n += 1
                self.managers[team_id] = member(next(names), "manager", team_id, n)[1]
                for _ in range(3 if team == "SMB" else self.rng.choice((3, 4, 4))):
                    n += 1
                    rep_id, email = member(next(names), "rep", team_id, n)
                    self.reps.append(_Rep(rep_id, email, team_id, region, self.rng.uniform(0.6, 1.4)))

    def backfill(self) -> None:
        """Mid-quarter a rep backfills another team of the same region; earlier results stay where they
        were, and so does her quarter's target: she was planned in the team she belonged to at its start."""
        mover = self.reps[0]
        target_team = next(r.team for r in self.reps if r.region == mover.region and r.team != mover.team)
        self.done(self.app.move_member(mover.id, unit_id=target_team, reason="backfill after a resignation",
                                       actor=self.managers[self.summary.company_id], effective_at=self.at(0.45)))
        mover.team = target_team

    def catalogue(self) -> None:
        s, opening = self.summary, self.at(0)
        for i, (name, line, price) in enumerate(PRODUCTS):
            self.done(self.app.add_product(id=self.id("product", i), name=name, product_line=line, list_price=price,
                                           currency=CURRENCY, actor=ADMIN, effective_at=opening))
            self.products.append((self.id("product", i), price))
            s.products += 1
        names = self.rng.sample(
            [f"{w} {t} {f}" for w in ACCOUNT_WORDS for t in ACCOUNT_TRADES for f in ACCOUNT_FORMS], 60
        )
        for i, name in enumerate(names):
            region = self.rng.choice(REGIONS)
            segment = self.rng.choices(SEGMENTS, weights=(2, 3, 5))[0]
            self.done(self.app.add_account(id=self.id("account", i), name=name, segment=segment, region=region,
                                           actor=ADMIN, effective_at=opening))
            self.accounts.append((self.id("account", i), name, region))
            s.accounts += 1

    def plan(self) -> None:
        """The quarter's revenue, decomposed company → regions → teams → reps → months, plus process targets."""
        s, app, plan = self.summary, self.app, self.id("plan")
        head = self.managers[s.company_id]
        drafting = self.at(0)
        self.done(app.draft_plan(id=plan, name=f"{self.period.key} sales plan", span=self.period.key, currency=CURRENCY,
                                 unit_id=s.company_id, actor=head, effective_at=drafting))
        s.plans += 1
        months = [p.key for p in self.period.children("month")]

        def target(metric: str, committed: Any, stretch: Any = None) -> UUID:
            result = self.done(app.set_target(plan, target_id=self.id("target", metric), metric=metric,
                                              period=self.period.key, scope=Scope(unit_id=s.company_id),
                                              committed=committed, stretch=stretch, currency=CURRENCY, actor=head,
                                              effective_at=drafting))
            s.targets += 1
            return UUID(result.details["target_id"])

        def decompose(parent: UUID, by: str, parts: list[str], **how: Any) -> list[UUID]:
            result = self.done(app.decompose_target(plan, parent_id=parent, by=by, parts=parts, actor=head,
                                                    effective_at=drafting, **how))
            s.targets += len(parts)
            return [UUID(c) for c in result.details["child_ids"]]

        def last_year(n: int) -> list[Decimal]:
            """Last year's actuals, the seasonality the split follows."""
            return [Decimal(self.rng.randint(150_000, 450_000)) for _ in range(n)]

        revenue = target("revenue", Decimal(len(self.reps) * 250_000), Decimal(len(self.reps) * 287_500))
        regions = [self.id("unit", r) for r in REGIONS]
        for region, region_target in zip(REGIONS, decompose(revenue, "unit", [str(r) for r in regions],
                                                             method="history", history=last_year(len(REGIONS))),
                                         strict=True):
            teams = [self.id("unit", f"{region} {t}") for t in TEAMS]
            for team, team_target in zip(teams, decompose(region_target, "unit", [str(t) for t in teams],
                                                          method="history", history=last_year(len(teams))),
                                         strict=True):
                reps = [r.id for r in self.reps if r.team == team]
                for rep, rep_target in zip(reps, decompose(team_target, "member", [str(r) for r in reps],
                                                           method="history", history=last_year(len(reps))),
                                           strict=True):
                    self.rep_targets[rep] = rep_target
                    self.rep_months[rep] = decompose(rep_target, "period", months, method="weights",
                                                     weights=list(MONTH_WEIGHTS), residue_to=2)
        for metric, per_rep in (("new_deals", 13), ("deals_won", 4), ("activities", 30)):
            decompose(target(metric, len(self.reps) * per_rep), "period", months, method="equal", residue_to=2)
        target("win_rate", "0.30")

        s.plan_version = self.done(app.publish_plan(plan, note="baseline approved", actor=head,
                                                    effective_at=self.at(0.01))).details["plan_version"]

        # Mid-quarter rolling adjustment: key accounts slip from the second month into the third.
        plan_state = app.get(Plan, plan)
        revising = self.at(0.5)
        for rep in self.rng.sample(sorted(self.rep_months), 3):
            second, third = (plan_state.targets[t] for t in self.rep_months[rep][1:])
            moved = (second["committed"] * Decimal("0.2")).quantize(Decimal("0.01"))
            why = f"{self.rng.choice(self.accounts)[1]} slipped its order from {months[1]} into {months[2]}"
            # One revision: the third month absorbs what the second gives up, so the rep's quarter holds.
            self.done(app.revise_target(plan, target_id=second["target_id"], committed=second["committed"] - moved,
                                        stretch=second["stretch"] - moved, absorb=str(third["target_id"]), reason=why,
                                        actor=head, effective_at=revising))
        s.plan_version = self.done(app.publish_plan(plan, note="mid-quarter rolling adjustment", actor=head,
                                                    effective_at=self.at(0.5))).details["plan_version"]

    def tasks(self) -> None:
        s, app, plan = self.summary, self.app, self.id("plan")
        for i, rep in enumerate(self.reps):
            manager = self.managers[rep.team]
            demos = self.rng.randint(8, 20)
            task = self.id("task", i)
            created = self.rng.uniform(0.02, 0.2)
            self.done(app.create_task(id=task, title=f"Run {demos} product demos in {rep.region}", assignee_id=rep.id,
                                      due=self.period.end - timedelta(days=self.rng.randint(1, 20)), plan_id=plan,
                                      target_id=self.rep_targets[rep.id], actor=manager, effective_at=self.at(created)))
            s.tasks += 1
            when, fate, assignee = created, self.rng.random(), rep
            if fate < 0.1:
                assignee = self.rng.choice([r for r in self.reps if r.team == rep.team and r is not rep])
                when += 0.1
                self.done(app.reassign_task(task, assignee_id=assignee.id, reason=f"{rep.email} is on leave",
                                            actor=manager, effective_at=self.at(when)))
            if fate < 0.25:
                when += 0.1
                self.done(app.reschedule_task(task, due=self.period.end + timedelta(days=14),
                                              reason="trade fair moved to the next quarter", actor=manager,
                                              effective_at=self.at(when)))
            for progress in (25, 60):
                when += self.rng.uniform(0.1, 0.25)
                if when > 0.95:
                    break
                self.done(app.report_task_progress(task, progress=progress, note=f"{demos * progress // 100} demos held",
                                                   actor=assignee.email, effective_at=self.at(when)))
            if fate > 0.9:
                self.done(app.cancel_task(task, reason="campaign replaced by the partner webinar", actor=manager,
                                          effective_at=self.at(when + 0.02)))
            elif fate > 0.45 and when + 0.05 <= 1.0:
                self.done(app.complete_task(task, outcome=f"{demos} demos held", actor=assignee.email,
                                            effective_at=self.at(when + 0.05)))

    def deal(self, n: int) -> tuple[UUID, _Rep, float, float]:
        """Open one deal and walk it down the pipeline; returns the deal, its owner and its time span."""
        s, app, rng = self.summary, self.app, self.rng
        rep = rng.choices(self.reps, weights=[r.weight for r in self.reps])[0]
        regional = [a for a in self.accounts if a[2] == rep.region] or self.accounts
        account_id, account_name, _ = rng.choice(regional)
        product_id, price = rng.choice(self.products)
        amount = (Decimal(price) * rng.randint(1, 5) * Decimal(rng.randint(80, 100)) / 100).quantize(Decimal("0.01"))
        deal = self.id("deal", n)
        opened = rng.uniform(0.0, 0.85)
        when = opened
        expected_close = self.day(min(opened + rng.uniform(0.2, 0.6), 1.0)) + timedelta(days=rng.randint(0, 30))
        self.done(app.open_deal(id=deal, name=f"{account_name}: {rng.randint(10, 99)} seats", account_id=account_id,
                                owner_id=rep.id, product_id=product_id, amount=amount, currency=CURRENCY,
                                expected_close=expected_close, actor=rep.email, effective_at=self.at(opened)))
        s.deals += 1

        def step() -> bool:
            """Time passes before the next change; False when the quarter (or now) is over."""
            nonlocal when
            when += rng.uniform(0.01, 0.09)
            return when <= 1.0

        fate = rng.random()  # won 30 %, lost 25 %, the rest still open at the end
        last_stage = rng.choice(("qualified", "needs_analysis", "proposal", "negotiation"))
        path = ["qualified", "needs_analysis", "proposal", "negotiation"]
        if rng.random() < 0.3:
            path.remove("needs_analysis")
        if fate >= 0.55:
            path = path[: path.index(last_stage) + 1] if last_stage in path else path[:1]
        elif fate >= 0.30:
            path = path[: rng.randint(0, len(path))]
        stage = "lead"
        for nxt in path:
            if not step():
                return deal, rep, opened, 1.0
            self.done(app.change_deal_stage(deal, stage=nxt, actor=rep.email, effective_at=self.at(when)))
            stage = nxt
            if stage == "proposal" and rng.random() < 0.1 and step():
                self.done(app.change_deal_stage(deal, stage="qualified", reason=rng.choice(BACKWARD_REASONS),
                                                actor=rep.email, effective_at=self.at(when)))
                if not step():
                    return deal, rep, opened, 1.0
                self.done(app.change_deal_stage(deal, stage="proposal", actor=rep.email, effective_at=self.at(when)))
            if rng.random() < 0.08 and step():  # the deal slips out of the quarter (again)
                expected_close = max(expected_close, self.period.end) + timedelta(days=rng.randint(10, 60))
                self.done(app.change_deal_expected_close(deal, expected_close=expected_close,
                                                         reason=rng.choice(SLIP_REASONS), actor=rep.email,
                                                         effective_at=self.at(when)))
            if rng.random() < 0.04 and step():
                amount = (amount * Decimal("0.9")).quantize(Decimal("0.01"))
                self.done(app.change_deal_amount(deal, amount=amount, reason="scope reduced", actor=rep.email,
                                                 effective_at=self.at(when)))
        if fate >= 0.55 or not step():
            return deal, rep, opened, min(when, 1.0)
        if fate >= 0.30:
            self.done(app.lose_deal(deal, reason=rng.choice(LOSS_REASONS), actor=rep.email, effective_at=self.at(when)))
            s.lost += 1
            if rng.random() < 0.15 and step():
                self.done(app.reopen_deal(deal, reason=rng.choice(REOPEN_REASONS), stage="negotiation",
                                          actor=self.managers[rep.team], effective_at=self.at(when)))
                s.lost -= 1
                if step():
                    self.done(app.win_deal(deal, actor=rep.email, effective_at=self.at(when)))
                    s.won += 1
            return deal, rep, opened, min(when, 1.0)
        won_amount = (amount * Decimal(rng.randint(90, 100)) / 100).quantize(Decimal("0.01"))
        self.done(app.win_deal(deal, amount=won_amount, actor=rep.email, effective_at=self.at(when)))
        s.won += 1
        return deal, rep, opened, when

    def activities(self, deals: list[tuple[UUID, _Rep, float, float]]) -> None:
        s, app, rng = self.summary, self.app, self.rng
        kinds = ("call", "email", "meeting", "demo", "visit")
        n = 0
        for deal, rep, opened, closed in deals:
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
                kind = rng.choices(kinds, weights=(5, 4, 2, 2, 1))[0]
                self.done(app.log_activity(id=self.id("activity", n), kind=kind, member_id=rep.id, deal_id=deal,
                                           note=f"{kind} with the buyer", actor=rep.email,
                                           effective_at=self.at(rng.uniform(opened, closed))))
                n += 1
        for rep in self.reps:  # prospecting without a deal yet
            for _ in range(rng.randint(1, 4)):
                self.done(app.log_activity(id=self.id("activity", n), kind=rng.choice(("call", "email")),
                                           member_id=rep.id, note="prospecting", actor=rep.email,
                                           effective_at=self.at(rng.random())))
                n += 1
        s.activities = n

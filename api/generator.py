"""A large, realistic, seeded history for benchmarks: ``salesplan generate --events N``.

A simulated sales organisation lives day by day from 1 January 2024: regions and teams of
reps with their managers, a product catalogue and accounts; each region plans every fiscal
year (targets decomposed by quarter, team, rep and segment, published as v1, revised and
re-published every month with reasons, closed in January); reps open deals that walk the
pipeline (forwards, sometimes backwards, slipping, repriced, reassigned, won, lost, now and
then reopened), log calls and visits, work tasks; reps move teams mid-quarter, leave (their
deals and tasks go to a teammate, their targets are removed) and are replaced.

Aggregates are built directly and saved with ``app.record`` in batches of thousands of
events per transaction. Every entity's effective times are non-decreasing and in the past.
Some deals' and tasks' changes are held back for a batch or two before being written: late
entries, so that "as known at position P" and "as of T" really differ.

The ids derive from the seed, so one seed gives one history; generating the same seed into
the same store twice is refused up front (use another seed to add more).
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from domain import values as v
from domain.aggregate import SalesAggregate
from domain.application import SalesPlanning
from domain.catalogue import Account, Product
from domain.deal import Activity, Deal
from domain.organisation import Member, Unit
from domain.plan import Plan
from domain.task import Task

START: Final = date(2024, 1, 1)
CURRENCY: Final = "EUR"
HEAD_OF_SALES: Final = "head.of.sales@salesplan.example"
EVENTS_PER_REP: Final = 900  # reps = events / this: the target is reached in about a simulated year
PRODUCTS: Final = (
    ("Core Basic", "Core", "1200"), ("Core Pro", "Core", "4800"), ("Core Enterprise", "Core", "18000"),
    ("Cloud Starter", "Cloud", "600"), ("Cloud Business", "Cloud", "3600"), ("Cloud Scale", "Cloud", "24000"),
    ("Analytics", "Add-ons", "2500"), ("Security", "Add-ons", "3900"), ("Onboarding", "Services", "1500"),
    ("Consulting day", "Services", "1200"),
)
SEGMENTS: Final = ("enterprise", "mid_market", "smb")
REGION_NAMES: Final = ("North", "South", "East", "West", "Central", "Nordics", "Benelux", "Iberia", "Alps", "Baltics")
FIRST: Final = ("Ann", "Bob", "Cid", "Dana", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Max", "Nia",
                "Oto", "Pia", "Quin", "Rui", "Sia", "Tom", "Uma", "Vic", "Wen", "Xia", "Yan", "Zoe")
LAST: Final = ("Adler", "Berg", "Costa", "Dietz", "Ek", "Fischer", "Gomez", "Horn", "Ito", "Jansen", "Klein",
               "Lund", "Moreau", "Nagy", "Olsen", "Petit", "Rossi", "Silva", "Tanaka", "Vogel", "Weiss", "Young")
LOSS_REASONS: Final = ("went with a competitor", "no budget this year", "project cancelled", "price too high",
                       "no decision maker")
BACK_REASONS: Final = ("requirements unclear again", "new stakeholder joined", "budget under review")
REVISION_REASONS: Final = ("monthly rolling adjustment", "key account slipped to next quarter",
                           "market grew faster than planned", "new product launch", "team capacity changed")
# Pipeline walk: from each open stage, the chances of the next step (the rest: lost).
FORWARD: Final = {"lead": 0.7, "qualified": 0.75, "needs_analysis": 0.72, "proposal": 0.7, "negotiation": 0.65}
BACKWARD: Final = {"needs_analysis": 0.1, "proposal": 0.1, "negotiation": 0.05}


@dataclass
class GenerateReport:
    """What was generated: counts by aggregate and by event, the simulated span and the speed."""

    requested: int
    seed: int
    events: int = 0
    position: int = 0
    seconds: float = 0.0
    aggregates: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    late_entries: int = 0
    first_day: date = START
    last_day: date = START

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        lines = [
            f"{self.events:,} events (asked for {self.requested:,}, seed {self.seed}) in {self.seconds:.1f} s: "
            f"{self.events_per_second:,.0f} events/s",
            f"business days {self.first_day} … {self.last_day}; {self.late_entries:,} aggregates written late",
            "aggregates: " + ", ".join(f"{k} {n:,}" for k, n in self.aggregates.most_common()),
            "events: " + ", ".join(f"{k} {n:,}" for k, n in self.event_types.most_common()),
        ]
        return "\n".join(lines)


class GenerateError(Exception):
    """The history cannot be generated as asked (e.g. this seed was already generated into the store)."""


def generate(
    app: SalesPlanning, *, events: int, seed: int = 1, progress: Callable[[int, int], None] | None = None,
    batch_events: int | None = None,
) -> GenerateReport:
    """Generate at least ``events`` events of realistic, back-dated history into ``app``'s store."""
    if events < 1:
        raise GenerateError("events must be at least 1")
    world = _World(app, events, seed, progress, batch_events)
    try:
        app.repository.get(world.company.id)
    except AggregateNotFoundError:
        return world.run()
    raise GenerateError(f"seed {seed} was already generated into this store: choose another seed")


class _World:
    def __init__(self, app: SalesPlanning, events: int, seed: int, progress: Callable[[int, int], None] | None,
                 batch_events: int | None) -> None:
        self.app = app
        self.target = events
        self.rnd = random.Random(seed)
        self.progress = progress
        # Several batches even for small runs, so that late entries cross batch boundaries.
        self.batch_events = batch_events or min(10_000, max(200, events // 10))
        self.report = GenerateReport(requested=events, seed=seed)
        now = app.clock()
        # The last simulated moment: yesterday's end, so that every effective time is in the past.
        self.end = min(datetime(now.year, now.month, now.day, tzinfo=UTC), now - timedelta(hours=1))
        # Keyed by the object's identity (one object per entity): cheaper than hashing UUIDs in Python.
        self.dirty: dict[int, SalesAggregate] = {}
        self.held: dict[int, int] = {}
        self.new_aggregates: Counter[type] = Counter()
        self.event_classes: Counter[type] = Counter()
        self.pending = 0
        self.written = 0
        self.queue: list[tuple[datetime, int, str, UUID]] = []
        self.sequence = 0
        self.deals: dict[UUID, Deal] = {}
        self.deals_of: dict[UUID, set[UUID]] = {}
        self.tasks: dict[UUID, Task] = {}
        self.plans: dict[tuple[int, UUID], Plan] = {}
        self.member_targets: dict[UUID, list[tuple[Plan, UUID]]] = {}
        self.teams: dict[UUID, list[UUID]] = {}  # team → its active reps
        self.team_of: dict[UUID, UUID] = {}
        self.region_of: dict[UUID, UUID] = {}  # team → region
        self.members: dict[UUID, Member] = {}
        self.email: dict[UUID, str] = {}
        self.people = 0
        self.regions: dict[UUID, str] = {}
        self.team_units: dict[UUID, Unit] = {}
        self.products: list[Product] = []
        self.accounts: list[Account] = []
        since = self.moment(START, 0)
        self.company = Unit.add(id=self.uuid(), name="Generated Company", parent_id=None, actor=HEAD_OF_SALES,
                                effective_at=since)

    # --- helpers ---------------------------------------------------------------------------

    def uuid(self) -> UUID:
        return UUID(int=self.rnd.getrandbits(128), version=4)

    def moment(self, day: date, hour: float) -> datetime:
        return min(datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hour), self.end)

    def touch(self, aggregate: SalesAggregate, events: int = 1) -> None:
        self.dirty[id(aggregate)] = aggregate
        self.pending += events

    def at(self, aggregate: SalesAggregate, wanted: datetime) -> datetime:
        # Never before the entity's previous change: the domain's rule for every entity.
        return max(wanted, aggregate.last_effective_at)

    def schedule(self, when: datetime, kind: str, entity: UUID) -> None:
        self.sequence += 1
        heapq.heappush(self.queue, (when, self.sequence, kind, entity))

    def money(self, value: Decimal) -> Decimal:
        return value.quantize(Decimal("0.01"))

    # --- the run ---------------------------------------------------------------------------

    def run(self) -> GenerateReport:
        started = time.perf_counter()
        self.setup()
        day = START
        while self.written + self.pending < self.target:
            if self.moment(day, 23) >= self.end:
                # The calendar ran out before the target: the last day gets busier (never the future).
                self.busy_day(day)
            else:
                self.simulate(day)
                self.report.last_day = day
                day += timedelta(days=1)
            if self.pending >= self.batch_events:
                self.flush()
        self.flush(final=True)
        self.report.seconds = time.perf_counter() - started
        self.report.aggregates = Counter({cls.__name__: n for cls, n in self.new_aggregates.items()})
        self.report.event_types = Counter({cls.__qualname__: n for cls, n in self.event_classes.items()})
        return self.report

    def flush(self, final: bool = False) -> None:
        batch: list[SalesAggregate] = []
        held = self.held
        for key, aggregate in list(self.dirty.items()):
            if isinstance(aggregate, Deal | Task):
                late = held.get(key, 0)
                # A late entry: an existing deal's or task's changes wait for a later batch (at most two).
                if not final and late < 2 and aggregate.pending_events[0].originator_version > 1 \
                        and self.rnd.random() < (0.03 if late == 0 else 0.5):
                    held[key] = late + 1
                    continue
                if late:
                    self.report.late_entries += 1
                    del held[key]
            batch.append(aggregate)
            del self.dirty[key]
        count = 0
        for aggregate in batch:
            events = aggregate.pending_events
            if events[0].originator_version == 1:
                self.new_aggregates[type(aggregate)] += 1
            for event in events:
                self.event_classes[type(event)] += 1
            count += len(events)
        if batch:
            self.report.position = self.app.record(batch)
        self.pending -= count
        self.written += count
        self.report.events = self.written
        if self.progress is not None:
            self.progress(self.written, self.target)

    # --- the organisation, the catalogue, the plans ------------------------------------------

    def setup(self) -> None:
        since = self.moment(START, 0)
        reps = max(8, self.target // EVENTS_PER_REP)
        # At least two regions of two teams: plans, moves and hand-overs need somewhere to go.
        regions = max(2, min(len(REGION_NAMES), round(reps / 60)))
        team_size = 8
        self.touch(self.company)
        region_units = []
        for r in range(regions):
            region = Unit.add(id=self.uuid(), name=REGION_NAMES[r], parent_id=self.company.id, actor=HEAD_OF_SALES,
                              effective_at=since)
            self.touch(region)
            region_units.append(region)
        teams_per_region = max(2, round(reps / regions / team_size))
        for region in region_units:
            for t in range(teams_per_region):
                team = Unit.add(id=self.uuid(), name=f"{region.name} team {t + 1}", parent_id=region.id,
                                actor=HEAD_OF_SALES, effective_at=since)
                self.touch(team)
                self.team_units[team.id] = team
                self.teams[team.id] = []
                self.region_of[team.id] = region.id
                self.hire(team.id, since, role="manager")
        team_ids = list(self.teams)
        for i in range(reps):
            self.hire(team_ids[i % len(team_ids)], since)
        for name, line, price in PRODUCTS:
            product = Product.add(id=self.uuid(), name=name, product_line=line, list_price=Decimal(price),
                                  currency=CURRENCY, actor=HEAD_OF_SALES, effective_at=since)
            self.touch(product)
            self.products.append(product)
        for i in range(max(10, reps * 3)):
            account = Account.add(id=self.uuid(), name=f"Account {i + 1:05d}", segment=self.rnd.choice(SEGMENTS),
                                  region=self.rnd.choice(region_units).name, actor=HEAD_OF_SALES, effective_at=since)
            self.touch(account)
            self.accounts.append(account)
        self.regions.update({r.id: r.name for r in region_units})
        self.draft_plans(START.year, since)
        self.publish_plans(START.year, since + timedelta(hours=1), "baseline")

    def hire(self, team: UUID, at: datetime, role: str = "rep") -> UUID:
        self.people += 1
        first, last = self.rnd.choice(FIRST), self.rnd.choice(LAST)
        email = f"{first.lower()}.{last.lower()}.{self.people}@salesplan.example"
        member = Member.add(id=self.uuid(), name=f"{first} {last}", role=role, unit_id=team, email=email,
                            actor=HEAD_OF_SALES, effective_at=at)
        self.touch(member)
        self.email[member.id] = email
        if role == "rep":
            self.members[member.id] = member
            self.teams[team].append(member.id)
            self.team_of[member.id] = team
            self.deals_of[member.id] = set()
        return member.id

    def draft_plans(self, year: int, at: datetime) -> None:
        quarters = [f"{year}-Q{q}" for q in range(1, 5)]
        seasonal = [Decimal("0.2"), Decimal("0.25"), Decimal("0.25"), Decimal("0.3")]
        for region in self.regions:
            plan = Plan.draft(id=self.uuid(), name=f"FY{year} {self.regions[region]}", span=str(year),
                              currency=CURRENCY, unit_id=region, actor=HEAD_OF_SALES, effective_at=at)
            self.plans[(year, region)] = plan
            teams = [t for t, r in self.region_of.items() if r == region]
            reps = sum(len(self.teams[t]) for t in teams)
            revenue = self.uuid()
            base = Decimal(reps * 150_000)
            plan.set_target(target_id=revenue, metric="revenue", period=str(year), scope=v.Scope(unit_id=region),
                            committed=base, stretch=base * Decimal("1.15"), actor=HEAD_OF_SALES, effective_at=at)
            quarter_ids = self.decompose(plan, revenue, "period", quarters, at, "weights", seasonal)
            for quarter_id in quarter_ids:
                team_ids = self.decompose(plan, quarter_id, "unit", [str(t) for t in teams], at)
                for team, team_target in zip(teams, team_ids, strict=True):
                    if self.teams[team]:
                        reps_ids = self.decompose(plan, team_target, "member", [str(m) for m in self.teams[team]], at)
                        for member, target in zip(self.teams[team], reps_ids, strict=True):
                            self.member_targets.setdefault(member, []).append((plan, target))
            for metric, value in (("deals_won", reps * 40), ("new_deals", reps * 70), ("activities", reps * 250)):
                target = self.uuid()
                plan.set_target(target_id=target, metric=metric, period=str(year), scope=v.Scope(unit_id=region),
                                committed=Decimal(value), actor=HEAD_OF_SALES, effective_at=at)
                self.decompose(plan, target, "segment" if metric == "new_deals" else "period",
                               list(SEGMENTS) if metric == "new_deals" else quarters, at)
            plan.set_target(target_id=self.uuid(), metric="win_rate", period=str(year),
                            scope=v.Scope(unit_id=region), committed=Decimal("0.3"), actor=HEAD_OF_SALES,
                            effective_at=at)
            self.touch(plan, len(plan.pending_events))

    def decompose(self, plan: Plan, parent: UUID, by: str, parts: list[str], at: datetime, method: str = "equal",
                  weights: list[Decimal] | None = None) -> list[UUID]:
        children = [self.uuid() for _ in parts]
        plan.decompose(parent_id=parent, by=by, parts=parts, child_ids=children, method=method, weights=weights,
                       actor=HEAD_OF_SALES, effective_at=at)
        return children

    def publish_plans(self, year: int, at: datetime, note: str) -> None:
        for (plan_year, _region), plan in self.plans.items():
            if plan_year == year and plan.status != "closed" and (plan.status == "draft" or plan.unpublished_changes):
                plan.publish(note=note, actor=HEAD_OF_SALES, effective_at=self.at(plan, at))
                self.touch(plan)

    def revise_plans(self, year: int, at: datetime) -> None:
        """The monthly rolling adjustment: a few targets move, each with its reason; then re-publish."""
        for (plan_year, _region), plan in self.plans.items():
            if plan_year != year or plan.status == "closed":
                continue
            parents = {t["parent_id"] for t in plan.targets.values()}
            leaves = [t for t in plan.targets.values() if t["target_id"] not in parents and t["metric"] != "win_rate"]
            for target in self.rnd.sample(leaves, min(len(leaves), self.rnd.randint(1, 4))):
                factor = Decimal(self.rnd.choice(("0.85", "0.9", "0.95", "1.05", "1.1", "1.2")))
                places = Decimal("0.01") if target["metric"] == "revenue" else Decimal(1)
                committed = max((target["committed"] * factor).quantize(places), places)
                if committed == target["committed"]:
                    committed += places
                stretch = None if target["stretch"] is None else max(target["stretch"], committed * Decimal("1.15")
                                                                     ).quantize(places)
                # The rolling adjustment moves the total with it: every ancestor changes by the difference.
                plan.revise_target(target_id=target["target_id"], committed=committed, stretch=stretch,
                                   absorb=None if target["parent_id"] is None else "parent",
                                   reason=self.rnd.choice(REVISION_REASONS), actor=HEAD_OF_SALES,
                                   effective_at=self.at(plan, at))
                self.touch(plan)
        self.publish_plans(year, at + timedelta(hours=2), f"rolling adjustment {at:%B %Y}")

    def close_plans(self, year: int, at: datetime) -> None:
        for (plan_year, region), plan in list(self.plans.items()):
            if plan_year == year:
                plan.close(reason=f"fiscal year {year} is over", actor=HEAD_OF_SALES, effective_at=self.at(plan, at))
                self.touch(plan)
                del self.plans[(plan_year, region)]
        for member, targets in self.member_targets.items():
            self.member_targets[member] = [(p, t) for p, t in targets if p.status != "closed"]

    # --- one simulated day -------------------------------------------------------------------

    def simulate(self, day: date) -> None:
        morning = self.moment(day, 7)
        if day.month == 12 and day.day == 1:
            self.draft_plans(day.year + 1, morning)
        if day.month == 12 and day.day == 20:
            self.publish_plans(day.year + 1, morning, "baseline")
        if day.month == 1 and day.day == 10:
            self.close_plans(day.year - 1, morning)
        if day.day == 3 and not (day.month == 1 and day.year == START.year):
            self.revise_plans(day.year, morning)
        if day.day == 15:
            self.reorganise(morning)
        if day.month == 7 and day.day == 1:  # one team a year gets a new name
            unit = self.team_units[self.rnd.choice(list(self.team_units))]
            unit.rename(f"{unit.name.split(' (')[0]} ({day.year})", actor=HEAD_OF_SALES,
                        effective_at=self.at(unit, morning))
            self.touch(unit)
        if day.weekday() < 5:
            for rep in list(self.members):
                self.work(rep, day)
        self.run_queue(self.moment(day + timedelta(days=1), 0))

    def busy_day(self, day: date) -> None:
        for rep in list(self.members):
            self.log_activity(rep, self.moment(day, self.rnd.uniform(8, 18)))
            if self.written + self.pending >= self.target:
                return

    def work(self, rep: UUID, day: date) -> None:
        rnd = self.rnd
        if rnd.random() < 0.3:
            self.open_deal(rep, self.moment(day, rnd.uniform(8, 18)))
        for _ in range(rnd.choice((0, 1, 1, 1, 2, 2, 3))):
            self.log_activity(rep, self.moment(day, rnd.uniform(8, 18)))
        if rnd.random() < 0.06:
            self.create_task(rep, day)

    def run_queue(self, until: datetime) -> None:
        while self.queue and self.queue[0][0] < until:
            when, _seq, kind, entity = heapq.heappop(self.queue)
            if kind == "deal" and entity in self.deals:
                self.step_deal(self.deals[entity], when)
            elif kind == "reopen" and entity in self.deals:
                self.reopen_deal(self.deals[entity], when)
            elif kind == "task" and entity in self.tasks:
                self.step_task(self.tasks[entity], when)

    # --- deals, activities, tasks --------------------------------------------------------------

    def open_deal(self, rep: UUID, at: datetime) -> None:
        rnd = self.rnd
        product = rnd.choice(self.products)
        account = rnd.choice(self.accounts)
        amount = self.money(product.list_price * rnd.randint(1, 20))
        deal = Deal.open(
            id=self.uuid(), name=f"{account.name} – {product.name}", account_id=account.id, owner_id=rep,
            product_id=product.id, product_line=product.product_line, region=account.region,
            segment=account.segment, amount=amount, currency=CURRENCY,
            expected_close=(at + timedelta(days=rnd.randint(20, 120))).date(), actor=self.email[rep], effective_at=at,
        )
        self.touch(deal)
        self.deals[deal.id] = deal
        self.deals_of[rep].add(deal.id)
        self.schedule(at + timedelta(days=rnd.uniform(1, 12)), "deal", deal.id)

    def step_deal(self, deal: Deal, when: datetime) -> None:
        rnd = self.rnd
        actor = self.email[deal.owner_id]
        at = self.at(deal, min(when, self.end))
        if rnd.random() < 0.12:
            deal.change_amount(self.money(deal.amount * Decimal(rnd.choice(("0.8", "0.9", "1.1", "1.25")))),
                               reason="scope changed", actor=actor, effective_at=at)
            self.touch(deal)
        if deal.expected_close <= (at + timedelta(days=7)).date() and rnd.random() < 0.6:
            deal.change_expected_close((at + timedelta(days=rnd.randint(14, 60))).date(), reason="customer postponed",
                                       actor=actor, effective_at=at)
            self.touch(deal)
        if rnd.random() < 0.03:
            teammates = [m for m in self.teams[self.team_of[deal.owner_id]] if m != deal.owner_id]
            if teammates:
                self.hand_over(deal, rnd.choice(teammates), "territory rebalanced", at)
        roll = rnd.random()
        stage = deal.stage
        forward = FORWARD[stage]
        backward = BACKWARD.get(stage, 0.0)
        if roll < forward:
            if stage == "negotiation":
                amount = deal.amount if rnd.random() < 0.6 else self.money(deal.amount * Decimal("0.9"))
                deal.win(amount=amount, actor=actor, effective_at=at)
            else:
                deal.change_stage(v.OPEN_STAGES[v.OPEN_STAGES.index(stage) + 1], actor=actor, effective_at=at)
        elif roll < forward + backward:
            deal.change_stage(v.OPEN_STAGES[v.OPEN_STAGES.index(stage) - 1], reason=rnd.choice(BACK_REASONS),
                              actor=actor, effective_at=at)
        else:
            deal.lose(reason=rnd.choice(LOSS_REASONS), actor=actor, effective_at=at)
        self.touch(deal)
        if not deal.is_closed:
            self.schedule(at + timedelta(days=rnd.uniform(2, 14)), "deal", deal.id)
        elif rnd.random() < 0.03:
            self.schedule(at + timedelta(days=rnd.uniform(5, 30)), "reopen", deal.id)
        else:
            self.forget_deal(deal)

    def reopen_deal(self, deal: Deal, when: datetime) -> None:
        if deal.owner_id not in self.members:  # the owner left meanwhile: the deal stays closed
            self.forget_deal(deal)
            return
        deal.reopen(reason="customer came back", stage="negotiation", actor=self.email[deal.owner_id],
                    effective_at=self.at(deal, min(when, self.end)))
        self.touch(deal)
        self.schedule(when + timedelta(days=self.rnd.uniform(2, 14)), "deal", deal.id)

    def forget_deal(self, deal: Deal) -> None:
        self.deals.pop(deal.id, None)
        self.deals_of.get(deal.owner_id, set()).discard(deal.id)

    def hand_over(self, deal: Deal, owner: UUID, reason: str, at: datetime) -> None:
        self.deals_of[deal.owner_id].discard(deal.id)
        deal.reassign(owner, reason=reason, actor=HEAD_OF_SALES, effective_at=self.at(deal, at))
        self.touch(deal)
        self.deals_of[owner].add(deal.id)

    def log_activity(self, rep: UUID, at: datetime) -> None:
        rnd = self.rnd
        open_deals = self.deals_of[rep]
        deal_id = rnd.choice(tuple(open_deals)) if open_deals and rnd.random() < 0.5 else None
        activity = Activity.log(id=self.uuid(), kind=rnd.choice(v.ACTIVITY_KINDS), member_id=rep, deal_id=deal_id,
                                note="", actor=self.email[rep], effective_at=at)
        self.touch(activity)

    def create_task(self, rep: UUID, day: date) -> None:
        rnd = self.rnd
        at = self.moment(day, rnd.uniform(8, 10))
        targets = self.member_targets.get(rep) or []
        plan, target = rnd.choice(targets) if targets else (None, None)
        task = Task.create(id=self.uuid(), title=rnd.choice(("Run 10 demos", "Call dormant accounts",
                                                             "Prepare QBR", "Follow up proposals")),
                           assignee_id=rep, due=day + timedelta(days=rnd.randint(7, 30)),
                           plan_id=plan.id if plan else None, target_id=target, actor=self.email[rep], effective_at=at)
        self.touch(task)
        self.tasks[task.id] = task
        self.schedule(at + timedelta(days=rnd.uniform(2, 8)), "task", task.id)

    def step_task(self, task: Task, when: datetime) -> None:
        rnd = self.rnd
        at = self.at(task, min(when, self.end))
        actor = self.email.get(task.assignee_id, HEAD_OF_SALES)
        roll = rnd.random()
        if roll < 0.08:
            task.cancel(reason="no longer relevant", actor=actor, effective_at=at)
        elif roll < 0.2 and task.due >= at.date():
            task.reschedule(task.due + timedelta(days=rnd.randint(3, 14)), reason="customer availability",
                            actor=actor, effective_at=at)
        elif task.progress >= 60 or roll > 0.9:
            task.complete(outcome=rnd.choice(("done", "done, two meetings booked", "partly done")), actor=actor,
                          effective_at=at)
        else:
            task.report_progress(min(100, task.progress + rnd.randint(20, 50)), note="on it", actor=actor,
                                 effective_at=at)
        self.touch(task)
        if task.status == "open":
            self.schedule(at + timedelta(days=rnd.uniform(2, 8)), "task", task.id)
        else:
            del self.tasks[task.id]

    # --- people move, leave and join --------------------------------------------------------------

    def reorganise(self, at: datetime) -> None:
        rnd = self.rnd
        reps = list(self.members)
        teams = list(self.teams)
        for rep in rnd.sample(reps, max(1, len(reps) // 30)):  # about 3% of reps change teams each month
            if len(teams) < 2 or len(self.teams[self.team_of[rep]]) < 2:
                continue
            team = rnd.choice([t for t in teams if t != self.team_of[rep]])
            member = self.members[rep]
            member.move(team, rnd.choice(("covers a new territory", "team rebalanced", "promotion")),
                        actor=HEAD_OF_SALES, effective_at=self.at(member, at))
            self.touch(member)
            self.teams[self.team_of[rep]].remove(rep)
            self.teams[team].append(rep)
            self.team_of[rep] = team
        for rep in reps:  # about 1% of reps leave each month
            if rnd.random() < 0.01:
                self.leave(rep, at)

    def leave(self, rep: UUID, at: datetime) -> None:
        """A rep leaves: deals and tasks go to a teammate, targets are removed, a new rep is hired."""
        team = self.team_of[rep]
        teammates = [m for m in self.teams[team] if m != rep] or [m for m in self.members if m != rep]
        for deal_id in list(self.deals_of[rep]):
            deal = self.deals[deal_id]
            if not deal.is_closed:
                self.hand_over(deal, self.rnd.choice(teammates), f"{self.members[rep].name} left", at)
        for task in [t for t in self.tasks.values() if t.assignee_id == rep]:
            task.reassign(self.rnd.choice(teammates), reason=f"{self.members[rep].name} left", actor=HEAD_OF_SALES,
                          effective_at=self.at(task, at))
            self.touch(task)
        for plan, target in self.member_targets.pop(rep, []):
            if target in plan.targets and plan.status != "closed":
                # The team keeps its number: the teammates take over the leaver's share.
                shared = plan.decomposition_of(target)
                mode = "respread" if shared is not None and len(shared["children"]) > 1 else "subtree"
                plan.remove_target(target_id=target, mode=mode, reason=f"{self.members[rep].name} left the company",
                                   actor=HEAD_OF_SALES, effective_at=self.at(plan, at))
                self.touch(plan)
        member = self.members.pop(rep)
        member.deactivate(reason="left the company", actor=HEAD_OF_SALES, effective_at=self.at(member, at))
        self.touch(member)
        self.teams[team].remove(rep)
        del self.team_of[rep]
        self.deals_of.pop(rep, None)
        self.hire(team, at + timedelta(hours=1))

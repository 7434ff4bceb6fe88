"""The target tree always adds up, its children lie within their parent, and a period can be locked.

Acme's FY2026 plan: a year of 1,200,000 split by quarter (300,000 each) and, a second view of
the same number, by rep (Ann 40 %, Bo 50 %, Chen 10 %: 480,000 / 600,000 / 120,000). Every
figure below is worked out by hand in the test. The stories run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.application import SalesPlanning
from domain.errors import DomainError, RuleViolation, ValidationError
from domain.plan import Plan, Spread, upside_of
from domain.values import Scope
from projections.folds.progress import LIVE as PROGRESS
from projections.history import Cut
from projections.queries.progress import progress
from projections.queries.versions import compare_with_actuals
from tests.api_helpers import Api, api_fixture  # noqa: F401  (the ``api`` fixture)
from tests.test_audit import caught_up, projected
from tests.test_domain_rules import refused

D = Decimal
M = "maria@acme.example"
Q = ("2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4")
MONTHS = [f"2026-{m:02d}" for m in range(1, 13)]


def at(month: int, day: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, 9, tzinfo=UTC)


@dataclass
class Acme:
    company: UUID
    south: UUID
    south_key: UUID  # a team beneath South
    north: UUID
    ann: UUID
    bo: UUID
    chen: UUID
    omar: UUID  # North's rep
    plan: UUID


@pytest.fixture
def acme(app: SalesPlanning) -> Acme:
    start = at(12, 1, 2025)
    company = app.add_unit(name="Acme", actor=M, effective_at=start).id
    south = app.add_unit(name="South", parent_id=company, actor=M, effective_at=start).id
    south_key = app.add_unit(name="South Key Accounts", parent_id=south, actor=M, effective_at=start).id
    north = app.add_unit(name="North", parent_id=company, actor=M, effective_at=start).id
    ann, bo, chen = (app.add_member(name=n, role="rep", unit_id=south, actor=M, effective_at=start).id
                     for n in ("Ann", "Bo", "Chen"))
    omar = app.add_member(name="Omar", role="rep", unit_id=north, actor=M, effective_at=start).id
    plan = app.draft_plan(name="FY2026 South", span="2026", currency="EUR", unit_id=south, actor=M,
                          effective_at=at(12, 10, 2025)).id
    return Acme(company, south, south_key, north, ann, bo, chen, omar, plan)


@dataclass
class Year:
    year: UUID
    quarters: list[UUID]
    reps: list[UUID]  # Ann, Bo, Chen


def plan_the_year(app: SalesPlanning, a: Acme, stretch: str | None = None) -> Year:
    year = UUID(app.set_target(a.plan, metric="revenue", period="2026", scope=Scope(unit_id=a.south),
                               committed="1200000.00", stretch=stretch, actor=M,
                               effective_at=at(12, 11, 2025)).details["target_id"])
    quarters = app.decompose_target(a.plan, parent_id=year, by="period", parts=list(Q), actor=M,
                                    effective_at=at(12, 11, 2025))
    reps = app.decompose_target(a.plan, parent_id=year, by="member", parts=[str(a.ann), str(a.bo), str(a.chen)],
                                method="weights", weights=[D("0.4"), D("0.5"), D("0.1")], actor=M,
                                effective_at=at(12, 11, 2025))
    return Year(year, [UUID(c) for c in quarters.details["child_ids"]], [UUID(c) for c in reps.details["child_ids"]])


def committed(app: SalesPlanning, a: Acme, *targets: UUID) -> list[Decimal]:
    plan = app.get(Plan, a.plan)
    return [plan.targets[t]["committed"] for t in targets]


def last_event(app: SalesPlanning, a: Acme) -> Any:
    return list(app.events.get(a.plan))[-1]


def assert_adds_up(plan: Plan) -> None:
    """Every decomposition's children sum exactly to their parent, committed and upside."""
    for parent_id, decompositions in plan.decompositions.items():
        parent = plan.targets[parent_id]
        for d in decompositions:
            kids = [plan.targets[c] for c in d["children"]]
            assert sum(k["committed"] for k in kids) == parent["committed"], (parent["period"], d["by"])
            assert sum(upside_of(k["committed"], k["stretch"]) for k in kids) == upside_of(
                parent["committed"], parent["stretch"]), (parent["period"], d["by"])
    for t in plan.targets.values():
        assert t["committed"] >= 0 and (t["stretch"] is None or t["stretch"] >= t["committed"])


# --- the tree always adds up --------------------------------------------------------------------


def test_q2_revised_down_with_its_parent_takes_the_year_and_the_rep_split_with_it(app: SalesPlanning,
                                                                                acme: Acme) -> None:
    y = plan_the_year(app, acme)
    assert committed(app, acme, *y.quarters) == [D("300000.00")] * 4
    assert committed(app, acme, *y.reps) == [D("480000.00"), D("600000.00"), D("120000.00")]
    app.publish_plan(acme.plan, note="baseline", actor=M, effective_at=at(12, 15, 2025))

    why = "the Globex renewal moves to 2027"
    result = app.revise_target(acme.plan, target_id=y.quarters[1], committed="250000.00", absorb="parent",
                               reason=why, actor=M, effective_at=at(4, 2))
    # The year gives up the same 50,000: 1,150,000. The reps keep their shares of it:
    # 1,150,000 × 0.4 = 460,000; × 0.5 = 575,000; × 0.1 = 115,000. The other quarters stay.
    assert committed(app, acme, y.year) == [D("1150000.00")]
    assert committed(app, acme, *y.quarters) == [D("300000.00"), D("250000.00"), D("300000.00"), D("300000.00")]
    assert committed(app, acme, *y.reps) == [D("460000.00"), D("575000.00"), D("115000.00")]
    assert_adds_up(app.get(Plan, acme.plan))

    # One event carries the whole change, with its reason.
    event = last_event(app, acme)
    assert isinstance(event, Plan.TargetRevised)
    assert (event.target_id, event.previous_committed, event.committed, event.absorb, event.reason) == (
        y.quarters[1], D("300000.00"), D("250000.00"), "parent", why)
    assert [(e["target_id"], e["previous_committed"], e["committed"], e["via"]) for e in event.effects] == [
        (y.year, D("1200000.00"), D("1150000.00"), "rolled_up"),
        (y.reps[0], D("480000.00"), D("460000.00"), "re_spread"),
        (y.reps[1], D("600000.00"), D("575000.00"), "re_spread"),
        (y.reps[2], D("120000.00"), D("115000.00"), "re_spread"),
    ]
    assert result.details == {"affected_ids": [str(t) for t in (y.year, *y.reps)]}


def test_a_reps_revision_re_spreads_her_months(app: SalesPlanning, acme: Acme) -> None:
    y = plan_the_year(app, acme)
    chen = y.reps[2]
    months = [UUID(c) for c in app.decompose_target(acme.plan, parent_id=chen, by="period", parts=MONTHS, actor=M,
                                                    effective_at=at(12, 12, 2025)).details["child_ids"]]
    assert committed(app, acme, *months) == [D("10000.00")] * 12

    app.revise_target(acme.plan, target_id=chen, committed="110000.00", absorb="parent", actor=M,
                      effective_at=at(12, 13, 2025))
    # 110,000 / 12 = 9,166.666…: eleven months of 9,166.66 and January, the residue month since the
    # split, 110,000 − 11 × 9,166.66 = 9,166.74.
    assert committed(app, acme, *months) == [D("9166.74")] + [D("9166.66")] * 11
    # The year follows Chen (1,190,000) and its quarters re-spread: 297,500 each.
    assert committed(app, acme, y.year) == [D("1190000.00")]
    assert committed(app, acme, *y.quarters) == [D("297500.00")] * 4
    assert committed(app, acme, y.reps[0], y.reps[1]) == [D("480000.00"), D("600000.00")]
    assert_adds_up(app.get(Plan, acme.plan))


def test_revising_the_year_with_explicit_quarters_re_spreads_everything_beneath(app: SalesPlanning,
                                                                                acme: Acme) -> None:
    y = plan_the_year(app, acme)
    chen_months = [UUID(c) for c in app.decompose_target(
        acme.plan, parent_id=y.reps[2], by="period", parts=MONTHS, actor=M,
        effective_at=at(12, 12, 2025)).details["child_ids"]]
    quarters = dict(zip(y.quarters, (D("250000.00"), D("350000.00"), D("350000.00"), D("350000.00")), strict=True))
    app.revise_target(acme.plan, target_id=y.year, committed="1300000.00",
                      spread=[Spread(by="period", method="values", values=quarters)], actor=M,
                      effective_at=at(12, 13, 2025))
    assert committed(app, acme, *y.quarters) == list(quarters.values())
    # The rep split, not named, keeps its proportions: 520,000 / 650,000 / 130,000 …
    assert committed(app, acme, *y.reps) == [D("520000.00"), D("650000.00"), D("130000.00")]
    # … and Chen's months beneath it follow: 130,000 / 12 = 10,833.33 (January 10,833.37).
    assert committed(app, acme, *chen_months) == [D("10833.37")] + [D("10833.33")] * 11

    # Weights, the residue on a stated child: 1,000,000 by 0.3/0.3/0.3/0.1 with Q4 taking none.
    app.revise_target(acme.plan, target_id=y.year, committed="1000000.00", actor=M, effective_at=at(12, 14, 2025),
                      spread=[Spread(by="period", method="weights", residue_to=y.quarters[3],
                                     weights=dict(zip(y.quarters, (D("0.3"), D("0.3"), D("0.3"), D("0.1")),
                                                      strict=True)))])
    assert committed(app, acme, *y.quarters) == [D("300000.00")] * 3 + [D("100000.00")]
    assert_adds_up(app.get(Plan, acme.plan))

    # Values that do not add up, and a spread for a decomposition the change does not touch, are refused.
    with refused(app, RuleViolation, "decomposition.sum_mismatch", "spread/0/values"):
        app.revise_target(acme.plan, target_id=y.year, committed="900000.00", actor=M, effective_at=at(12, 15, 2025),
                          spread=[Spread(by="period", method="values", values=dict.fromkeys(y.quarters, D(1)))])
    with refused(app, RuleViolation, "spread.not_touched", "spread/0"):
        app.revise_target(acme.plan, target_id=y.year, committed="900000.00", actor=M, effective_at=at(12, 15, 2025),
                          spread=[Spread(by="segment")])
    with refused(app, ValidationError, "decomposition.values_count", "spread/0/values"):
        app.revise_target(acme.plan, target_id=y.year, committed="900000.00", actor=M, effective_at=at(12, 15, 2025),
                          spread=[Spread(by="period", method="values", values={y.quarters[0]: D("900000.00")})])


def test_a_sibling_absorbs_the_difference_and_never_goes_negative(app: SalesPlanning, acme: Acme) -> None:
    y = plan_the_year(app, acme, stretch="1320000.00")  # an upside of 30,000 on each quarter
    # Q2 drops 50,000 but keeps its 330,000 stretch: Q3 would have to take 50,000 more committed
    # with no more upside, its stretch (330,000) below its committed value (350,000).
    with refused(app, RuleViolation, "target.absorb_stretch_below_committed", "absorb"):
        app.revise_target(acme.plan, target_id=y.quarters[1], committed="250000.00", absorb=str(y.quarters[2]),
                          reason="Globex signs in July, not June", actor=M, effective_at=at(12, 12, 2025))
    app.revise_target(acme.plan, target_id=y.quarters[1], committed="250000.00", stretch="280000.00",
                      absorb=str(y.quarters[2]), reason="Globex signs in July, not June", actor=M,
                      effective_at=at(12, 12, 2025))
    assert committed(app, acme, *y.quarters) == [D("300000.00"), D("250000.00"), D("350000.00"), D("300000.00")]
    # Q3 takes the 50,000 and the same 50,000 of upside: 350,000 / 380,000. The year and the reps stay.
    plan = app.get(Plan, acme.plan)
    assert [plan.targets[q]["stretch"] for q in y.quarters] == [
        D("330000.00"), D("280000.00"), D("380000.00"), D("330000.00")]
    assert committed(app, acme, y.year, *y.reps) == [D("1200000.00"), D("480000.00"), D("600000.00"),
                                                     D("120000.00")]
    event = last_event(app, acme)
    assert [(e["target_id"], e["committed"], e["stretch"], e["via"]) for e in event.effects] == [
        (y.quarters[2], D("350000.00"), D("380000.00"), "absorbed")]
    assert_adds_up(plan)

    # Q3 holds 350,000: it cannot give 400,000 to Q2.
    with refused(app, RuleViolation, "target.absorb_negative", "absorb"):
        app.revise_target(acme.plan, target_id=y.quarters[1], committed="650000.00", stretch="700000.00",
                          absorb=str(y.quarters[2]), actor=M, effective_at=at(12, 13, 2025))
    # A rep's target is the year's child too, but not in the quarters' decomposition.
    with refused(app, RuleViolation, "target.absorb_not_sibling", "absorb"):
        app.revise_target(acme.plan, target_id=y.quarters[1], committed="240000.00", absorb=str(y.reps[0]),
                          actor=M, effective_at=at(12, 13, 2025))
    with refused(app, RuleViolation, "target.absorb_required", "absorb"):
        app.revise_target(acme.plan, target_id=y.quarters[1], committed="240000.00", actor=M,
                          effective_at=at(12, 13, 2025))
    with refused(app, RuleViolation, "target.absorb_without_parent", "absorb"):
        app.revise_target(acme.plan, target_id=y.year, committed="1.00", absorb="parent", actor=M,
                          effective_at=at(12, 13, 2025))
    with refused(app, ValidationError, "target.absorb", "absorb"):
        app.revise_target(acme.plan, target_id=y.quarters[1], committed="240000.00", absorb="the team", actor=M,
                          effective_at=at(12, 13, 2025))


def test_a_removed_quarter_is_re_spread_over_its_siblings_or_taken_out_of_the_year(app: SalesPlanning,
                                                                                     acme: Acme) -> None:
    y = plan_the_year(app, acme)
    q4_months = app.decompose_target(acme.plan, parent_id=y.quarters[3], by="period",
                                     parts=["2026-10", "2026-11", "2026-12"], actor=M,
                                     effective_at=at(12, 12, 2025)).details["child_ids"]
    with refused(app, RuleViolation, "target.remove_mode_required", "mode"):
        app.remove_target(acme.plan, target_id=y.quarters[3], actor=M, effective_at=at(12, 13, 2025))
    with refused(app, RuleViolation, "target.remove_no_siblings", "mode"):
        app.remove_target(acme.plan, target_id=y.year, mode="respread", actor=M, effective_at=at(12, 13, 2025))

    app.remove_target(acme.plan, target_id=y.quarters[3], mode="respread", reason="Q4 folds into the first three",
                      actor=M, effective_at=at(12, 13, 2025))
    # 1,200,000 over Q1–Q3 in their proportions (1:1:1): 400,000 each; Q4's months go with it.
    plan = app.get(Plan, acme.plan)
    assert committed(app, acme, *y.quarters[:3]) == [D("400000.00")] * 3
    assert y.quarters[3] not in plan.targets and not any(UUID(m) in plan.targets for m in q4_months)
    assert committed(app, acme, y.year) == [D("1200000.00")]
    event = last_event(app, acme)
    assert event.mode == "respread" and event.removed_ids == [y.quarters[3], *(UUID(m) for m in q4_months)]
    assert [(e["target_id"], e["previous_committed"], e["committed"]) for e in event.effects] == [
        (q, D("300000.00"), D("400000.00")) for q in y.quarters[:3]]
    assert_adds_up(plan)

    # Chen leaves: her 120,000 come out of the year (1,080,000) and the quarters re-spread: 360,000 each.
    app.remove_target(acme.plan, target_id=y.reps[2], mode="subtree", reason="Chen left", actor=M,
                      effective_at=at(12, 14, 2025))
    assert committed(app, acme, y.year, *y.quarters[:3], y.reps[0], y.reps[1]) == [
        D("1080000.00"), D("360000.00"), D("360000.00"), D("360000.00"), D("480000.00"), D("600000.00")]
    assert_adds_up(app.get(Plan, acme.plan))


# --- weeks clipped to their month -----------------------------------------------------------------


def test_january_splits_into_the_iso_weeks_that_overlap_it_each_clipped_to_the_month(app: SalesPlanning,
                                                                                    acme: Acme) -> None:
    january, february = (UUID(app.set_target(
        acme.plan, metric="revenue", period=p, scope=Scope(unit_id=acme.south), committed=c, actor=M,
        effective_at=at(12, 11, 2025)).details["target_id"]) for p, c in (("2026-01", "31000.00"),
                                                                         ("2026-02", "28000.00")))
    jan_weeks = [f"2026-W{w:02d}" for w in range(1, 6)]
    weeks = [UUID(c) for c in app.decompose_target(acme.plan, parent_id=january, by="period", parts=jan_weeks,
                                                   actor=M, effective_at=at(12, 12, 2025)).details["child_ids"]]
    plan = app.get(Plan, acme.plan)
    # W01 runs from Monday 29 December 2025: in January it is 1–4 January (4 days); W05 runs into
    # February: in January it is 26–31 January (6 days). Equal means by days: 1,000 a day.
    assert [(plan.targets[w]["start"], plan.targets[w]["end"]) for w in weeks] == [
        (date(2026, 1, 1), date(2026, 1, 5)), (date(2026, 1, 5), date(2026, 1, 12)),
        (date(2026, 1, 12), date(2026, 1, 19)), (date(2026, 1, 19), date(2026, 1, 26)),
        (date(2026, 1, 26), date(2026, 2, 1))]
    assert committed(app, acme, *weeks) == [D("4000.00"), D("7000.00"), D("7000.00"), D("7000.00"), D("6000.00")]
    decomposed = [e for e in app.events.get(acme.plan) if isinstance(e, Plan.TargetDecomposed)][-1]
    assert [(c["period"], c["start"], c["end"]) for c in decomposed.children][-1] == (
        "2026-W05", date(2026, 1, 26), date(2026, 2, 1))

    # 2026-W10 starts on 2 March: it does not overlap February.
    with refused(app, RuleViolation, "decomposition.period_outside", "parts/0"):
        app.decompose_target(acme.plan, parent_id=february, by="period", parts=["2026-W10"], actor=M,
                             effective_at=at(12, 12, 2025))
    # February's W05 is another cell: the same week key, its own window (1 February, 1 day).
    feb_weeks = [UUID(c) for c in app.decompose_target(
        acme.plan, parent_id=february, by="period", parts=["2026-W05", "2026-W06", "2026-W07", "2026-W08", "2026-W09"],
        actor=M, effective_at=at(12, 12, 2025)).details["child_ids"]]
    assert committed(app, acme, *feb_weeks) == [D("1000.00"), D("7000.00"), D("7000.00"), D("7000.00"),
                                               D("6000.00")]
    # Doubling January doubles each of its weeks (proportionally).
    app.revise_target(acme.plan, target_id=january, committed="62000.00", actor=M, effective_at=at(12, 13, 2025))
    assert committed(app, acme, *weeks) == [D("8000.00"), D("14000.00"), D("14000.00"), D("14000.00"),
                                           D("12000.00")]

    # The progress projection measures each week over its window.
    engine = projected(app)
    caught_up(engine)
    t = PROGRESS.targets.c
    with app.database.engine.connect() as conn:
        rows = {r.target_id: (r.period, r.period_start, r.period_end, r.committed) for r in conn.execute(
            sa.select(t.target_id, t.period, t.period_start, t.period_end, t.committed).where(
                Cut(engine.head()).where(PROGRESS.targets)))}
    assert rows[weeks[0]] == ("2026-W01", date(2026, 1, 1), date(2026, 1, 5), D("8000.00"))
    assert rows[weeks[4]] == ("2026-W05", date(2026, 1, 26), date(2026, 2, 1), D("12000.00"))
    assert rows[feb_weeks[0]] == ("2026-W05", date(2026, 2, 1), date(2026, 2, 2), D("1000.00"))

    # Measured over its window, live and as a published version: a deal Ann won on Tuesday 27 January counts for
    # January's W05, one won on Sunday 1 February (the same ISO week) for February's.
    product = app.add_product(name="GTX", product_line="GTX", list_price="100", currency="EUR", actor=M,
                              effective_at=at(12, 1, 2025)).id
    for amount, won in (("2500.00", datetime(2026, 1, 27, 15, tzinfo=UTC)), ("900.00", datetime(2026, 2, 1, 11,
                                                                                              tzinfo=UTC))):
        deal = app.open_deal(name="d", account_id=None, owner_id=acme.ann, product_id=product, amount=amount,
                             currency="EUR", expected_close=date(2026, 2, 28), actor=M,
                             effective_at=datetime(2026, 1, 20, tzinfo=UTC)).id
        app.win_deal(deal, actor=M, effective_at=won)
    app.publish_plan(acme.plan, actor=M, effective_at=datetime(2026, 2, 2, tzinfo=UTC))
    caught_up(engine)
    cut, now = Cut(engine.head()), datetime(2026, 2, 3, tzinfo=UTC)
    with app.database.engine.connect() as conn:
        live = {r.target_id: r.actual for r in progress(conn, cut=cut, now=now).rows}
        version = {r.target.target_id: r.actual for r in compare_with_actuals(conn, acme.plan, 1, cut=cut,
                                                                              now=now).rows}
    for actuals in (live, version):
        assert (actuals[weeks[4]], actuals[feb_weeks[0]], actuals[january]) == (D("2500.00"), D("900.00"),
                                                                                 D("2500.00"))


# --- children lie within their parent -----------------------------------------------------------------


def test_each_child_lies_within_its_parent_or_is_refused_naming_the_rule(app: SalesPlanning, acme: Acme) -> None:
    y = plan_the_year(app, acme)
    at_dec = at(12, 12, 2025)

    def split(parent: UUID, by: str, parts: list[str]) -> Any:
        return app.decompose_target(acme.plan, parent_id=parent, by=by, parts=parts, actor=M, effective_at=at_dec)

    # A member of another team, and the sibling unit North, are not South's to plan for.
    with refused(app, RuleViolation, "decomposition.member_outside_parent", "parts/1"):
        split(y.quarters[0], "member", [str(acme.ann), str(acme.omar)])
    with refused(app, RuleViolation, "decomposition.unit_outside_parent", "parts/0"):
        split(y.quarters[0], "unit", [str(acme.north)])
    with refused(app, RuleViolation, "decomposition.unit_outside_parent", "parts/0"):
        split(y.quarters[0], "unit", [str(acme.south)])  # a unit is not its own child
    split(y.quarters[0], "unit", [str(acme.south_key)])  # a team beneath South is

    # A narrowing only narrows: a Platform target does not split into product lines again.
    platform = UUID(app.set_target(acme.plan, metric="revenue", period="2026-Q1",
                                   scope=Scope(unit_id=acme.south, product_line="Platform"), committed="90000.00",
                                   actor=M, effective_at=at_dec).details["target_id"])
    with refused(app, RuleViolation, "decomposition.already_narrowed", "by"):
        split(platform, "product_line", ["Platform", "Services"])
    by_region = split(platform, "region", ["Bavaria", "Saxony"]).details["child_ids"]
    assert app.get(Plan, acme.plan).targets[UUID(by_region[0])]["scope"]["product_line"] == "Platform"

    # A period child lies in the parent's period, and one decomposition's periods are of one kind.
    with refused(app, RuleViolation, "decomposition.period_outside", "parts/1"):
        split(y.quarters[0], "period", ["2026-03", "2026-04"])
    with refused(app, RuleViolation, "decomposition.period_kinds", "parts/1"):
        split(platform, "period", ["2026-01", "2026-W06"])

    # One decomposition per axis: the year is split by quarter (period) and by rep (owner) already.
    with refused(app, RuleViolation, "decomposition.axis_taken", "by"):
        split(y.year, "period", MONTHS)
    with refused(app, RuleViolation, "decomposition.axis_taken", "by"):
        split(y.year, "unit", [str(acme.south_key)])
    split(y.year, "segment", ["enterprise", "smb"])  # a third view of the same number


def test_a_member_belongs_to_the_parent_unit_at_the_periods_start(app: SalesPlanning, acme: Acme) -> None:
    y = plan_the_year(app, acme)
    # Omar moves from North to South on 15 April: Q2 began with him in North, Q3 with him in South.
    app.move_member(acme.omar, unit_id=acme.south, reason="joins South", actor=M, effective_at=at(4, 15))
    with refused(app, RuleViolation, "decomposition.member_outside_parent", "parts/0"):
        app.decompose_target(acme.plan, parent_id=y.quarters[1], by="member", parts=[str(acme.omar)], actor=M,
                             effective_at=at(4, 16))
    app.decompose_target(acme.plan, parent_id=y.quarters[2], by="member", parts=[str(acme.omar)], actor=M,
                         effective_at=at(4, 16))
    # A rep who joined South after Q1 began counts in the unit she joined.
    dee = app.add_member(name="Dee", role="rep", unit_id=acme.south_key, actor=M, effective_at=at(2, 1)).id
    app.decompose_target(acme.plan, parent_id=y.quarters[0], by="member", parts=[str(dee)], actor=M,
                         effective_at=at(4, 16))


# --- locked periods ----------------------------------------------------------------------------------


def test_a_manager_locks_january_and_later_entries_are_still_accepted(app: SalesPlanning, acme: Acme) -> None:
    y = plan_the_year(app, acme)
    app.publish_plan(acme.plan, note="baseline", actor=M, effective_at=at(12, 15, 2025))
    with refused(app, RuleViolation, "reason.required", "reason"):
        app.lock_period(acme.plan, period="2026-01", reason=" ", actor=M, effective_at=at(2, 3))
    with refused(app, RuleViolation, "target.period_outside_span", "period"):
        app.lock_period(acme.plan, period="2027-01", reason="closed", actor=M, effective_at=at(2, 3))
    app.lock_period(acme.plan, period="2026-01", reason="January closed and reported", actor=M,
                    effective_at=at(2, 3))
    locked = last_event(app, acme)
    assert isinstance(locked, Plan.PeriodLocked)
    assert (locked.period, locked.start, locked.end, locked.plan_version, locked.reason, locked.actor) == (
        "2026-01", date(2026, 1, 1), date(2026, 2, 1), 1, "January closed and reported", M)
    with refused(app, RuleViolation, "period.already_locked", "period"):
        app.lock_period(acme.plan, period="2026-W03", reason="again", actor=M, effective_at=at(2, 4))
    with refused(app, RuleViolation, "period.not_locked", "period"):
        app.unlock_period(acme.plan, period="2026-02", reason="not locked", actor=M, effective_at=at(2, 4))

    # History stays true: a January win entered in February is accepted, and so is a revision of Q1.
    deal = app.open_deal(name="Late Globex order", account_id=None, owner_id=acme.ann,
                         product_id=app.add_product(name="Platform", product_line="Platform", list_price="1000",
                                                    currency="EUR", actor=M, effective_at=at(1, 2)).id,
                         amount="5000", currency="EUR", expected_close=date(2026, 1, 30), actor=M,
                         effective_at=at(1, 20)).id
    app.win_deal(deal, actor=M, effective_at=at(1, 28))
    app.revise_target(acme.plan, target_id=y.quarters[0], committed="310000.00", absorb=str(y.quarters[1]),
                      reason="late January order", actor=M, effective_at=at(2, 5))

    app.unlock_period(acme.plan, period="2026-01", reason="a late invoice reopens January", actor=M,
                      effective_at=at(2, 6))
    assert app.get(Plan, acme.plan).locked_periods == {}
    unlocked = last_event(app, acme)
    assert (type(unlocked), unlocked.period, unlocked.reason) == (Plan.PeriodUnlocked, "2026-01",
                                                                  "a late invoice reopens January")

    # The audit has a row for each, with its reason; the versions projection keeps the lock's span.
    engine = projected(app)
    caught_up(engine)
    from projections.folds.versions import LIVE as VERSIONS
    from projections.queries.audit import audit_history
    with app.database.engine.connect() as conn:
        rows = [r for r in audit_history(conn, plan_id=acme.plan, limit=1000).rows
                if r.event_type in ("Plan.PeriodLocked", "Plan.PeriodUnlocked")]
        lock_rows = conn.execute(sa.select(VERSIONS.locks)).mappings().all()
    assert [(r.summary, r.reason) for r in rows] == [
        ("plan FY2026 South: period 2026-01 locked (2026-01-01 to 2026-01-31)", "January closed and reported"),
        ("plan FY2026 South: period 2026-01 unlocked", "a late invoice reopens January")]
    assert rows[0].changes["locked"] == {"before": False, "after": True}
    [lock] = lock_rows
    assert (lock["period"], lock["start"], lock["end"], lock["reason"], lock["unlock_reason"]) == (
        "2026-01", date(2026, 1, 1), date(2026, 2, 1), "January closed and reported", "a late invoice reopens January")
    assert lock["position"] < lock["unlocked_position"]


# --- over HTTP ------------------------------------------------------------------------------------------


def test_the_api_revises_removes_and_locks_with_the_new_options(api: Api) -> None:
    w = api.world
    plan = api.ok("admin", "/plans", {"name": "East 2026", "span": "2026", "currency": "EUR",
                                      "unit_id": str(w.east)})
    year = api.ok("admin", f"/plans/{plan['id']}/targets", {
        "metric": "revenue", "period": "2026", "scope": {"unit_id": str(w.east)}, "committed": "1200000"},
        if_match=plan["version"])
    quarters = api.ok("admin", f"/plans/{plan['id']}/decompose", {
        "parent_id": year["target_id"], "by": "period", "parts": list(Q)}, if_match=year["version"])
    q1, q2, q3, q4 = quarters["child_ids"]

    outside = api.post("admin", f"/plans/{plan['id']}/decompose", {
        "parent_id": year["target_id"], "by": "member", "parts": [str(w.ann), str(w.cy)]},
        if_match=quarters["version"])
    assert outside.status_code == 422 and outside.headers["content-type"] == "application/problem+json"
    assert (outside.json()["rule"], outside.json()["pointer"]) == ("decomposition.member_outside_parent", "/parts/1")
    twice = api.post("admin", f"/plans/{plan['id']}/decompose", {
        "parent_id": year["target_id"], "by": "period", "parts": MONTHS}, if_match=quarters["version"])
    assert (twice.status_code, twice.json()["rule"], twice.json()["pointer"]) == (422, "decomposition.axis_taken", "/by")

    spread = api.ok("admin", f"/plans/{plan['id']}/revise", {
        "target_id": year["target_id"], "committed": "1000000",
        "spread": [{"by": "period", "method": "values",
                    "values": {q1: "100000", q2: "300000", q3: "300000", q4: "300000"}}]},
        if_match=quarters["version"])
    assert spread["affected_ids"] == [q1]  # Q2–Q4 keep their 300,000
    absorbed = api.ok("admin", f"/plans/{plan['id']}/revise", {"target_id": q2, "committed": "250000",
                                                               "absorb": q3}, if_match=spread["version"])
    assert absorbed["affected_ids"] == [q3]
    bad = api.post("admin", f"/plans/{plan['id']}/revise", {"target_id": q2, "committed": "1", "absorb": "everyone"},
                   if_match=absorbed["version"])
    assert (bad.status_code, bad.json()["pointer"]) == (422, "/absorb")
    removed = api.ok("admin", f"/plans/{plan['id']}/remove-target", {"target_id": q1, "mode": "respread",
                                                                     "method": "equal", "residue_to": q4},
                     if_match=absorbed["version"])
    # Q1's 100,000 shared equally over Q2–Q4: 33,333.33 each and Q4 the odd cent.
    assert removed["affected_ids"] == [q2, q3, q4]
    tree = api.get("admin", f"/plans/{plan['id']}").json()
    values = {t["target_id"]: t["committed"] for t in tree["targets"]}
    assert [values[q] for q in (q2, q3, q4)] == ["283333.33", "383333.33", "333333.34"]
    assert [d["by"] for d in tree["decompositions"]] == ["period"]

    first = api.post("admin", f"/plans/{plan['id']}/lock-period", {"period": "2026-01", "reason": "January closed"},
                     if_match=removed["version"], key="lock-jan")
    again = api.post("admin", f"/plans/{plan['id']}/lock-period", {"period": "2026-01", "reason": "January closed"},
                     if_match=removed["version"], key="lock-jan")
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    locked = first.json()
    assert api.get("admin", f"/plans/{plan['id']}").json()["locked_periods"] == [
        {"period": "2026-01", "start": "2026-01-01", "end": "2026-02-01"}]
    stale = api.post("admin", f"/plans/{plan['id']}/unlock-period", {"period": "2026-01", "reason": "reopened"},
                     if_match=removed["version"])
    assert stale.status_code == 412
    no_reason = api.post("admin", f"/plans/{plan['id']}/lock-period", {"period": "2026-02"},
                         if_match=locked["version"])
    assert (no_reason.status_code, no_reason.json()["pointer"]) == (422, "/reason")
    api.ok("admin", f"/plans/{plan['id']}/unlock-period", {"period": "2026-01", "reason": "reopened"},
           if_match=locked["version"])
    schema = api.get("admin", "/openapi.json").json()["components"]["schemas"]
    assert {"absorb", "spread"} <= set(schema["ReviseTarget"]["properties"])
    assert {"mode", "method", "residue_to"} <= set(schema["RemoveTarget"]["properties"])


# --- any sequence of accepted commands keeps every decomposition exact -------------------------------


def commands() -> st.SearchStrategy[list[tuple[Any, ...]]]:
    amount = st.integers(min_value=0, max_value=5_000_000).map(lambda c: D(c) / 100)
    pick = st.integers(min_value=0, max_value=10_000)
    split = st.tuples(st.just("split"), pick, st.sampled_from(["quarters", "months", "weeks", "reps", "units",
                                                                 "lines"]), st.sampled_from(["equal", "weights"]), pick)
    # A revision to between 0 % and 200 % of the target's value, with or without an upside.
    revise = st.tuples(st.just("revise"), pick, st.integers(min_value=0, max_value=200), st.booleans(), pick)
    kinds: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
        "set": st.tuples(st.just("set"), st.sampled_from(["revenue", "new_deals"]), st.sampled_from(["2026", *Q]),
                         amount),
        "split": split, "revise": revise,
        "remove": st.tuples(st.just("remove"), pick, st.sampled_from(["subtree", "respread"])),
        "publish": st.tuples(st.just("publish")),
    }
    command = st.sampled_from(["set", "split", "split", "revise", "revise", "revise", "revise", "remove",
                               "publish"]).flatmap(lambda kind: kinds[kind])
    # Every script starts from a year split two ways, so that most commands land inside a tree.
    start = st.tuples(st.tuples(st.just("set"), st.just("revenue"), st.just("2026"), amount),
                      st.tuples(st.just("split"), st.just(0), st.just("quarters"), st.just("equal"), pick),
                      st.tuples(st.just("split"), st.just(0), st.just("reps"), st.just("weights"), pick))
    return st.tuples(start, st.lists(command, min_size=2, max_size=14)).map(lambda s: [*s[0], *s[1]])


@dataclass
class Published:
    position: int
    version: int


def play(app: SalesPlanning, a: Acme, plan_id: UUID, script: list[tuple[Any, ...]]) -> Iterator[Published]:
    """Run a random script; every accepted command must leave the tree exact, a refused one unchanged."""
    when = datetime(2025, 12, 20, tzinfo=UTC)
    for step in script:
        plan = app.get(Plan, plan_id)
        ids = sorted(plan.targets, key=str)
        try:
            result = _run(app, a, plan, ids, step, when)
        except DomainError:
            assert app.get(Plan, plan_id).version == plan.version
            continue
        assert_adds_up(app.get(Plan, plan_id))
        if step[0] == "publish" and result is not None:
            yield Published(result.position, result.version)


def _run(app: SalesPlanning, a: Acme, plan: Plan, ids: list[UUID], step: tuple[Any, ...], when: datetime) -> Any:
    kind = step[0]
    if kind == "set":
        _, metric, period, value = step
        value = value if metric == "revenue" else value.to_integral_value()
        return app.set_target(plan.id, metric=metric, period=period, scope=Scope(unit_id=a.south), committed=value,
                              stretch=value * 2, reason="why", actor=M, effective_at=when)
    if kind == "publish":
        return app.publish_plan(plan.id, actor=M, effective_at=when)
    if not ids:
        return None
    target = plan.targets[ids[step[1] % len(ids)]]
    if kind == "split":
        _, _, how, method, extra = step
        parts, by = _parts(a, target, how)
        weights = None
        if method == "weights":
            raw = [D(1 + (extra >> i) % 7) for i in range(len(parts))]
            weights = [r / sum(raw) for r in raw]
            weights[-1] = 1 - sum(weights[:-1])
        return app.decompose_target(plan.id, parent_id=target["target_id"], by=by, parts=parts, method=method,
                                    weights=weights, residue_to=extra % len(parts), reason="why", actor=M,
                                    effective_at=when)
    if kind == "revise":
        _, _, percent, upside, choice = step
        places = D("0.01") if target["metric"] == "revenue" else D(1)
        value = (target["committed"] * percent / 100).quantize(places)
        decomposition = plan.decomposition_of(target["target_id"])
        absorb = None
        if decomposition is not None:
            options = ["parent", *(str(c) for c in decomposition["children"] if c != target["target_id"])]
            absorb = options[choice % len(options)]
        return app.revise_target(plan.id, target_id=target["target_id"], committed=value,
                                 stretch=value * 2 if upside else None, clear_stretch=not upside,
                                 absorb=absorb, reason="why", actor=M, effective_at=when)
    _, _, mode = step
    mode = mode if plan.decomposition_of(target["target_id"]) is not None else None
    return app.remove_target(plan.id, target_id=target["target_id"], mode=mode, reason="why", actor=M,
                             effective_at=when)


def _parts(a: Acme, target: dict[str, Any], how: str) -> tuple[list[str], str]:
    period = target["period"]
    if how == "quarters":
        return list(Q), "period"
    if how == "months":
        return ([m for m in MONTHS if m.startswith(period)] if "Q" not in period else
                [f"2026-{3 * int(period[-1]) - 2 + i:02d}" for i in range(3)]), "period"
    if how == "weeks":
        return [f"2026-W{w:02d}" for w in range(1, 6)], "period"
    if how == "reps":
        return [str(a.ann), str(a.bo), str(a.chen)], "member"
    if how == "units":
        return [str(a.south_key)], "unit"
    return ["Platform", "Services"], "product_line"


def test_after_any_accepted_commands_every_decomposition_adds_up_in_the_plan_and_in_progress(
    app: SalesPlanning, acme: Acme
) -> None:
    engine = projected(app, projections=[PROGRESS.__class__()])
    plans: list[UUID] = []

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(script=commands())
    def check(script: list[tuple[Any, ...]]) -> None:
        plan_id = app.draft_plan(name=f"FY2026 #{len(plans)}", span="2026", currency="EUR", unit_id=acme.south,
                                 actor=M, effective_at=datetime(2025, 12, 20, tzinfo=UTC)).id
        plans.append(plan_id)
        published = list(play(app, acme, plan_id, script))
        engine.catch_up()
        t = PROGRESS.targets.c
        with app.database.engine.connect() as conn:
            for version in published:
                # The tree as the version froze it, and the projection's target rows at that cut.
                frozen: Plan = app.repository.get(plan_id, version=version.version)
                rows = {r.target_id: r for r in conn.execute(sa.select(PROGRESS.targets).where(
                    Cut(version.position).where(PROGRESS.targets), t.plan_id == plan_id, t.removed.is_(False)))}
                assert set(rows) == set(frozen.targets)
                for parent_id, decompositions in frozen.decompositions.items():
                    for d in decompositions:
                        kids = [rows[c] for c in d["children"]]
                        parent = rows[parent_id]
                        assert sum(k.committed for k in kids) == parent.committed
                        assert sum(upside_of(k.committed, k.stretch) for k in kids) == upside_of(
                            parent.committed, parent.stretch)

    check()
    assert plans

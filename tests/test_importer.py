"""A real CRM export imported as history: the product's figures equal the ones counted from the CSV.

The reference is computed here with the csv module alone: won revenue and won deals per
agent, per regional office and per quarter, win rate per product and per product line, deals
opened per quarter. The product's answers come from ``progress()`` over targets set for the
comparison (and, per product, which no target scope names, from the progress history table).
A small hand-made export shows what happens to dirty rows.
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa

from api.importer import CrmImportError, ImportReport, Refusal, import_crm
from domain.application import SalesPlanning
from domain.catalogue import Product
from domain.values import Scope
from projections.engine import ProjectionEngine
from projections.folds.progress import LIVE
from projections.history import Cut
from projections.queries.progress import ProgressFilter, ProgressRow, progress
from projections.registry import all_projections

# The shared data folder sits beside the repository (../shared), on a developer's machine and in CI.
CRM_DATA = Path(os.environ.get("SALESPLAN_CRM_DATA",
                               Path(__file__).resolve().parents[2] / "shared" / "data" / "crm-sales-opportunities"))
NOW = datetime(2018, 1, 15, tzinfo=UTC)
QUARTERS = ("2017-Q1", "2017-Q2", "2017-Q3", "2017-Q4")
# The one product name the pipeline spells differently from products.csv (SOURCE.md says so).
PIPELINE_SPELLING = {"GTXPro": "GTX Pro"}


@pytest.fixture(scope="module")
def crm_data() -> Path:
    if not (CRM_DATA / "sales_pipeline.csv").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the CRM export is missing at {CRM_DATA} and CI=true")
        pytest.skip(f"the CRM export is not at {CRM_DATA}; set SALESPLAN_CRM_DATA")
    return CRM_DATA


# --- the reference, from the CSV files alone ---------------------------------------------------


def quarter_of(day: str) -> str:
    d = date.fromisoformat(day)
    return f"{d.year}-Q{(d.month + 2) // 3}"


@dataclass
class Reference:
    office_of: dict[str, str] = field(default_factory=dict)
    series_of: dict[str, str] = field(default_factory=dict)
    revenue_by_agent: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    won_by_agent: Counter[str] = field(default_factory=Counter)
    revenue_by_office: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    won_by_office: Counter[str] = field(default_factory=Counter)
    revenue_by_quarter: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    won_by_quarter: Counter[str] = field(default_factory=Counter)
    opened_by_quarter: Counter[str] = field(default_factory=Counter)
    closed_by_product: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    closed_by_line: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    stages: Counter[str] = field(default_factory=Counter)


def reference(directory: Path) -> Reference:
    ref = Reference()
    with (directory / "sales_teams.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            ref.office_of[row["sales_agent"]] = row["regional_office"]
    with (directory / "products.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            ref.series_of[row["product"]] = row["series"]
    with (directory / "sales_pipeline.csv").open(newline="") as f:
        pipeline = list(csv.DictReader(f))
    # Prospects have no engage_date: the importer opens them on the export's latest date.
    latest = max(d for row in pipeline for d in (row["engage_date"], row["close_date"]) if d)
    for row in pipeline:
        agent, stage = row["sales_agent"], row["deal_stage"]
        product = PIPELINE_SPELLING.get(row["product"], row["product"])
        ref.stages[stage] += 1
        ref.opened_by_quarter[quarter_of(row["engage_date"] or latest)] += 1
        if stage in ("Won", "Lost"):
            ref.closed_by_product[product][stage] += 1
            ref.closed_by_line[ref.series_of[product]][stage] += 1
        if stage == "Won":
            value, quarter = Decimal(row["close_value"]), quarter_of(row["close_date"])
            ref.revenue_by_agent[agent] += value
            ref.won_by_agent[agent] += 1
            ref.revenue_by_office[ref.office_of[agent]] += value
            ref.won_by_office[ref.office_of[agent]] += 1
            ref.revenue_by_quarter[quarter] += value
            ref.won_by_quarter[quarter] += 1
    return ref


def win_rate(closed: Counter[str]) -> Decimal:
    return (Decimal(closed["Won"]) / (closed["Won"] + closed["Lost"])).quantize(Decimal("0.0001"))


# --- the product's answer ----------------------------------------------------------------------


def catch_up(app: SalesPlanning) -> ProjectionEngine:
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    return engine


def names(app: SalesPlanning) -> tuple[dict[str, UUID], dict[str, UUID], UUID]:
    """Members and units by name, and the company (the root unit), as the projection knows them."""
    with app.database.engine.connect() as conn:
        cut = Cut(app.recorder.max_notification_id() or 0)
        members = {r.name: r.member_id for r in conn.execute(
            sa.select(LIVE.members.c.name, LIVE.members.c.member_id).where(cut.where(LIVE.members)))}
        units = list(conn.execute(sa.select(LIVE.units.c.name, LIVE.units.c.unit_id, LIVE.units.c.parent_id)
                                  .where(cut.where(LIVE.units))))
    roots = [u.unit_id for u in units if u.parent_id is None]
    assert len(roots) == 1
    return members, {u.name: u.unit_id for u in units}, roots[0]


def test_the_crm_export_imports_and_its_figures_match_the_csv(app: SalesPlanning, crm_data: Path) -> None:
    ref = reference(crm_data)
    done: list[tuple[int, int]] = []
    report = import_crm(app, crm_data, progress=lambda d, t: done.append((d, t)))

    assert report.rows_read == {"sales_teams.csv": 35, "products.csv": 7, "accounts.csv": 85,
                                "sales_pipeline.csv": 8800}
    assert report.refused == []
    # Company, three offices, six managers' teams; 35 agents and 6 managers.
    assert report.imported == {"unit": 10, "member": 41, "product": 7, "account": 85, "deal": 8800}
    assert report.events == 8943 + ref.stages["Won"] + ref.stages["Lost"]  # one per entity, one per close
    assert report.mappings == {("product", "GTXPro", "GTX Pro"): 1480, ("sector", "technolgy", "technology"): 12,
                               ("office_location", "Philipines", "Philippines"): 1}
    assert any("Prospecting" in note and "2017-12-31" in note for note in report.notes)
    assert done[-1] == (8943, 8943) and len(done) > 10  # batches, each reported

    engine = catch_up(app)
    assert all(s.status == "live" and s.lag_events == 0 for s in engine.status())

    members, units, company = names(app)
    assert set(ref.office_of) <= set(members)
    actor = "retrospective"
    plan = app.draft_plan(name="FY2017 as imported", span="2017", currency="USD", unit_id=company, actor=actor).id
    plan_2016 = app.draft_plan(name="FY2016 as imported", span="2016", currency="USD", unit_id=company,
                               actor=actor).id
    targets: dict[UUID, tuple[str, str, str]] = {}  # target id → (what, whose, metric)

    def target(what: str, whose: str, metric: str, period: str, scope: Scope, committed: str = "1",
               plan_id: UUID = plan) -> None:
        result = app.set_target(plan_id, metric=metric, period=period, scope=scope, committed=committed, actor=actor)
        targets[UUID(result.details["target_id"])] = (what, whose, metric)

    for agent in ref.office_of:
        for metric in ("revenue", "deals_won"):
            target("agent", agent, metric, "2017", Scope(member_id=members[agent]))
    for office in set(ref.office_of.values()):
        for metric in ("revenue", "deals_won"):
            target("office", office, metric, "2017", Scope(unit_id=units[office]))
    for quarter in QUARTERS:
        for metric in ("revenue", "deals_won", "new_deals"):
            target("quarter", quarter, metric, quarter, Scope(unit_id=company))
    target("quarter", "2016-Q4", "new_deals", "2016-Q4", Scope(unit_id=company), plan_id=plan_2016)
    for line in set(ref.series_of.values()):
        target("product_line", line, "win_rate", "2017", Scope(unit_id=company, product_line=line), "0.5")
    catch_up(app)

    head = app.recorder.max_notification_id() or 0
    with app.database.engine.connect() as conn:
        rows: list[ProgressRow] = []
        for plan_id in (plan, plan_2016):
            rows += progress(conn, cut=Cut(head), now=NOW, filters=ProgressFilter(plan_id=plan_id)).rows
    assert {r.target_id for r in rows} == set(targets)
    got = {targets[r.target_id]: r.actual for r in rows}

    expected: dict[tuple[str, str, str], Decimal] = {}
    for agent in ref.office_of:  # every agent, those without a single deal too
        expected[("agent", agent, "revenue")] = ref.revenue_by_agent[agent]
        expected[("agent", agent, "deals_won")] = Decimal(ref.won_by_agent[agent])
    for office in set(ref.office_of.values()):
        expected[("office", office, "revenue")] = ref.revenue_by_office[office]
        expected[("office", office, "deals_won")] = Decimal(ref.won_by_office[office])
    for quarter in QUARTERS:
        expected[("quarter", quarter, "revenue")] = ref.revenue_by_quarter[quarter]
        expected[("quarter", quarter, "deals_won")] = Decimal(ref.won_by_quarter[quarter])
        expected[("quarter", quarter, "new_deals")] = Decimal(ref.opened_by_quarter[quarter])
    expected[("quarter", "2016-Q4", "new_deals")] = Decimal(ref.opened_by_quarter["2016-Q4"])
    for line, closed in ref.closed_by_line.items():
        expected[("product_line", line, "win_rate")] = win_rate(closed)
    assert got == expected
    # Every won deal closed in 2017: the quarters add up to the whole, and the offices too.
    assert sum(ref.revenue_by_quarter.values()) == sum(ref.revenue_by_office.values()) > 0

    # Per product, which no target scope names: the deals as the progress history holds them at the cut.
    deals = LIVE.deals.c
    with app.database.engine.connect() as conn:
        stored = list(conn.execute(sa.select(deals.product_id, deals.stage, sa.func.count()).where(
            Cut(head).where(LIVE.deals)).group_by(deals.product_id, deals.stage)))
    by_product: dict[str, Counter[str]] = defaultdict(Counter)
    for product_id, stage, count in stored:
        by_product[app.get(Product, product_id).name][stage] += count
    assert {p: (c["won"], c["lost"]) for p, c in by_product.items()} == {
        p: (c["Won"], c["Lost"]) for p, c in ref.closed_by_product.items()}
    assert {p: win_rate(Counter(Won=c["won"], Lost=c["lost"])) for p, c in by_product.items()} == {
        p: win_rate(c) for p, c in ref.closed_by_product.items()}
    # Engaging deals are open and qualified, prospects are leads.
    assert sum(c["qualified"] for c in by_product.values()) == ref.stages["Engaging"]
    assert sum(c["lead"] for c in by_product.values()) == ref.stages["Prospecting"]


def test_importing_the_same_export_again_adds_nothing(app: SalesPlanning, crm_data: Path) -> None:
    first = import_crm(app, crm_data, batch_size=2000)
    head = app.recorder.max_notification_id()
    again = import_crm(app, crm_data)
    assert app.recorder.max_notification_id() == head
    assert again.events == 0 and not again.imported and again.refused == []
    assert again.already_imported == first.imported


# --- a small, dirty export ---------------------------------------------------------------------


def write_export(directory: Path, pipeline: list[str]) -> Path:
    directory.mkdir(exist_ok=True)
    files = {
        "sales_teams.csv": ["sales_agent,manager,regional_office",
                            "Ann Ames,Mia Moss,North",
                            "Bob Bell,Mia Moss,North",
                            "Cid Cole,Ned Nash,South",
                            "Dee Dunn,,South",           # row 5: no manager
                            "Bob Bell,Ned Nash,South"],  # row 6: Bob again
        "products.csv": ["product,series,sales_price",
                         "GTX Pro,GTX,4821",
                         "MG Special,MG,55",
                         "Zed 1,ZED,-5"],               # row 4: negative price
        "accounts.csv": ["account,sector,year_established,revenue,employees,office_location,subsidiary_of",
                         "Acme,technolgy,1996,1100.04,2822,United States,",
                         "Betatech,medical,1986,647.18,1185,Kenya,",
                         "Nameless,,2000,1,1,Italy,"],  # row 4: no sector
        "sales_pipeline.csv": ["opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,"
                               "close_value", *pipeline],
    }
    for name, lines in files.items():
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory


DIRTY_PIPELINE = [
    "OK1,Ann Ames,GTXPro,Acme,Won,2017-01-05,2017-02-10,4500",      # 2: GTXPro → GTX Pro
    "OK2,Bob Bell,MG Special,,Engaging,2017-02-01,,",                # 3: open, no account
    "OK3,Cid Cole,MG Special,Betatech,Lost,2017-01-10,2017-01-10,0",  # 4: lost the day it was engaged
    "OK4,Cid Cole,GTX Pro,,Prospecting,,,",                          # 5: a prospect
    "BAD1,Zoe Zorn,GTX Pro,Acme,Won,2017-01-05,2017-02-10,100",      # 6: unknown agent
    "BAD2,Ann Ames,GTX Pro,Acme,Won,2017-02-30,2017-03-10,100",      # 7: no 30 February
    "BAD3,Ann Ames,GTX Pro,Acme,Won,2017-01-05,2017-02-10,-100",     # 8: negative value
    "BAD4,Ann Ames,GTX Pro,Acme,Won,2017-03-05,2017-02-10,100",      # 9: closed before engaged
    "BAD5,Dee Dunn,Zed 1,Nameless,Won,2017-01-05,2017-02-10,",       # 10: refused agent, product, account; no value
    "OK1,Bob Bell,MG Special,,Engaging,2017-02-01,,",                # 11: the same opportunity again
    "BAD6,Ann Ames,GTX Pro,Acme,Pending,2017-01-05,,",               # 12: unknown stage
    "BAD7,Ann Ames,GTX Pro,Acme,Won,2017-01-05,2999-01-01,100",      # 13: closes in the future
]


def test_a_dirty_export_imports_its_good_rows_and_refuses_the_rest_with_row_numbers_and_reasons(
    app: SalesPlanning, tmp_path: Path
) -> None:
    report = import_crm(app, write_export(tmp_path / "crm", DIRTY_PIPELINE), batch_size=3)

    reasons = {(r.file, r.row): r.reason for r in report.refused}
    assert list(reasons) == [
        ("sales_teams.csv", 5), ("sales_teams.csv", 6), ("products.csv", 4), ("accounts.csv", 4),
        *(("sales_pipeline.csv", row) for row in range(6, 14)),
    ]
    assert reasons[("sales_teams.csv", 5)] == "manager must not be empty"
    assert "'Bob Bell' is listed again (first at row 3)" in reasons[("sales_teams.csv", 6)]
    assert "sales_price must not be negative (got '-5')" in reasons[("products.csv", 4)]
    assert reasons[("accounts.csv", 4)] == "sector must not be empty"
    assert "unknown sales_agent 'Zoe Zorn'" in reasons[("sales_pipeline.csv", 6)]
    assert "engage_date '2017-02-30' is not a date" in reasons[("sales_pipeline.csv", 7)]
    assert "close_value must not be negative (got '-100')" in reasons[("sales_pipeline.csv", 8)]
    assert "close_date 2017-02-10 is before engage_date 2017-03-05" in reasons[("sales_pipeline.csv", 9)]
    bad5 = reasons[("sales_pipeline.csv", 10)]  # every reason of the row, naming where the refusal started
    assert "sales_agent 'Dee Dunn' was refused (sales_teams.csv row 5)" in bad5
    assert "product 'Zed 1' was refused (products.csv row 4)" in bad5
    assert "account 'Nameless' was refused (accounts.csv row 4)" in bad5
    assert "close_value is empty for a Won deal" in bad5
    assert "opportunity_id 'OK1' is listed again (first at row 2)" in reasons[("sales_pipeline.csv", 11)]
    assert "deal_stage 'Pending'" in reasons[("sales_pipeline.csv", 12)]
    assert "close_date 2999-01-01 is in the future" in reasons[("sales_pipeline.csv", 13)]

    assert report.imported == {"unit": 5, "member": 5, "product": 2, "account": 2, "deal": 4}
    assert report.mappings == {("product", "GTXPro", "GTX Pro"): 1, ("sector", "technolgy", "technology"): 1}
    text = report.format()
    assert "sales_pipeline.csv row 6: unknown sales_agent 'Zoe Zorn'" in text
    assert "product: 'GTXPro' → 'GTX Pro' (1 row(s))" in text

    catch_up(app)
    with app.database.engine.connect() as conn:
        stored = {r.name: r for r in conn.execute(
            sa.select(LIVE.deals).where(Cut(app.recorder.max_notification_id() or 0).where(LIVE.deals)))}
    assert set(stored) == {"OK1", "OK2", "OK3", "OK4"}
    ok1, ok2, ok3, ok4 = (stored[k] for k in ("OK1", "OK2", "OK3", "OK4"))
    assert (ok1.stage, ok1.amount, ok1.product_line, ok1.segment, ok1.currency) == (
        "won", Decimal("4500"), "GTX", "technology", "USD")
    assert ok1.opened_at == datetime(2017, 1, 5, 12, tzinfo=UTC) and ok1.closed_at == datetime(2017, 2, 10, 12,
                                                                                               tzinfo=UTC)
    assert (ok2.stage, ok2.account_id, ok2.amount, ok2.expected_close) == ("qualified", None, Decimal("55"),
                                                                         date(2017, 5, 2))
    assert (ok3.stage, ok3.amount, ok3.region) == ("lost", Decimal("55"), "Kenya")
    assert ok3.opened_at == ok3.closed_at  # engaged and lost the same day: allowed, never backwards
    # The prospect opens on the export's latest date as a lead.
    assert (ok4.stage, ok4.opened_at) == ("lead", datetime(2017, 2, 10, 12, tzinfo=UTC))


def test_a_later_larger_export_adds_only_what_is_new(app: SalesPlanning, tmp_path: Path) -> None:
    rows = DIRTY_PIPELINE[:4]
    import_crm(app, write_export(tmp_path / "january", rows))
    head = app.recorder.max_notification_id()
    later = import_crm(app, write_export(tmp_path / "february", [
        *rows, "NEW1,Bob Bell,GTX Pro,Betatech,Won,2017-02-02,2017-02-20,4000"]))
    assert later.imported == {"deal": 1}
    assert later.already_imported == {"unit": 5, "member": 5, "product": 2, "account": 2, "deal": 4}
    assert later.events == 2  # opened and won
    assert (app.recorder.max_notification_id() or 0) > (head or 0)


def test_an_export_without_a_file_or_a_column_is_refused_whole(app: SalesPlanning, tmp_path: Path) -> None:
    export = write_export(tmp_path / "crm", DIRTY_PIPELINE[:2])
    (export / "accounts.csv").write_text("account,sector\nAcme,retail\n")
    with pytest.raises(CrmImportError, match="office_location"):
        import_crm(app, export)
    (export / "accounts.csv").unlink()
    with pytest.raises(CrmImportError, match=r"accounts\.csv is missing"):
        import_crm(app, export)
    assert app.recorder.max_notification_id() is None


def test_the_report_reads_as_a_summary() -> None:
    report = ImportReport(rows_read={"sales_pipeline.csv": 3}, refused=[Refusal("sales_pipeline.csv", 4, "bad")])
    report.imported["deal"] = 2
    report.already_imported["deal"] = 1
    assert report.format().splitlines()[:5] == [
        "rows read: sales_pipeline.csv 3", "imported: deals 2", "skipped (already imported): deals 1",
        "refused: 1 row(s)", "  sales_pipeline.csv row 4: bad"]

"""Import a CRM export (the "CRM Sales Opportunities" layout) as back-dated history.

Four CSV files, matched by name and by column, never by the people or places in them:

    sales_teams.csv      sales_agent, manager, regional_office
    products.csv         product, series, sales_price
    accounts.csv         account, sector, office_location   (other columns are ignored)
    sales_pipeline.csv   opportunity_id, sales_agent, product, account, deal_stage,
                         engage_date, close_date, close_value

What becomes what:

- the company → one unit per regional office → one team per (office, manager) beneath it;
  agents are reps of their manager's team, managers are manager members of it;
- products are products (series = product line, sales_price = list price);
  accounts are accounts (sector = segment, office_location = region);
- every opportunity is a deal opened at its engage_date at noon UTC (noon keeps the calendar
  date in every timezone from UTC-11 to UTC+11), in stage ``qualified``, for the product's
  list price; Won deals are won at close_date with close_value as amount, Lost deals lost at
  close_date; Engaging deals stay open; Prospecting deals have no engage_date and open as
  leads at the latest date of the export. Open deals are expected to close 90 days after
  they opened. The organisation and catalogue take effect at 00:00 UTC on the export's
  earliest date, so that every deal finds its owner's team at any cut.

Ids are uuid5 over a fixed namespace, the company name and the source keys: importing the
same export again writes nothing and reports every entity as already imported; a later,
larger export adds only what is new. Rows that cannot be mapped are refused with their
file, row number (the header is row 1, as a spreadsheet shows it) and every reason; names
that only match after folding case and punctuation (``GTXPro`` → ``GTX Pro``) and the
explicit corrections below are reported with how many rows used them.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache, partial
from pathlib import Path
from typing import Any, Final
from uuid import UUID, uuid5

import sqlalchemy as sa

from domain import values as v
from domain.aggregate import SalesAggregate
from domain.application import SalesPlanning
from domain.catalogue import Account, Product
from domain.deal import Deal
from domain.errors import DomainError
from domain.organisation import Member, Unit

# Fixed for ever: changing it would make every re-import write everything again.
CRM_NAMESPACE: Final = UUID("6f1d3c2e-4b7a-5e19-9c0d-2a8b7e4f5c31")
ACTOR: Final = "import-crm"
EXPECTED_CLOSE_AFTER: Final = timedelta(days=90)
ENGAGED_STAGE: Final = "qualified"
LOST_REASON: Final = "lost (imported)"

# Misspellings seen in the source, corrected on purpose and reported; anything else is kept as it is.
SEGMENT_CORRECTIONS: Final = {"technolgy": "technology"}
REGION_CORRECTIONS: Final = {"Philipines": "Philippines"}

DEAL_STAGES: Final = {"prospecting": "lead", "engaging": ENGAGED_STAGE, "won": "won", "lost": "lost"}

TEAMS, PRODUCTS, ACCOUNTS, PIPELINE = "sales_teams.csv", "products.csv", "accounts.csv", "sales_pipeline.csv"
COLUMNS: Final = {
    TEAMS: ("sales_agent", "manager", "regional_office"),
    PRODUCTS: ("product", "series", "sales_price"),
    ACCOUNTS: ("account", "sector", "office_location"),
    PIPELINE: ("opportunity_id", "sales_agent", "product", "account", "deal_stage", "engage_date", "close_date",
               "close_value"),
}
ENTITY_KINDS: Final = ("unit", "member", "product", "account", "deal")


class CrmImportError(Exception):
    """The export as a whole cannot be read (a file or a column is missing): nothing was written."""


@dataclass(frozen=True)
class Refusal:
    file: str
    row: int
    reason: str


@dataclass
class ImportReport:
    """What an import read, wrote, skipped and refused, and every mapping it applied."""

    rows_read: dict[str, int] = field(default_factory=dict)
    imported: Counter[str] = field(default_factory=Counter)
    already_imported: Counter[str] = field(default_factory=Counter)
    refused: list[Refusal] = field(default_factory=list)
    mappings: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (what, from, to) → rows
    notes: list[str] = field(default_factory=list)
    events: int = 0
    position: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        lines = ["rows read: " + ", ".join(f"{name} {count}" for name, count in self.rows_read.items())]
        lines.append("imported: " + _counts(self.imported))
        lines.append("skipped (already imported): " + _counts(self.already_imported))
        lines.append(f"refused: {len(self.refused)} row(s)")
        lines += [f"  {r.file} row {r.row}: {r.reason}" for r in self.refused]
        lines.append("mappings applied:" if self.mappings else "mappings applied: none")
        lines += [f"  {what}: {source!r} → {target!r} ({rows} row(s))"
                  for (what, source, target), rows in sorted(self.mappings.items())]
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"{self.events} events written in {self.seconds:.1f} s ({self.events_per_second:,.0f} events/s)")
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{kind}s {counter[kind]}" for kind in ENTITY_KINDS if counter[kind]) or "nothing"


# --- reading and checking rows ---------------------------------------------------------------


def _check(directory: Path, name: str) -> None:
    path = directory / name
    if not path.is_file():
        raise CrmImportError(f"{path} is missing")
    with path.open(newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    missing = [c for c in COLUMNS[name] if c not in [h.strip() for h in header]]
    if missing:
        raise CrmImportError(f"{path} lacks the column(s) {', '.join(missing)}")


def _read(directory: Path, name: str) -> Iterator[tuple[int, dict[str, str]]]:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with (directory / name).open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, restval="")  # a short row reads as empty cells
        reader.fieldnames = [h.strip() for h in reader.fieldnames or []]
        for i, row in enumerate(reader, start=2):
            yield i, {k: val.strip() for k, val in row.items() if k is not None}  # None: a long row's surplus


def _fold(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


class _Names:
    """Resolves a reference to a known name: exactly, or uniquely after folding case and punctuation."""

    def __init__(self, what: str, names: Iterable[str]) -> None:
        self.what = what
        self.exact = set(names)
        self.folded: dict[str, list[str]] = {}
        for name in self.exact:
            self.folded.setdefault(_fold(name), []).append(name)

    def resolve(self, raw: str, mapped: list[tuple[str, str, str]]) -> str | None:
        """The known name ``raw`` means; a folded match is added to ``mapped`` (counted if the row is imported)."""
        if raw in self.exact:
            return raw
        candidates = self.folded.get(_fold(raw), [])
        if len(candidates) != 1:
            return None
        mapped.append((self.what, raw, candidates[0]))
        return candidates[0]


def _text(value: str, column: str, problems: list[str]) -> str:
    try:
        return v.text(value, column)
    except DomainError as e:
        problems.append(e.message)
        return ""


def _day(value: str, column: str, today: date, problems: list[str]) -> date | None:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        problems.append(f"{column} {value!r} is not a date (YYYY-MM-DD)")
        return None
    if day > today:
        problems.append(f"{column} {value} is in the future")
        return None
    return day


def _amount(value: str, column: str, problems: list[str]) -> Decimal | None:
    try:
        return v.money(value, column)
    except DomainError as e:
        problems.append(f"{e.message} (got {value!r})")
        return None


@dataclass(frozen=True)
class _Agent:
    name: str
    office: str
    manager: str
    row: int


@dataclass(frozen=True)
class _Opportunity:
    key: str
    agent: str
    product: str
    account: str | None
    stage: str
    opened: date | None  # None: a prospect, opened at the export's latest date
    closed: date | None
    value: Decimal | None


class _Reader:
    def __init__(self, directory: Path, report: ImportReport, today: date) -> None:
        self.directory = directory
        self.report = report
        self.today = today
        self.agents: dict[str, _Agent] = {}
        self.refused_agents: dict[str, int] = {}
        self.products: dict[str, tuple[str, Decimal]] = {}
        self.refused_products: dict[str, int] = {}
        self.accounts: dict[str, tuple[str, str]] = {}
        self.refused_accounts: dict[str, int] = {}
        self.opportunities: list[_Opportunity] = []

    def refuse(self, file: str, row: int, problems: list[str]) -> None:
        self.report.refused.append(Refusal(file, row, "; ".join(problems)))

    def read_all(self) -> None:
        # Every file's header is checked before anything is read: a wrong export fails whole.
        for name in COLUMNS:
            _check(self.directory, name)
        self.read_teams()
        self.read_products()
        self.read_accounts()
        self.read_pipeline()

    def read_teams(self) -> None:
        count = 0
        for row_no, row in _read(self.directory, TEAMS):
            count += 1
            problems: list[str] = []
            agent = _text(row["sales_agent"], "sales_agent", problems)
            manager = _text(row["manager"], "manager", problems)
            office = _text(row["regional_office"], "regional_office", problems)
            if agent and agent in self.agents:
                problems.append(f"sales agent {agent!r} is listed again (first at row {self.agents[agent].row})")
            if problems:
                self.refuse(TEAMS, row_no, problems)
                if agent and agent not in self.agents:
                    self.refused_agents.setdefault(agent, row_no)
                continue
            self.agents[agent] = _Agent(agent, office, manager, row_no)
        self.report.rows_read[TEAMS] = count

    def read_products(self) -> None:
        count = 0
        seen: dict[str, int] = {}
        for row_no, row in _read(self.directory, PRODUCTS):
            count += 1
            problems: list[str] = []
            name = _text(row["product"], "product", problems)
            series = _text(row["series"], "series", problems)
            price = _amount(row["sales_price"], "sales_price", problems)
            if name in seen:
                problems.append(f"product {name!r} is listed again (first at row {seen[name]})")
            if problems or price is None:
                self.refuse(PRODUCTS, row_no, problems)
                if name and name not in seen:
                    self.refused_products.setdefault(name, row_no)
                continue
            seen[name] = row_no
            self.products[name] = (series, price)
        self.report.rows_read[PRODUCTS] = count

    def read_accounts(self) -> None:
        count = 0
        seen: dict[str, int] = {}
        for row_no, row in _read(self.directory, ACCOUNTS):
            count += 1
            problems: list[str] = []
            name = _text(row["account"], "account", problems)
            sector = _text(row["sector"], "sector", problems)
            location = _text(row["office_location"], "office_location", problems)
            if name in seen:
                problems.append(f"account {name!r} is listed again (first at row {seen[name]})")
            if problems:
                self.refuse(ACCOUNTS, row_no, problems)
                if name and name not in seen:
                    self.refused_accounts.setdefault(name, row_no)
                continue
            seen[name] = row_no
            segment = SEGMENT_CORRECTIONS.get(sector, sector)
            region = REGION_CORRECTIONS.get(location, location)
            if segment != sector:
                self.report.mappings[("sector", sector, segment)] += 1
            if region != location:
                self.report.mappings[("office_location", location, region)] += 1
            self.accounts[name] = (segment, region)
        self.report.rows_read[ACCOUNTS] = count

    def read_pipeline(self) -> None:
        agents = _Names("sales_agent", self.agents)
        products = _Names("product", self.products)
        accounts = _Names("account", self.accounts)
        seen: dict[str, int] = {}
        count = 0
        for row_no, row in _read(self.directory, PIPELINE):
            count += 1
            problems: list[str] = []
            mapped: list[tuple[str, str, str]] = []
            key = _text(row["opportunity_id"], "opportunity_id", problems)
            if key in seen:
                problems.append(f"opportunity_id {key!r} is listed again (first at row {seen[key]})")
            stage = DEAL_STAGES.get(row["deal_stage"].casefold())
            if stage is None:
                problems.append(f"deal_stage {row['deal_stage']!r} is not one of Prospecting, Engaging, Won, Lost")
            agent = self._reference(agents, row["sales_agent"], self.refused_agents, TEAMS, problems, mapped)
            product = self._reference(products, row["product"], self.refused_products, PRODUCTS, problems, mapped)
            account = None
            if row["account"]:  # open deals often have none: allowed
                account = self._reference(accounts, row["account"], self.refused_accounts, ACCOUNTS, problems, mapped)
            opened = _day(row["engage_date"], "engage_date", self.today, problems) if row["engage_date"] else None
            if opened is None and stage not in (None, "lead") and not row["engage_date"]:
                problems.append(f"engage_date is empty for a {row['deal_stage']} deal")
            closed: date | None = None
            if stage in ("won", "lost"):
                if not row["close_date"]:
                    problems.append(f"close_date is empty for a {row['deal_stage']} deal")
                else:
                    closed = _day(row["close_date"], "close_date", self.today, problems)
                    if closed is not None and opened is not None and closed < opened:
                        problems.append(f"close_date {closed} is before engage_date {opened}")
            value: Decimal | None = None
            if row["close_value"]:
                value = _amount(row["close_value"], "close_value", problems)
            elif stage == "won":
                problems.append("close_value is empty for a Won deal")
            if problems or stage is None or agent is None or product is None:
                self.refuse(PIPELINE, row_no, problems)
                continue
            seen[key] = row_no
            self.report.mappings.update(mapped)
            self.opportunities.append(_Opportunity(key, agent, product, account, stage, opened, closed, value))
        self.report.rows_read[PIPELINE] = count

    def _reference(self, names: _Names, raw: str, refused: dict[str, int], file: str, problems: list[str],
                   mapped: list[tuple[str, str, str]]) -> str | None:
        column = names.what
        if not raw:
            problems.append(f"{column} is empty")
            return None
        resolved = names.resolve(raw, mapped)
        if resolved is None:
            if raw in refused:
                problems.append(f"{column} {raw!r} was refused ({file} row {refused[raw]})")
            else:
                problems.append(f"unknown {column} {raw!r} (not in {file})")
        return resolved


# --- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    kind: str
    id: UUID
    build: Callable[[], SalesAggregate]


def _noon(day: date, now: datetime) -> datetime:
    # A date of today must not become an effective time later than now: the domain refuses the future.
    return min(datetime(day.year, day.month, day.day, 12, tzinfo=UTC), now)


def import_crm(
    app: SalesPlanning, directory: Path, *, progress: Callable[[int, int], None] | None = None,
    batch_size: int = 500, company: str = "Company", currency: str = "USD",
) -> ImportReport:
    """Import a CRM export directory as back-dated history; idempotent, refuses what it cannot map."""
    started = time.perf_counter()
    report = ImportReport()
    now = app.clock()
    company = v.text(company, "company")
    currency = v.currency(currency)
    reader = _Reader(Path(directory), report, now.date())
    reader.read_all()

    days = [d for o in reader.opportunities for d in (o.opened, o.closed) if d is not None]
    first, last = (min(days), max(days)) if days else (now.date(), now.date())
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    prospects = sum(1 for o in reader.opportunities if o.opened is None)
    report.notes += [
        f"organisation and catalogue take effect at {since.isoformat()} (the export's earliest date)",
        f"deals open and close at noon UTC of their dates; engaged deals open in stage {ENGAGED_STAGE!r}",
        f"{prospects} Prospecting deal(s) without engage_date opened as leads on {last} (the export's latest date)"
        if prospects else "every deal had an engage_date",
        f"open deals are expected to close {EXPECTED_CLOSE_AFTER.days} days after they opened; "
        "every deal opens at its product's list price; lost deals keep it (their close_value 0 is not an amount)",
        f"amounts are in {currency}; accounts' year_established, revenue, employees and subsidiary_of are not imported",
    ]

    planned = list(_plan(reader, company, currency, since, last, now))
    existing = _existing(app, [p.id for p in planned])
    batch: list[SalesAggregate] = []
    done = 0

    def flush() -> None:
        if batch:
            report.events += sum(len(a.pending_events) for a in batch)
            report.position = app.record(batch) or report.position
            batch.clear()
        if progress is not None:
            progress(done, len(planned))

    for item in planned:
        done += 1
        if item.id in existing:
            report.already_imported[item.kind] += 1
        else:
            batch.append(item.build())
            report.imported[item.kind] += 1
        if len(batch) >= batch_size:
            flush()
    flush()
    report.seconds = time.perf_counter() - started
    return report


def _plan(reader: _Reader, company: str, currency: str, since: datetime, last: date, now: datetime
          ) -> Iterator[_Planned]:
    """Every entity the export describes, parents first, each with its deterministic id."""

    @cache  # every deal names its owner, product and account again: compute each id once
    def key(*parts: str) -> UUID:
        # A JSON list keeps the parts apart: ("a b", "c") and ("a", "b c") never share an id.
        return uuid5(CRM_NAMESPACE, json.dumps([company, *parts]))

    common: dict[str, Any] = {"actor": ACTOR, "effective_at": since}
    company_id = key("unit", "company")
    yield _Planned("unit", company_id, partial(Unit.add, id=company_id, name=company, parent_id=None, **common))
    offices: dict[str, UUID] = {}
    teams: dict[tuple[str, str], UUID] = {}
    for agent in reader.agents.values():
        if agent.office not in offices:
            office_id = offices[agent.office] = key("unit", "office", agent.office)
            yield _Planned("unit", office_id, partial(
                Unit.add, id=office_id, name=agent.office, parent_id=company_id, **common))
        if (agent.office, agent.manager) not in teams:
            team_id = teams[(agent.office, agent.manager)] = key("unit", "team", agent.office, agent.manager)
            yield _Planned("unit", team_id, partial(
                Unit.add, id=team_id, name=f"{agent.manager}'s team", parent_id=offices[agent.office], **common))
    managers: set[str] = set()
    for agent in reader.agents.values():
        team_id = teams[(agent.office, agent.manager)]
        if agent.manager not in managers:
            # A manager listed under several offices is a member of the first team seen.
            managers.add(agent.manager)
            manager_id = key("member", "manager", agent.manager)
            yield _Planned("member", manager_id, partial(
                Member.add, id=manager_id, name=agent.manager, role="manager", unit_id=team_id, email="", **common))
        agent_id = key("member", "agent", agent.name)
        yield _Planned("member", agent_id, partial(
            Member.add, id=agent_id, name=agent.name, role="rep", unit_id=team_id, email="", **common))
    for name, (series, price) in reader.products.items():
        product_id = key("product", name)
        yield _Planned("product", product_id, partial(
            Product.add, id=product_id, name=name, product_line=series, list_price=price, currency=currency, **common))
    for name, (segment, region) in reader.accounts.items():
        account_id = key("account", name)
        yield _Planned("account", account_id, partial(
            Account.add, id=account_id, name=name, segment=segment, region=region, **common))
    for o in reader.opportunities:
        deal_id = key("deal", o.key)
        yield _Planned("deal", deal_id, partial(_deal, deal_id, o, key, reader, currency, last, now))


def _deal(deal_id: UUID, o: _Opportunity, key: Callable[..., UUID], reader: _Reader, currency: str, last: date,
          now: datetime) -> Deal:
    series, price = reader.products[o.product]
    segment, region = reader.accounts[o.account] if o.account is not None else ("", "")
    opened = o.opened or last
    opened_at = _noon(opened, now)
    deal = Deal.open(
        id=deal_id, name=o.key, account_id=key("account", o.account) if o.account is not None else None,
        owner_id=key("member", "agent", o.agent), product_id=key("product", o.product), product_line=series,
        region=region, segment=segment, amount=price, currency=currency,
        expected_close=opened + EXPECTED_CLOSE_AFTER, stage=o.stage if o.stage in v.OPEN_STAGES else ENGAGED_STAGE,
        actor=ACTOR, effective_at=opened_at,
    )
    if o.stage == "won":
        assert o.closed is not None and o.value is not None
        deal.win(amount=o.value, actor=ACTOR, effective_at=_noon(o.closed, now))
    elif o.stage == "lost":
        assert o.closed is not None
        deal.lose(reason=LOST_REASON, actor=ACTOR, effective_at=_noon(o.closed, now))
    return deal


def _existing(app: SalesPlanning, ids: list[UUID]) -> set[UUID]:
    """Which of ``ids`` already have events: one query per 500 ids instead of one load per entity."""
    recorder: Any = app.recorder  # the SQLAlchemy recorder's mapped record class is not in the protocol
    record = recorder.events_record_cls
    found: set[UUID] = set()
    with recorder.transaction(commit=False) as session:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            found.update(session.scalars(
                sa.select(record.originator_id).where(record.originator_id.in_(chunk), record.originator_version == 1)
            ))
    return found

"""BI over SQL: stable read-only views, documented tables, and a blue/green swap that keeps both.

Reporting tools read PostgreSQL directly. What they may rely on:

- the ``bi_*`` views (``VIEWS``): current deals, members and targets with the names of what they
  point to, and won revenue by member, unit and day. Their columns only ever grow; the README
  lists them;
- ``COMMENT``s on every projection table and column and on every view (``TABLES``), so a BI
  tool's catalogue explains them.

``salesplan rebuild`` swaps a projection's tables for new ones. In that one transaction
``before_swap`` records what the database hangs on the live tables — GRANTs (table and column),
owners, and every view that depends on them, directly or through other views (definition,
options, owner, GRANTs, comments, indexes of materialized views) — and drops those views;
``after_swap`` puts all of it back on the new tables, comments included. If anything fails the
transaction rolls back, ``abandon`` drops the half-built generation and records the failure,
which ``salesplan status``, ``/projections`` and ``/readyz`` show until a rebuild of that
projection succeeds. SQLite has no grants or comments and gets no views of its own, but its
``ALTER TABLE … RENAME`` refuses to run while any view is broken, so its views are kept the same way.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("salesplan.projections")

# --- what the views and the tables mean ------------------------------------------------------


@dataclass(frozen=True)
class View:
    """A documented, stable view: its comment, one comment per column (in column order), its query."""

    comment: str
    columns: Mapping[str, str]
    query: str

    @property
    def tables(self) -> set[str]:
        """The projection tables it reads (an engine running only some projections gets only some views)."""
        return set(re.findall(r"(?:FROM|JOIN) (\w+)", self.query))


_CURRENT: Final = "next_position IS NULL"

VIEWS: Final[Mapping[str, View]] = {
    "bi_current_members": View(
        "Every member as they are now, with the name of the unit they belong to.",
        {
            "member_id": "The member's id",
            "name": "The member's name now",
            "role": "rep or manager",
            "active": "False once the member was deactivated",
            "unit_id": "The unit the member belongs to now",
            "unit_name": "That unit's name now",
            "changed_at": "Effective time of the member's latest change",
        },
        f"""
        SELECT m.member_id, m.name, m.role, m.active, m.unit_id, u.name AS unit_name, m.effective_at AS changed_at
        FROM progress_members m
        LEFT JOIN progress_units u ON u.unit_id = m.unit_id AND u.{_CURRENT}
        WHERE m.{_CURRENT}
        """,
    ),
    "bi_current_deals": View(
        "Every deal as it stands now (open, won or lost), with the names of its owner, the owner's unit, "
        "its product and its account.",
        {
            "deal_id": "The deal's id",
            "deal_name": "The deal's name",
            "stage": "lead, qualified, needs_analysis, proposal, negotiation, won or lost",
            "status": "open, won or lost",
            "amount": "The amount now (as won, for a won deal), in currency",
            "currency": "ISO 4217 code of the amount",
            "expected_close": "The expected close date now",
            "opened_at": "Effective time the deal was opened",
            "closed_at": "Effective time it was won or lost (null while open)",
            "owner_id": "The member who owns the deal now (who won it, for a won deal)",
            "owner_name": "The owner's name now",
            "unit_id": "The owner's unit now (bi_won_revenue_daily credits the unit at the time of the win)",
            "unit_name": "That unit's name now",
            "product_id": "The product sold",
            "product_name": "The product's name now",
            "product_line": "The product line, as recorded on the deal",
            "account_id": "The account sold to (null: none given)",
            "account_name": "The account's name now",
            "region": "The account's region, as recorded on the deal",
            "segment": "The account's segment, as recorded on the deal",
            "changed_at": "Effective time of the deal's latest change",
            "position": "Log position of the deal's latest change",
        },
        f"""
        SELECT d.deal_id, d.name AS deal_name, d.stage,
               CASE WHEN d.stage IN ('won', 'lost') THEN d.stage ELSE 'open' END AS status,
               d.amount, d.currency, d.expected_close, d.opened_at, d.closed_at,
               d.owner_id, m.name AS owner_name, m.unit_id, u.name AS unit_name,
               d.product_id, p.name AS product_name, d.product_line,
               d.account_id, a.name AS account_name, d.region, d.segment,
               d.effective_at AS changed_at, d.position
        FROM progress_deals d
        LEFT JOIN progress_members m ON m.member_id = d.owner_id AND m.{_CURRENT}
        LEFT JOIN progress_units u ON u.unit_id = m.unit_id AND u.{_CURRENT}
        LEFT JOIN catalogue_products p ON p.product_id = d.product_id AND p.{_CURRENT}
        LEFT JOIN catalogue_accounts a ON a.account_id = d.account_id AND a.{_CURRENT}
        WHERE d.{_CURRENT}
        """,
    ),
    "bi_current_targets": View(
        "Every target of every plan as it stands now (removed ones left out), with its current committed "
        "and stretch values and the names of its plan, unit and member.",
        {
            "target_id": "The target's id",
            "plan_id": "The plan it belongs to",
            "plan_name": "The plan's name",
            "plan_status": "draft, published or closed",
            "plan_currency": "The plan's currency (money metrics are in it)",
            "parent_id": "The target it was decomposed from (null: a top target)",
            "metric": "revenue, deals_won, new_deals, activities, win_rate or average_order_value",
            "period": "2026, 2026-Q2, 2026-03 or 2026-W14",
            "period_start": "First day the target covers (a week split from a month: clipped to the month)",
            "period_end": "Day after the last day it covers",
            "unit_id": "The unit the target is for (null: a member's target)",
            "unit_name": "That unit's name now",
            "member_id": "The member the target is for (null: a unit's target)",
            "member_name": "That member's name now",
            "product_line": "Narrowed to this product line (null: all)",
            "region": "Narrowed to this region (null: all)",
            "segment": "Narrowed to this customer segment (null: all)",
            "committed": "The committed (core) value now, published or not",
            "stretch": "The stretch (upside) value now (null: none)",
            "changed_at": "Effective time of the target's latest change",
            "position": "Log position of the target's latest change",
        },
        f"""
        SELECT t.target_id, t.plan_id, pl.name AS plan_name, pl.status AS plan_status, pl.currency AS plan_currency,
               t.parent_id, t.metric, t.period, t.period_start, t.period_end,
               t.unit_id, u.name AS unit_name, t.member_id, m.name AS member_name,
               t.product_line, t.region, t.segment, t.committed, t.stretch,
               t.effective_at AS changed_at, t.position
        FROM progress_targets t
        JOIN progress_plans pl ON pl.plan_id = t.plan_id AND pl.{_CURRENT}
        LEFT JOIN progress_units u ON u.unit_id = t.unit_id AND u.{_CURRENT}
        LEFT JOIN progress_members m ON m.member_id = t.member_id AND m.{_CURRENT}
        WHERE t.{_CURRENT} AND NOT t.removed
        """,
    ),
    "bi_won_revenue_daily": View(
        "Won deals and their revenue per day (UTC), currency and member, credited to the unit the member "
        "belonged to when the deal was won (a later move does not take it along).",
        {
            "day": "The day the deals were won (UTC)",
            "currency": "ISO 4217 code: amounts of different currencies are never added up",
            "member_id": "The member who won them",
            "member_name": "That member's name now",
            "unit_id": "The unit the member belonged to when the deals were won",
            "unit_name": "That unit's name now",
            "deals_won": "How many deals were won",
            "revenue": "The sum of their amounts as won",
        },
        f"""
        SELECT CAST(d.closed_at AT TIME ZONE 'UTC' AS date) AS day, d.currency,
               d.owner_id AS member_id, m.name AS member_name, then_.unit_id, u.name AS unit_name,
               count(*) AS deals_won, sum(d.amount) AS revenue
        FROM progress_deals d
        LEFT JOIN progress_members m ON m.member_id = d.owner_id AND m.{_CURRENT}
        LEFT JOIN progress_members then_ ON then_.member_id = d.owner_id
             AND (then_.valid_from IS NULL OR then_.valid_from <= d.closed_at)
             AND (then_.next_effective_at IS NULL OR then_.next_effective_at > d.closed_at)
        LEFT JOIN progress_units u ON u.unit_id = then_.unit_id AND u.{_CURRENT}
        WHERE d.{_CURRENT} AND d.stage = 'won'
        GROUP BY CAST(d.closed_at AT TIME ZONE 'UTC' AS date), d.currency, d.owner_id, m.name, then_.unit_id, u.name
        """,
    ),
}

_HISTORY: Final = {
    "position": "Log position of the event that wrote this row",
    "effective_at": "When the change took effect in the business (effective time)",
    "recorded_at": "When the system recorded it (recorded time)",
    "next_position": "Log position of the entity's next row (null: this row is current)",
    "next_effective_at": "Effective time of the entity's next row (null: this row is current)",
}
_ROW_AT_A_CUT: Final = (" One row per change; the current state is WHERE next_position IS NULL, the state at a cut "
                        "(position P, effective time T) is WHERE position <= P AND effective_at <= T AND "
                        "(next_position IS NULL OR next_position > P OR next_effective_at > T).")


def _history(subject: str, **columns: str) -> tuple[str, dict[str, str]]:
    return f"The history of every {subject}.{_ROW_AT_A_CUT}", {**_HISTORY, **columns}


_UNIT_COLUMNS: Final = {"unit_id": "The unit's id", "name": "The unit's name",
                        "parent_id": "The unit above it (null: a top unit)", "active": "False once deactivated"}
_MEMBER_COLUMNS: Final = {"member_id": "The member's id", "name": "The member's name", "role": "rep or manager",
                          "unit_id": "The unit the member belongs to", "active": "False once deactivated"}
_DEAL_COLUMNS: Final = {
    "deal_id": "The deal's id", "name": "The deal's name", "owner_id": "The member who owns it (who won it, once won)",
    "account_id": "The account (null: none)", "product_id": "The product", "product_line": "The product's line",
    "region": "The account's region", "segment": "The account's segment", "currency": "ISO 4217 code of amount",
    "amount": "The amount (as won, once won)", "stage": "The stage", "expected_close": "The expected close date",
    "opened_at": "Effective time it was opened", "closed_at": "Effective time it was won or lost (null: open)",
}
_TARGET_SCOPE: Final = {
    "unit_id": "The unit the target is for (null: a member's)", "member_id": "The member it is for (null: a unit's)",
    "product_line": "Narrowed to this product line (null: all)", "region": "Narrowed to this region (null: all)",
    "segment": "Narrowed to this segment (null: all)", "metric": "The metric", "period": "The period (2026-Q2 …)",
    "parent_id": "The target it was decomposed from (null: a top target)", "plan_id": "The plan",
    "target_id": "The target's id", "committed": "The committed (core) value", "stretch": "The stretch value (null: none)",
}

_WINDOW: Final = {"window_start": "First day the target covers when less than its period (null: the whole period)",
                   "window_end": "Day after the last day it covers (null: the whole period)"}

TABLES: Final[Mapping[str, tuple[str, Mapping[str, str]]]] = {
    "log_clock": ("Which log position the store had reached at each recorded time.",
                  {"position": "A log position", "recorded_at": "When the store recorded it",
                   "known_at": "The latest recorded time up to this position: the log was known up to here from then"}),
    "progress_units": _history("unit (progress projection)", **_UNIT_COLUMNS),
    "progress_members": _history(
        "member (progress projection)", **_MEMBER_COLUMNS,
        valid_from="From when this row places the member in unit_id (null on the first row: it also places facts "
                   "back-dated to before the member was added)"),
    "progress_plans": _history(
        "plan (progress projection)", plan_id="The plan's id", name="The plan's name",
        span="The fiscal year or quarter it covers", currency="ISO 4217 code of its money targets",
        unit_id="The unit that owns it", status="draft, published or closed",
        published_version="The latest published version (0: never published)"),
    "progress_targets": _history(
        "target (progress projection)", **_TARGET_SCOPE,
        period_start="First day it covers (its period's, or a week's clipped to its parent month)",
        period_end="Day after the last day it covers", removed="True once removed from the plan"),
    "progress_deals": _history(
        "deal (progress projection)", **_DEAL_COLUMNS, opened_by="The owner when it was opened (new deals count for them)",
        amount_cents="The amount in hundredths (exact sums on every backend)",
        stage_entered_at="Effective time it entered its stage",
        last_stage_change_at="Effective time of its latest stage change (null: never moved)"),
    "progress_activities": _history(
        "logged activity (progress projection)", activity_id="The activity's id", member_id="Who logged it",
        kind="call, visit, meeting, demo or email", deal_id="The deal it was about (null: none)"),
    "pipeline_tasks": _history(
        "task (pipeline projection)", task_id="The task's id", title="What is to be done",
        assignee_id="The member it is assigned to", due="The due date", plan_id="The plan it serves (null: none)",
        target_id="The target it serves (null: none)", status="open, done or cancelled",
        progress="Percent done, 0-100", created_at="Effective time it was created",
        completed_at="Effective time it was done or cancelled (null: open)"),
    "pipeline_stage_intervals": (
        "Every stay of every deal in a stage, with the reason it entered it.",
        {"deal_id": "The deal", "entered_position": "Log position of the event that moved it there",
         "stage": "The stage", "reason": "Why it moved there", "entered_at": "Effective time it entered",
         "left_at": "Effective time it left (null: still there)",
         "left_position": "Log position of the event that moved it on (null: still there)"}),
    "audit_history": (
        "Who changed what, when and why: one row per change to one entity, in log order (position, seq).",
        {"position": "Log position of the event", "seq": "Order of the rows one event wrote",
         "recorded_at": "When it was recorded", "effective_at": "When it took effect", "actor": "Who did it",
         "entity": "unit, member, product, account, plan, target, task, deal or activity",
         "entity_id": "The entity changed", "plan_id": "The plan it belongs to (targets, tasks; null: none)",
         "event_type": "The event, e.g. Plan.TargetRevised", "summary": "The change in words",
         "changes": 'JSON: field -> {"before": ..., "after": ...}', "reason": "Why (empty: none given)"}),
    "audit_subjects": (
        "What audit summaries call each entity (as of its latest name).",
        {"entity_id": "The entity", "entity": "Its kind", "label": "What summaries call it",
         "plan_id": "Its plan (targets, tasks)", "metric": "A target's metric"}),
    "plan_versions": (
        "Every published version of every plan.",
        {"plan_id": "The plan", "version": "1 (the baseline), 2, 3 ...", "position": "Log position of the publication",
         "recorded_at": "When it was recorded", "effective_at": "When it took effect", "actor": "Who published it",
         "note": "The publication's note"}),
    "plan_version_targets": (
        "The target tree each version froze.",
        {**_TARGET_SCOPE, **_WINDOW, "version": "The version"}),
    "plan_version_working": (
        "The working (unpublished) target tree of every plan.", {**_TARGET_SCOPE, **_WINDOW}),
    "plan_period_locks": (
        "Every period a manager locked in a plan, with the version in force then and, once lifted, the unlock.",
        {"plan_id": "The plan", "period": "The period locked (2026-03 …)", "position": "Log position of the lock",
         "start": "First day of the locked window", "end": "Day after its last day",
         "plan_version": "The version in force when it was locked", "effective_at": "When the lock took effect",
         "recorded_at": "When it was recorded", "actor": "Who locked it", "reason": "Why",
         "unlocked_position": "Log position of the unlock (null: still locked)",
         "unlocked_effective_at": "When the unlock took effect", "unlocked_recorded_at": "When it was recorded",
         "unlocked_by": "Who unlocked it", "unlock_reason": "Why it was unlocked"}),
    "plan_version_changes": (
        "Every change to a plan's targets between publications, with its reason.",
        {"position": "Log position of the event", "seq": "Order of the rows one event wrote", "plan_id": "The plan",
         "recorded_at": "When it was recorded", "effective_at": "When it took effect", "actor": "Who changed it",
         "target_id": "The target", "metric": "Its metric", "period": "Its period",
         "kind": "added, revised, removed or decomposed", "before_committed": "Committed value before (null: none)",
         "after_committed": "Committed value after (null: removed)", "before_stretch": "Stretch before",
         "after_stretch": "Stretch after", "reason": "Why", "draft_of_version": "The version this change prepares"}),
    "revision_reasons": (
        "Every change to every target with who, when, from what to what and why.",
        {"target_id": "The target", "position": "Log position of the event", "plan_id": "The plan",
         "effective_at": "When it took effect", "recorded_at": "When it was recorded", "actor": "Who changed it",
         "kind": "set, decomposed, revised or removed", "before": "Committed value before (null: none)",
         "after": "Committed value after (null: removed)", "before_stretch": "Stretch before",
         "after_stretch": "Stretch after", "reason": "Why"}),
    "catalogue_products": _history(
        "product (catalogue projection)", product_id="The product's id", name="The product's name",
        product_line="Its product line", list_price="Its list price", currency="ISO 4217 code of the list price"),
    "catalogue_accounts": _history(
        "account (catalogue projection)", account_id="The account's id", name="The account's name",
        segment="Its customer segment", region="Its region"),
}

# --- the failures of rebuilds, for status and /readyz ------------------------------------------

metadata = sa.MetaData()
failures_table = sa.Table(
    "salesplan_rebuild_failures", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class RebuildFailure:
    """The last rebuild of a projection failed at its swap and was rolled back; the live tables still answer."""

    name: str
    generation: int
    error: str
    failed_at: datetime


def rebuild_failures(conn: Connection) -> dict[str, RebuildFailure]:
    """The projections whose last rebuild failed (an empty dict before ``install`` ever ran)."""
    if not sa.inspect(conn).has_table(failures_table.name):
        return {}
    return {r.name: RebuildFailure(r.name, r.generation, r.error, r.failed_at) for r in conn.execute(
        sa.select(failures_table))}


# --- installing and keeping them -----------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _comment_statements(tables: Iterable[str], columns: Mapping[str, Sequence[str]]) -> list[str]:
    statements = []
    for table in tables:
        if table in TABLES:
            comment, meanings = TABLES[table]
            statements.append(f"COMMENT ON TABLE {_q(table)} IS {_literal(comment)}")
            statements += [f"COMMENT ON COLUMN {_q(table)}.{_q(c)} IS {_literal(meanings[c])}"
                           for c in columns.get(table, ()) if c in meanings]
    return statements


def _columns(conn: Connection, tables: Iterable[str]) -> dict[str, list[str]]:
    inspector = sa.inspect(conn)
    return {t: [c["name"] for c in inspector.get_columns(t)] for t in tables if inspector.has_table(t)}


def install(engine: Engine) -> None:
    """Create the failure table; on PostgreSQL also (re)create the views and comment the tables and views."""
    metadata.create_all(engine, checkfirst=True)
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        # Several processes set up at once: concurrent DDL on one view fails ("tuple concurrently updated").
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
        present = _columns(conn, TABLES)
        for name, view in VIEWS.items():
            if not view.tables <= present.keys():
                continue
            conn.execute(sa.text(f"CREATE OR REPLACE VIEW {_q(name)} AS {view.query}"))
            conn.execute(sa.text(f"COMMENT ON VIEW {_q(name)} IS {_literal(view.comment)}"))
            for column, comment in view.columns.items():
                conn.execute(sa.text(f"COMMENT ON COLUMN {_q(name)}.{_q(column)} IS {_literal(comment)}"))
        for statement in _comment_statements(present, present):
            conn.execute(sa.text(statement))


_LOCK: Final = zlib.crc32(b"salesplan.bi.install") - 2**31


@dataclass
class _Dependent:
    """A view that depends on a swapped table (directly or through another view), as it must be recreated."""

    schema: str
    name: str
    kind: str  # v: view, m: materialized view
    definition: str
    options: list[str]
    owner: str
    grants: list[tuple[str, str, bool]]  # (grantee or PUBLIC, privilege, grantable)
    comment: str | None
    column_comments: dict[str, str]
    indexes: list[str]

    @property
    def qualified(self) -> str:
        return f"{_q(self.schema)}.{_q(self.name)}"


@dataclass
class _Table:
    owner: str
    grants: list[tuple[str, str, bool]]
    column_grants: list[tuple[str, str, str, bool]]  # (column, grantee, privilege, grantable)


@dataclass
class Saved:
    """What ``before_swap`` took off the live tables, for ``after_swap`` to put back."""

    tables: dict[str, _Table] = field(default_factory=dict)
    dependents: list[_Dependent] = field(default_factory=list)  # in creation order
    sqlite_views: list[tuple[str, str]] = field(default_factory=list)  # (name, CREATE statement)


_GRANTEE: Final = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"

_DEPENDENTS: Final = """
WITH RECURSIVE dependent(oid, depth) AS (
    SELECT r.ev_class, 1
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = ANY(CAST(:oids AS oid[])) AND r.ev_class <> d.refobjid
    UNION
    SELECT r.ev_class, dependent.depth + 1
    FROM dependent JOIN pg_depend d ON d.refobjid = dependent.oid JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND r.ev_class <> dependent.oid
)
SELECT c.oid, n.nspname, c.relname, c.relkind, pg_get_viewdef(c.oid) AS definition,
       coalesce(c.reloptions, '{}') AS options, pg_get_userbyid(c.relowner) AS owner,
       obj_description(c.oid, 'pg_class') AS comment, max(dependent.depth) AS depth
FROM dependent JOIN pg_class c ON c.oid = dependent.oid JOIN pg_namespace n ON n.oid = c.relnamespace
GROUP BY c.oid, n.nspname, c.relname, c.relkind, c.reloptions, c.relowner
ORDER BY max(dependent.depth), n.nspname, c.relname
"""


def _grants(conn: Connection, oid: int) -> list[tuple[str, str, bool]]:
    rows = conn.execute(sa.text(
        f"SELECT {_GRANTEE} AS grantee, a.privilege_type, a.is_grantable "
        "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = :oid AND a.grantee <> c.relowner"), {"oid": oid})
    return [(r.grantee, r.privilege_type, r.is_grantable) for r in rows]


def _grant_statements(target: str, grants: Iterable[tuple[str, str, bool]], column: str | None = None) -> list[str]:
    on = f"({_q(column)}) " if column else ""
    return [f"GRANT {privilege} {on}ON {target} TO {grantee if grantee == 'PUBLIC' else _q(grantee)}"
            + (" WITH GRANT OPTION" if grantable else "") for grantee, privilege, grantable in grants]


def before_swap(conn: Connection, tables: Sequence[sa.Table]) -> Saved:
    """Record the grants, owners and dependent views of the live ``tables``, and drop those views."""
    saved = Saved()
    if conn.dialect.name == "sqlite":
        saved.sqlite_views = [(r.name, r.sql) for r in conn.execute(sa.text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'view' ORDER BY rowid"))]
        for name, _sql in saved.sqlite_views:
            conn.execute(sa.text(f"DROP VIEW {_q(name)}"))
        return saved
    if conn.dialect.name != "postgresql":
        return saved
    oids: dict[str, int] = {}
    for table in tables:
        oid = conn.execute(sa.text("SELECT CAST(to_regclass(:n) AS oid)"), {"n": _q(table.name)}).scalar()
        if oid is None:
            continue
        oids[table.name] = oid
        owner = conn.execute(sa.text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = :oid"),
                             {"oid": oid}).scalar_one()
        column_grants = [(r.attname, r.grantee, r.privilege_type, r.is_grantable) for r in conn.execute(sa.text(
            f"SELECT t.attname, {_GRANTEE} AS grantee, a.privilege_type, a.is_grantable "
            "FROM pg_attribute t, aclexplode(t.attacl) a WHERE t.attrelid = :oid AND NOT t.attisdropped "
            "ORDER BY t.attnum"), {"oid": oid})]
        saved.tables[table.name] = _Table(owner, _grants(conn, oid), column_grants)
    if not oids:
        return saved
    for row in conn.execute(sa.text(_DEPENDENTS), {"oids": list(oids.values())}):
        column_comments = {r.attname: r.comment for r in conn.execute(sa.text(
            "SELECT attname, col_description(attrelid, attnum) AS comment FROM pg_attribute "
            "WHERE attrelid = :oid AND attnum > 0 AND NOT attisdropped AND col_description(attrelid, attnum) IS NOT NULL"),
            {"oid": row.oid})}
        indexes = list(conn.execute(sa.text("SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = :oid"),
                                    {"oid": row.oid}).scalars())
        saved.dependents.append(_Dependent(
            row.nspname, row.relname, row.relkind, row.definition, list(row.options), row.owner,
            _grants(conn, row.oid), row.comment, column_comments, indexes))
    for dependent in reversed(saved.dependents):
        kind = "MATERIALIZED VIEW" if dependent.kind == "m" else "VIEW"
        conn.execute(sa.text(f"DROP {kind} {dependent.qualified}"))
    return saved


def after_swap(conn: Connection, saved: Saved, tables: Sequence[str], name: str) -> None:
    """Put back on the new tables (now named ``tables``) what ``before_swap`` recorded; ``name``'s rebuild succeeded."""
    if conn.dialect.name == "sqlite":
        for _view, sql in saved.sqlite_views:
            conn.execute(sa.text(sql))
    elif conn.dialect.name == "postgresql":
        current = conn.execute(sa.text("SELECT current_user")).scalar_one()
        for table in tables:
            if table not in saved.tables:
                continue
            kept = saved.tables[table]
            if kept.owner != current:
                conn.execute(sa.text(f"ALTER TABLE {_q(table)} OWNER TO {_q(kept.owner)}"))
            oid = conn.execute(sa.text("SELECT CAST(to_regclass(:n) AS oid)"), {"n": _q(table)}).scalar_one()
            for grantee, privilege, _grantable in _grants(conn, oid):  # default privileges: exactly the old ones
                conn.execute(sa.text(f"REVOKE {privilege} ON {_q(table)} FROM "
                                     f"{grantee if grantee == 'PUBLIC' else _q(grantee)}"))
            for statement in _grant_statements(_q(table), kept.grants):
                conn.execute(sa.text(statement))
            for column, grantee, privilege, grantable in kept.column_grants:
                for statement in _grant_statements(_q(table), [(grantee, privilege, grantable)], column):
                    conn.execute(sa.text(statement))
        for dependent in saved.dependents:
            _recreate(conn, dependent, current)
        for statement in _comment_statements(tables, _columns(conn, tables)):
            conn.execute(sa.text(statement))
    conn.execute(failures_table.delete().where(failures_table.c.name == name))


def _recreate(conn: Connection, dependent: _Dependent, current: str) -> None:
    kind = "MATERIALIZED VIEW" if dependent.kind == "m" else "VIEW"
    options = f" WITH ({', '.join(dependent.options)})" if dependent.options else ""
    conn.execute(sa.text(f"CREATE {kind} {dependent.qualified}{options} AS {dependent.definition}"))
    for index in dependent.indexes:
        conn.execute(sa.text(index))
    if dependent.owner != current:
        conn.execute(sa.text(f"ALTER {kind} {dependent.qualified} OWNER TO {_q(dependent.owner)}"))
    for statement in _grant_statements(dependent.qualified, dependent.grants):
        conn.execute(sa.text(statement))
    if dependent.comment is not None:
        conn.execute(sa.text(f"COMMENT ON {kind} {dependent.qualified} IS {_literal(dependent.comment)}"))
    for column, comment in dependent.column_comments.items():
        conn.execute(sa.text(f"COMMENT ON COLUMN {dependent.qualified}.{_q(column)} IS {_literal(comment)}"))


def abandon(engine: Engine, name: str, generation: int, tables: Sequence[sa.Table], error: BaseException) -> None:
    """A swap failed and rolled back: drop the half-built generation and record why, for status and /readyz."""
    log.error("rebuild of %s failed at the swap and was rolled back; the live tables still answer: %r", name, error)
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        for table in reversed(tables):
            table.drop(conn, checkfirst=True)
        conn.execute(failures_table.delete().where(failures_table.c.name == name))
        conn.execute(failures_table.insert().values(
            name=name, generation=generation, error=f"{type(error).__name__}: {error}"[:2000],
            failed_at=datetime.now(UTC)))

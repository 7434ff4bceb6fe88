"""Deviation alerts: targets behind pace, pipelines that cannot cover the gap, stalled deals, overdue tasks.

Alerts are not a fold of events: whether a target is behind depends on the passage of time.
``evaluate_alerts`` is a pure query (a cut and an ``at`` in, candidates out); ``raise_alerts``
(run by a command or a periodic worker) evaluates at a given ``at``, upserts the alerts,
resolves those no longer true and, in the same transaction, queues one webhook delivery per
active endpoint for every alert raised or resolved, so a receiver that is down loses nothing.
``deliver_pending`` sends the queue: at least once, signed, retried with capped exponential
backoff, never dropped.

The tables belong to this module (create them with ``setup``), not to a projection: a
projection rebuild leaves them alone. An alert's id is derived from its kind, subject and
period (``alert_id``), so re-evaluating never duplicates it:

    kind             subject   period (what makes a new occurrence a new alert)
    target_at_risk   target    the target's period: its pace status is at_risk (severity warning)
    target_behind    target    the target's period: its pace status is behind (severity critical)
    coverage_low     target    the target's period: weighted open pipeline ÷ gap < coverage_below
    deal_stalled     deal      the time the deal entered its stage (moving on and stalling again is new)
    task_overdue     task      the due date (rescheduled and overdue again is new)

Owners (``alert_owners``; ``alerts.owner_id`` holds the owner when there is exactly one): the
target's member, the deal's owner, the task's assignee; for a unit target the managers of that
unit (``progress_members`` with role manager at the cut), none when it has no manager.

Webhook deliveries are queued through ``projections.processes.webhooks``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final
from uuid import NAMESPACE_URL, UUID, uuid5

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.errors import NotFound, RuleViolation, ValidationError
from domain.persistence import Database
from projections.engine import tracking_table
from projections.folds.progress import LIVE as LEDGER
from projections.history import Cut
from projections.measure.arithmetic import MeasureConfig, elapsed_share
from projections.measure.organisation import Organisation, tree_at
from projections.measure.targets import targets_at
from projections.processes import webhooks
from projections.processes.transactions import write_transaction
from projections.queries.analytics import StalledDeal, check_at, stalled_deals
from projections.queries.pipeline import TaskView, tasks
from projections.queries.progress import ProgressRow, progress_rows
from projections.sqltypes import UTCDateTime

KINDS: Final = ("target_behind", "target_at_risk", "coverage_low", "deal_stalled", "task_overdue")
SEVERITY: Final = {"target_behind": "critical", "target_at_risk": "warning", "coverage_low": "warning",
                   "deal_stalled": "warning", "task_overdue": "warning"}
"""How urgent each kind of alert is; a target that falls from at risk to behind resolves one and raises the other."""
READS: Final = ("progress", "pipeline")
"""The projections alerts are computed from (their lowest position is the one stamped on a run)."""

_NAMESPACE: Final = uuid5(NAMESPACE_URL, "urn:salesplan:alert")

metadata = sa.MetaData()
alerts_table = sa.Table(
    "alerts", metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("subject_type", sa.String(20), nullable=False),
    sa.Column("subject_id", sa.Uuid, nullable=False),
    sa.Column("period", sa.String(40), nullable=False),
    sa.Column("unit_id", sa.Uuid, nullable=True),
    sa.Column("owner_id", sa.Uuid, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("occurrence", sa.Integer, nullable=False),
    sa.Column("raised_at", UTCDateTime, nullable=False),
    sa.Column("raised_position", sa.BigInteger, nullable=False),
    sa.Column("evaluated_at", UTCDateTime, nullable=False),
    sa.Column("evaluated_position", sa.BigInteger, nullable=False),
    sa.Column("acknowledged_at", UTCDateTime, nullable=True),
    sa.Column("acknowledged_by", sa.String(100), nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("resolved_position", sa.BigInteger, nullable=True),
    sa.Index("ix_alerts_resolved_at", "resolved_at"),
    sa.Index("ix_alerts_unit_id", "unit_id"),
)
alert_owners_table = sa.Table(
    "alert_owners", metadata,
    sa.Column("alert_id", sa.Uuid, primary_key=True),
    sa.Column("member_id", sa.Uuid, primary_key=True),
    sa.Index("ix_alert_owners_member_id", "member_id"),
)
alert_runs_table = sa.Table(
    "alert_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("raised", sa.Integer, nullable=False),
    sa.Column("resolved", sa.Integer, nullable=False),
    sa.Column("open", sa.Integer, nullable=False),
)
def setup(database: Database) -> None:
    """Create the alert and webhook tables if they are missing (idempotent; call it at startup)."""
    metadata.create_all(database.engine, checkfirst=True)
    webhooks.setup(database)


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertConfig:
    """When a deviation is worth an alert. Pace is judged by ``measure``'s thresholds: the server's, as /progress."""

    min_elapsed_share: Decimal = Decimal("0.10")  # no pace alerts in the first tenth of a period: too noisy
    pace_metrics: tuple[str, ...] = v.ADDITIVE_METRICS
    coverage_below: Decimal = Decimal("1")  # weighted open pipeline ÷ gap
    stalled_after_days: int = 14
    overdue_grace_days: int = 0  # overdue when due before at.date() − grace
    measure: MeasureConfig = field(default_factory=MeasureConfig)


@dataclass(frozen=True)
class AlertCandidate:
    """A deviation true at the evaluated cut."""

    id: UUID
    kind: str
    subject_type: str
    subject_id: UUID
    period: str
    unit_id: UUID | None
    owner_ids: tuple[UUID, ...]
    message: str
    details: dict[str, str]


@dataclass(frozen=True)
class Alert:
    id: UUID
    kind: str
    subject_type: str
    subject_id: UUID
    period: str
    unit_id: UUID | None
    owner_id: UUID | None  # the owner when there is exactly one
    owner_ids: tuple[UUID, ...]
    message: str
    details: dict[str, str]
    occurrence: int  # 1, then +1 each time it is raised again after being resolved
    raised_at: datetime
    raised_position: int
    evaluated_at: datetime  # the last evaluation that found it true
    evaluated_position: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_position: int | None

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True)
class AlertRun:
    at: datetime
    position: int
    raised: int
    resolved: int
    open: int


def alert_id(kind: str, subject_type: str, subject_id: UUID, period: str) -> UUID:
    """The alert's id: the same deviation of the same subject in the same period is one alert."""
    return uuid5(_NAMESPACE, f"{kind}/{subject_type}/{subject_id}/{period}")


# --- evaluation (a query) ------------------------------------------------------------------------


def evaluate_alerts(conn: Connection, *, at: datetime, position: int, config: AlertConfig = AlertConfig()
                    ) -> list[AlertCandidate]:
    """Every deviation true at ``at`` as known at log ``position`` (reads progress and pipeline)."""
    cut = Cut(position, at)
    check_at(cut, at)
    org = Organisation(conn, cut)
    candidates = _target_alerts(conn, cut, at, config, org)
    for deal in stalled_deals(conn, cut=cut, at=at, after_days=config.stalled_after_days):
        candidates.append(_stalled_alert(deal, org.unit_of(deal.owner_id, at)))
    overdue_before = at.date() - timedelta(days=config.overdue_grace_days)
    for task in tasks(conn, cut=cut, at=at, status="open"):
        if task.due < overdue_before:
            candidates.append(_overdue_alert(task, org.unit_of(task.assignee_id, at), at))
    return sorted(candidates, key=lambda c: (KINDS.index(c.kind), c.period, str(c.subject_id)))


def _target_alerts(conn: Connection, cut: Cut, at: datetime, config: AlertConfig, org: Organisation
                   ) -> list[AlertCandidate]:
    p, m = LEDGER.plans.c, LEDGER.members
    published = set(conn.execute(sa.select(p.plan_id).where(cut.where(LEDGER.plans), p.status == "published"))
                    .scalars())
    if not published:
        return []
    # The targets whose window is running, measured as /progress measures them and judged by the same thresholds.
    running = [t for t in targets_at(conn, cut, plan_ids=published) if t.start <= at < t.end]
    rows = progress_rows(conn, running, cut=cut, at=at, config=config.measure)
    if not rows:
        return []
    managers: dict[UUID, list[UUID]] = defaultdict(list)
    for manager in conn.execute(sa.select(m.c.member_id, m.c.unit_id).where(
            cut.where(m), m.c.role == "manager", m.c.active.is_(True))):
        managers[manager.unit_id].append(manager.member_id)
    result = []
    for row in rows:
        if row.member_id is not None:
            owners: tuple[UUID, ...] = (row.member_id,)
            unit = org.unit_of(row.member_id, at)
            whose = row.member_name or str(row.member_id)
        else:
            owners = tuple(sorted(managers.get(row.unit_id, []), key=str)) if row.unit_id else ()
            unit = row.unit_id
            whose = row.unit_name or str(row.unit_id)
        narrowed = ", ".join(x for x in (row.product_line, row.region, row.segment) if x)
        scope = f"{whose} ({narrowed})" if narrowed else whose
        share = elapsed_share(row.window_start, row.window_end, at)
        if (row.metric in config.pace_metrics and share >= Fraction(config.min_elapsed_share)
                and row.pace_status in ("at_risk", "behind")):
            kind = "target_behind" if row.pace_status == "behind" else "target_at_risk"
            floor = config.measure.at_risk if row.pace_status == "behind" else config.measure.on_track
            standing = "is behind pace" if row.pace_status == "behind" else "is at risk"
            result.append(_target_alert(kind, row, unit, owners, (
                f"{row.metric} {row.period} for {scope} {standing}: {row.actual} against {row.expected_to_date}"
                f" expected to date (pace {row.pace}, below {floor})"),
                {"threshold": str(floor), "pace_status": row.pace_status, "severity": SEVERITY[kind]}))
        if row.coverage is not None and row.coverage < config.coverage_below:
            result.append(_target_alert("coverage_low", row, unit, owners, (
                f"{row.metric} {row.period} for {scope}: the weighted open pipeline {row.weighted_pipeline} covers"
                f" {row.coverage} of the gap {row.gap} (alert below {config.coverage_below})"),
                {"threshold": str(config.coverage_below), "severity": SEVERITY["coverage_low"]}))
    return result


def _target_alert(kind: str, row: ProgressRow, unit: UUID | None, owners: tuple[UUID, ...], message: str,
                  extra: dict[str, str]) -> AlertCandidate:
    figures = {
        "metric": row.metric, "committed": row.committed, "actual": row.actual, "expected_to_date":
        row.expected_to_date, "pace": row.pace, "gap": row.gap, "weighted_pipeline": row.weighted_pipeline,
        "coverage": row.coverage, "currency": row.currency,
    }
    details = {k: str(x) for k, x in figures.items() if x is not None} | extra
    return AlertCandidate(alert_id(kind, "target", row.target_id, row.period), kind, "target", row.target_id,
                          row.period, unit, owners, message, details)


def _stalled_alert(deal: StalledDeal, unit: UUID | None) -> AlertCandidate:
    period = deal.stage_entered_at.isoformat()
    return AlertCandidate(
        alert_id("deal_stalled", "deal", deal.deal_id, period), "deal_stalled", "deal", deal.deal_id, period, unit,
        (deal.owner_id,), f"deal {deal.name} has been in {deal.stage} for {deal.days_in_stage} days",
        {"stage": deal.stage, "days_in_stage": str(deal.days_in_stage), "amount": str(deal.amount),
         "currency": deal.currency},
    )


def _overdue_alert(task: TaskView, unit: UUID | None, at: datetime) -> AlertCandidate:
    period = task.due.isoformat()
    late = (at.date() - task.due).days
    return AlertCandidate(
        alert_id("task_overdue", "task", task.task_id, period), "task_overdue", "task", task.task_id, period, unit,
        (task.assignee_id,), f"task {task.title} was due on {period}: {late} days overdue",
        {"due": period, "days_overdue": str(late), "progress": str(task.progress)},
    )


# --- raising, listing, acknowledging (commands over the alert tables) -------------------------------


def read_position(conn: Connection, names: Sequence[str] = READS) -> int:
    """The lowest position the named projections have reached: what an evaluation can see."""
    positions = conn.execute(sa.select(tracking_table.c.position).where(tracking_table.c.name.in_(names))).scalars()
    found = list(positions)
    return min(found) if len(found) == len(names) else 0


def raise_alerts(database: Database, *, at: datetime, config: AlertConfig = AlertConfig()) -> list[Alert]:
    """Evaluate at ``at``; store new alerts, refresh open ones, resolve the rest; queue their webhooks.

    Returns the alerts open after the run. Runs move forward in time: ``at`` may not precede
    the previous run's (re-running the same ``at`` is fine and changes nothing new).
    """
    # Evaluate in a read transaction: on SQLite the write transaction holds the database's one
    # write lock, and the evaluation is a deterministic function of (at, position) anyway.
    with database.engine.connect() as conn:
        position = read_position(conn)
        candidates = {c.id: c for c in evaluate_alerts(conn, at=at, position=position, config=config)}
    with write_transaction(database, "alerts") as conn:
        last = conn.execute(sa.select(sa.func.max(alert_runs_table.c.at))).scalar()
        if last is not None and at < last:
            raise RuleViolation("alerts.at_before_last_run",
                                f"alerts were last evaluated at {last.isoformat()}: runs move forward in time", "at")
        a = alerts_table.c
        stored = {r.id: r for r in conn.execute(sa.select(alerts_table).where(
            sa.or_(a.id.in_(list(candidates)), a.resolved_at.is_(None))))}
        owners = _owners(conn, list(stored))
        raised = resolved = 0
        for c in candidates.values():
            values = {"unit_id": c.unit_id, "owner_id": c.owner_ids[0] if len(c.owner_ids) == 1 else None,
                      "message": c.message, "details": c.details, "evaluated_at": at, "evaluated_position": position}
            row = stored.get(c.id)
            if row is None:
                occurrence = 1
                conn.execute(alerts_table.insert().values(
                    id=c.id, kind=c.kind, subject_type=c.subject_type, subject_id=c.subject_id, period=c.period,
                    occurrence=occurrence, raised_at=at, raised_position=position, **values))
            elif row.resolved_at is not None:
                occurrence = row.occurrence + 1  # true again: a new occurrence, to be seen and acknowledged anew
                conn.execute(alerts_table.update().where(a.id == c.id).values(
                    occurrence=occurrence, raised_at=at, raised_position=position, resolved_at=None,
                    resolved_position=None, acknowledged_at=None, acknowledged_by=None, **values))
            else:
                conn.execute(alerts_table.update().where(a.id == c.id).values(**values))
                occurrence = 0
            if set(owners.get(c.id, ())) != set(c.owner_ids):
                conn.execute(alert_owners_table.delete().where(alert_owners_table.c.alert_id == c.id))
                if c.owner_ids:
                    conn.execute(alert_owners_table.insert(), [{"alert_id": c.id, "member_id": m} for m in c.owner_ids])
            if occurrence:
                raised += 1
                _notify(conn, c.id, "alert.raised", at)
        for row in stored.values():
            if row.resolved_at is None and row.id not in candidates:
                conn.execute(alerts_table.update().where(a.id == row.id).values(resolved_at=at, resolved_position=position))
                resolved += 1
                _notify(conn, row.id, "alert.resolved", at)
        conn.execute(alert_runs_table.insert().values(at=at, position=position, raised=raised, resolved=resolved,
                                                      open=len(candidates)))
        return _alerts(conn, sa.select(alerts_table).where(a.resolved_at.is_(None)))


def last_run(conn: Connection) -> AlertRun | None:
    """The latest evaluation: when, at which position, how many alerts it raised, resolved and left open."""
    r = alert_runs_table.c
    row = conn.execute(sa.select(alert_runs_table).order_by(r.id.desc()).limit(1)).first()
    return None if row is None else AlertRun(row.at, row.position, row.raised, row.resolved, row.open)


def list_alerts(
    conn: Connection, *, owner_id: UUID | None = None, unit_id: UUID | None = None, kind: str | None = None,
    subject_id: UUID | None = None, open_only: bool = True, open_at: datetime | None = None, limit: int = 100,
    after: tuple[datetime, UUID] | None = None,
) -> list[Alert]:
    """Alerts, newest first (then by id): open ones (default), all, or those open at ``open_at`` as the runs recorded it.

    ``owner_id``: alerts that member owns; ``unit_id``: alerts of that unit and the units below it;
    ``after``: the (raised_at, id) of the last alert of the page before.
    """
    if limit < 1:
        raise ValidationError("query.limit", "limit must be at least 1", "limit")
    if kind is not None and kind not in KINDS:
        raise ValidationError("alert.kind", f"kind must be one of {', '.join(KINDS)}", "kind", allowed=list(KINDS))
    a = alerts_table.c
    query = sa.select(alerts_table)
    if owner_id is not None:
        query = query.where(a.id.in_(sa.select(alert_owners_table.c.alert_id)
                                     .where(alert_owners_table.c.member_id == owner_id)))
    if unit_id is not None:
        query = query.where(a.unit_id.in_(_subtree_now(conn, unit_id)))
    if kind is not None:
        query = query.where(a.kind == kind)
    if subject_id is not None:
        query = query.where(a.subject_id == subject_id)
    if open_at is not None:
        query = query.where(a.raised_at <= open_at, sa.or_(a.resolved_at.is_(None), a.resolved_at > open_at))
    elif open_only:
        query = query.where(a.resolved_at.is_(None))
    if after is not None:
        query = query.where(sa.or_(a.raised_at < after[0], sa.and_(a.raised_at == after[0], a.id > after[1])))
    return _alerts(conn, query.order_by(a.raised_at.desc(), a.id).limit(limit))


def get_alert(conn: Connection, alert_id: UUID) -> Alert:
    alert = _load(conn, alert_id)
    if alert is None:
        raise NotFound("alert", alert_id, "alert_id")
    return alert


def acknowledge(database: Database, alert_id: UUID, member_id: UUID | None, *, at: datetime, admin: bool = False
                ) -> Alert:
    """The owner (or an admin) says they have seen the alert; acknowledging twice keeps the first."""
    with write_transaction(database, "alerts") as conn:
        alert = get_alert(conn, alert_id)
        if not admin and (member_id is None or member_id not in alert.owner_ids):
            raise RuleViolation("alert.not_owner", "only the alert's owner or an admin may acknowledge it", "alert_id")
        if alert.acknowledged_at is not None:
            return alert
        conn.execute(alerts_table.update().where(alerts_table.c.id == alert_id).values(
            acknowledged_at=at, acknowledged_by=str(member_id) if member_id is not None else "admin"))
        return get_alert(conn, alert_id)


def _subtree_now(conn: Connection, unit_id: UUID) -> set[UUID]:
    """The unit and the units beneath it, as the tree stands at the ledger's position."""
    position = read_position(conn, ("progress",))
    return tree_at(conn, Cut(position)).subtree(unit_id) | {unit_id}


def _owners(conn: Connection, ids: Sequence[UUID]) -> dict[UUID, list[UUID]]:
    result: dict[UUID, list[UUID]] = defaultdict(list)
    o = alert_owners_table.c
    for i in range(0, len(ids), 500):
        for row in conn.execute(sa.select(o.alert_id, o.member_id).where(o.alert_id.in_(ids[i : i + 500]))):
            result[row.alert_id].append(row.member_id)
    return result


def _alerts(conn: Connection, query: sa.Select[Any]) -> list[Alert]:
    rows = list(conn.execute(query))
    owners = _owners(conn, [r.id for r in rows])
    return [_alert(r, owners.get(r.id, [])) for r in rows]


def _load(conn: Connection, alert_id: UUID) -> Alert | None:
    found = _alerts(conn, sa.select(alerts_table).where(alerts_table.c.id == alert_id))
    return found[0] if found else None


def _alert(r: Any, owners: Iterable[UUID]) -> Alert:
    return Alert(
        id=r.id, kind=r.kind, subject_type=r.subject_type, subject_id=r.subject_id, period=r.period, unit_id=r.unit_id,
        owner_id=r.owner_id, owner_ids=tuple(sorted(owners, key=str)), message=r.message, details=dict(r.details),
        occurrence=r.occurrence, raised_at=r.raised_at, raised_position=r.raised_position, evaluated_at=r.evaluated_at,
        evaluated_position=r.evaluated_position, acknowledged_at=r.acknowledged_at, acknowledged_by=r.acknowledged_by,
        resolved_at=r.resolved_at, resolved_position=r.resolved_position,
    )


def alert_json(alert: Alert) -> dict[str, Any]:
    """The alert as a JSON-ready dict (webhook bodies, API responses)."""
    def text(x: Any) -> Any:
        return None if x is None else x.isoformat() if isinstance(x, datetime) else str(x)

    return {
        "id": str(alert.id), "kind": alert.kind, "subject_type": alert.subject_type,
        "subject_id": str(alert.subject_id), "period": alert.period, "unit_id": text(alert.unit_id),
        "owner_id": text(alert.owner_id), "owner_ids": [str(m) for m in alert.owner_ids], "message": alert.message,
        "details": alert.details, "occurrence": alert.occurrence, "raised_at": text(alert.raised_at),
        "raised_position": alert.raised_position, "evaluated_at": text(alert.evaluated_at),
        "evaluated_position": alert.evaluated_position, "acknowledged_at": text(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by, "resolved_at": text(alert.resolved_at),
        "resolved_position": alert.resolved_position,
    }


def _notify(conn: Connection, alert_id: UUID, event: str, at: datetime) -> None:
    alert = _load(conn, alert_id)
    assert alert is not None
    webhooks.enqueue(conn, alert_id=alert.id, occurrence=alert.occurrence, event=event, alert=alert_json(alert), at=at)

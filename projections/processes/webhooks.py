"""Webhook deliveries: an outbox of signed POSTs, queued in the transaction that decided them.

A process, not a projection: it keeps its own operational tables and is run by the service
(``salesplan serve`` inline, or the ``salesplan project`` worker). ``enqueue`` is called by the
process that raises alerts, in its own transaction, so a receiver that is down loses nothing;
``deliver_pending`` sends what is due, at least once, retried with capped exponential backoff.

Requests are ``POST`` with a JSON body and the headers ``Salesplan-Signature: sha256=<hex
HMAC-SHA256 of the body with the endpoint's secret>``, ``Salesplan-Delivery`` (a stable id:
receivers de-duplicate on it) and ``Salesplan-Event`` (``alert.raised`` or ``alert.resolved``);
any 2xx is success.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.errors import NotFound, ValidationError
from domain.persistence import Database
from projections.processes.transactions import write_transaction
from projections.sqltypes import UTCDateTime

# Delivery ids keep the namespace they were first derived in, so a re-queued delivery keeps its id.
_NAMESPACE: Final = uuid5(NAMESPACE_URL, "urn:salesplan:alert")


metadata = sa.MetaData()
webhooks_table = sa.Table(
    "alert_webhooks", metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
)
deliveries_table = sa.Table(
    "alert_deliveries", metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("alert_id", sa.Uuid, nullable=False),
    sa.Column("webhook_id", sa.Uuid, nullable=False),
    sa.Column("event", sa.String(30), nullable=False),
    sa.Column("occurrence", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # frozen when queued: every retry sends the same bytes
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_alert_deliveries_pending", "delivered_at", "next_attempt_at"),
)


def setup(database: Database) -> None:
    """Create the webhook tables if they are missing (idempotent)."""
    metadata.create_all(database.engine, checkfirst=True)


@dataclass(frozen=True)
class Webhook:
    """A configured endpoint (its secret is never read back)."""

    id: UUID
    url: str
    active: bool


@dataclass(frozen=True)
class Delivery:
    id: UUID
    alert_id: UUID
    webhook_id: UUID
    event: str
    occurrence: int
    body: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class DeliveryRun:
    delivered: list[UUID]
    failed: list[UUID]




def add_webhook(database: Database, *, url: str, secret: str, active: bool = True, id: UUID | None = None) -> Webhook:
    """Register an endpoint that receives every alert raised or resolved from now on."""
    parts = urlsplit(v.text(url, "url", max_length=2000))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError("webhook.url", "url must be an absolute http(s) URL", "url")
    if len(v.text(secret, "secret")) < 16:
        raise ValidationError("webhook.secret_short", "secret must be at least 16 characters", "secret")
    webhook = Webhook(id or uuid4(), parts.geturl(), active)
    with write_transaction(database, "alerts") as conn:
        conn.execute(webhooks_table.insert().values(id=webhook.id, url=webhook.url, secret=secret, active=active))
    return webhook


def set_webhook_active(database: Database, webhook_id: UUID, active: bool) -> Webhook:
    """Pause or resume an endpoint; its queued deliveries wait, they are not dropped."""
    with write_transaction(database, "alerts") as conn:
        done = conn.execute(webhooks_table.update().where(webhooks_table.c.id == webhook_id).values(active=active))
        if done.rowcount != 1:
            raise NotFound("webhook", webhook_id, "webhook_id")
        row = conn.execute(sa.select(webhooks_table).where(webhooks_table.c.id == webhook_id)).one()
    return Webhook(row.id, row.url, row.active)


def list_webhooks(conn: Connection) -> list[Webhook]:
    w = webhooks_table.c
    return [Webhook(r.id, r.url, r.active) for r in conn.execute(sa.select(w.id, w.url, w.active).order_by(w.url, w.id))]


def list_deliveries(conn: Connection, *, pending_only: bool = False, alert_id: UUID | None = None,
                    limit: int = 100, after: tuple[datetime, UUID] | None = None) -> list[Delivery]:
    """The outbox, oldest first: what was sent, what waits for its next attempt and why it failed.

    ``after``: the (created_at, id) of the last delivery of the page before.
    """
    d = deliveries_table.c
    query = sa.select(deliveries_table)
    if pending_only:
        query = query.where(d.delivered_at.is_(None))
    if alert_id is not None:
        query = query.where(d.alert_id == alert_id)
    if after is not None:
        query = query.where(sa.or_(d.created_at > after[0], sa.and_(d.created_at == after[0], d.id > after[1])))
    return [Delivery(**r._mapping) for r in conn.execute(query.order_by(d.created_at, d.id).limit(limit))]


def enqueue(conn: Connection, *, alert_id: UUID, occurrence: int, event: str, alert: dict[str, Any],
            at: datetime) -> None:
    """Queue one delivery of ``event`` per active endpoint, in the caller's transaction (nothing is lost)."""
    webhooks = list(conn.execute(sa.select(webhooks_table.c.id).where(webhooks_table.c.active.is_(True))).scalars())
    rows = []
    for webhook_id in webhooks:
        delivery_id = uuid5(_NAMESPACE, f"{alert_id}/{occurrence}/{event}/{webhook_id}")
        body = json.dumps({"delivery_id": str(delivery_id), "event": event, "alert": alert},
                          sort_keys=True, separators=(",", ":"))
        rows.append({"id": delivery_id, "alert_id": alert_id, "webhook_id": webhook_id, "event": event,
                     "occurrence": occurrence, "body": body, "created_at": at, "attempts": 0,
                     "next_attempt_at": at, "delivered_at": None, "last_error": None})
    if rows:
        conn.execute(deliveries_table.insert(), rows)


Send = Callable[[str, bytes, Mapping[str, str]], int]
"""Posts ``body`` to ``url`` with ``headers`` and returns the HTTP status; raises when it cannot connect."""


def http_send(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    """The real sender: one POST, a short timeout, no redirects followed."""
    return httpx.post(url, content=body, headers=dict(headers), timeout=10.0).status_code


def signature(secret: str, body: bytes) -> str:
    """The ``Salesplan-Signature`` header value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int, base: timedelta, cap: timedelta) -> timedelta:
    """The wait after the ``attempts``-th failure: base, 2×base, 4×base … never more than ``cap``."""
    doublings: int = min(max(attempts - 1, 0), 30)  # bounded: timedelta overflows long before 2**64
    delay: timedelta = base * (2**doublings)
    return min(delay, cap)


def deliver_pending(
    database: Database, *, now: datetime, send: Send = http_send, limit: int = 50,
    base_delay: timedelta = timedelta(seconds=30), max_delay: timedelta = timedelta(hours=1),
    lease: timedelta = timedelta(minutes=5),
) -> DeliveryRun:
    """Send the deliveries due at ``now`` to active endpoints; reschedule failures, never drop one.

    Claimed rows are pushed ``lease`` into the future first, so a second worker skips them
    while they are in flight (and retries them if this one dies): delivery is at least once.
    No transaction is held open while a request is in flight.
    """
    d, w = deliveries_table.c, webhooks_table.c
    with write_transaction(database, "alert_deliveries") as conn:
        query = (sa.select(d.id, d.body, d.event, d.attempts, w.url, w.secret)
                 .join(webhooks_table, w.id == d.webhook_id)
                 .where(d.delivered_at.is_(None), d.next_attempt_at <= now, w.active.is_(True))
                 .order_by(d.next_attempt_at, d.id).limit(limit))
        if database.is_postgres:
            query = query.with_for_update(of=deliveries_table, skip_locked=True)
        claimed = list(conn.execute(query))
        if claimed:
            conn.execute(deliveries_table.update().where(d.id.in_([r.id for r in claimed]))
                         .values(next_attempt_at=now + lease))
    result = DeliveryRun([], [])
    for row in claimed:
        body = row.body.encode()
        headers = {"Content-Type": "application/json", "Salesplan-Signature": signature(row.secret, body),
                   "Salesplan-Delivery": str(row.id), "Salesplan-Event": row.event}
        error: str | None
        try:
            status = send(row.url, body, headers)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except Exception as e:  # any failure to deliver is retried later, never raised into the worker
            error = f"{type(e).__name__}: {e}"[:2000]
        attempts = row.attempts + 1
        with write_transaction(database, "alert_deliveries") as conn:
            if error is None:
                conn.execute(deliveries_table.update().where(d.id == row.id).values(
                    attempts=attempts, delivered_at=now, last_error=None))
                result.delivered.append(row.id)
            else:
                conn.execute(deliveries_table.update().where(d.id == row.id).values(
                    attempts=attempts, next_attempt_at=now + backoff(attempts, base_delay, max_delay), last_error=error))
                result.failed.append(row.id)
    return result

"""The one database that holds the event store and the projections.

One SQLAlchemy URL (``SALESPLAN_DATABASE_URL``) names it: a SQLite file by default, PostgreSQL
in production. One datastore (one Engine and pool) is shared per URL by the application and
every projection, so that idempotency records, events and view rows can commit together.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from eventsourcing.persistence import JSONTranscoder, StoredEvent, Transcoding
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy import event
from sqlalchemy.engine import Engine

EVENTS_TABLE = "salesplan_events"


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


def register_transcodings(transcoder: JSONTranscoder) -> None:
    transcoder.register(DateAsISO())


class BatchingApplicationRecorder(SQLAlchemyApplicationRecorder):
    """The library's recorder, appending with one multi-row INSERT … RETURNING instead of one ORM object per event.

    Same table, same lock (``LOCK TABLE … IN EXCLUSIVE MODE`` on PostgreSQL, so ids still
    become visible in order), same NOTIFY; only the round trips are fewer, which is what bulk
    imports and multi-event commands pay for.
    """

    def _insert_stored_events(self, session: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        if not stored_events:
            return []
        table = self.events_record_cls.__table__
        self._lock_table(session)
        rows = [
            {"originator_id": e.originator_id, "originator_version": e.originator_version, "topic": e.topic,
             "state": e.state}
            for e in stored_events
        ]
        result = session.execute(table.insert().returning(table.c.id, sort_by_parameter_order=True), rows)
        ids = [int(row[0]) for row in result]
        self._notify_channel(session)
        return ids


@dataclass
class Database:
    """A datastore shared by the application and the projections on one URL."""

    url: str
    datastore: SQLAlchemyDatastore

    @property
    def engine(self) -> Engine:
        engine = self.datastore.engine
        assert isinstance(engine, Engine)
        return engine

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def dispose(self) -> None:
        self.engine.dispose()


_databases: dict[str, Database] = {}
_lock = threading.Lock()


def open_database(url: str, *, lock_timeout_ms: int = 5000) -> Database:
    """The shared Database for ``url`` (created on first use: nothing connects at import time)."""
    with _lock:
        db = _databases.get(url)
        if db is None:
            db = Database(url, _make_datastore(url, lock_timeout_ms))
            _databases[url] = db
        return db


def close_database(url: str) -> None:
    with _lock:
        db = _databases.pop(url, None)
    if db is not None:
        db.dispose()


def _make_datastore(url: str, lock_timeout_ms: int) -> SQLAlchemyDatastore:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # Wait for another process's write instead of failing at once ("database is locked").
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    elif url.startswith("postgresql"):
        # The event store's table lock is held to commit: a stuck writer must fail fast,
        # not freeze every write behind it.
        kwargs["connect_args"] = {
            "options": f"-c lock_timeout={lock_timeout_ms} -c idle_in_transaction_session_timeout=60000",
            "application_name": "salesplan",
        }
        # Batched UPDATEs too (projections close many history rows per batch), not one round trip each.
        kwargs["executemany_mode"] = "values_plus_batch"
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 20
    datastore = SQLAlchemyDatastore(url=url, **kwargs)
    if url.startswith("sqlite"):
        _tune_sqlite(datastore.engine)
    return datastore


IMMEDIATE = {"sqlite_immediate": True}
"""Execution options for a connection that will write: on SQLite it takes the write lock at
BEGIN, so a transaction never reads a snapshot it then cannot write from (SQLITE_BUSY_SNAPSHOT
would fail at once instead of waiting). Elsewhere it is ignored."""


def _tune_sqlite(engine: Any) -> None:
    # The stdlib driver's own transaction handling is switched off so that BEGIN is ours:
    # reads get a consistent snapshot, writers wait for each other (busy_timeout).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

"""The one database that holds the event store and the projections.

One SQLAlchemy URL (``SALESPLAN_DATABASE_URL``) names it: a SQLite file by default, PostgreSQL
in production. One datastore (one Engine and pool) is shared per URL by the application and
every projection, so that idempotency records, events and view rows can commit together.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
import sqlalchemy as sa
from eventsourcing.persistence import JSONTranscoder, StoredEvent, Transcoding
from eventsourcing_sqlalchemy.datastore import SQLAlchemyDatastore
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine

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


class FastJSONTranscoder(JSONTranscoder):
    """The library's JSON transcoder, decoding with orjson: the same objects, several times faster.

    The library decodes through ``json`` with an object hook called for every dict; here the
    document is parsed in C and the ``{"_type_", "_data_"}`` wrappers are revived afterwards,
    innermost first, by the same rule. Encoding is the library's, so stored events keep their
    exact form. Anything orjson refuses (NaN, integers beyond 64 bits) goes the library's way.
    """

    def decode(self, data: bytes) -> Any:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)
        return self._revive(parsed)

    def _revive(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            for key, item in value.items():
                if type(item) is dict or type(item) is list:
                    value[key] = self._revive(item)  # replacing a key's value while iterating is allowed
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self._decode_obj(value)
            return value
        if kind is list:
            return [self._revive(item) if type(item) is dict or type(item) is list else item for item in value]
        return value


def bind_processors(table: sa.Table, columns: Sequence[str], dialect: Dialect) -> list[Callable[[Any], Any] | None]:
    """Each column's bind processor, as SQLAlchemy itself would apply it (type decorators included)."""
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns]


@contextmanager
def driver_cursor(conn: Connection, statement: str) -> Iterator[Any]:
    """A cursor of the driver under ``conn``, whose errors come out as SQLAlchemy's (IntegrityError…), as if
    SQLAlchemy had run the statement; a lost connection is invalidated, not returned to the pool."""
    dbapi = conn.dialect.loaded_dbapi
    raw = conn.connection.dbapi_connection
    cursor = raw.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except dbapi.Error as error:
        lost = conn.dialect.is_disconnect(error, raw, cursor)  # type: ignore[arg-type]
        if lost:
            conn.invalidate(error)
        raise sa.exc.DBAPIError.instance(statement, None, error, dbapi.Error,
                                         connection_invalidated=lost) from error
    finally:
        if not conn.invalidated:
            cursor.close()


def _bound(rows: Sequence[Mapping[str, Any]], names: Sequence[str],
           processors: Sequence[Callable[[Any], Any] | None]) -> list[tuple[Any, ...]]:
    """Each row's values in column order, through the columns' bind processors."""
    get = operator.itemgetter(*names) if len(names) > 1 else (lambda row: (row[names[0]],))
    processed = [(i, p) for i, p in enumerate(processors) if p is not None]
    if not processed:
        return [tuple(get(row)) for row in rows]
    values = []
    for row in rows:
        items = list(get(row))
        for i, process in processed:
            items[i] = process(items[i])
        values.append(tuple(items))
    return values


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                returning: str | None = None) -> list[tuple[Any, ...]]:
    """A multi-row INSERT straight through the driver: the values SQLAlchemy would bind, without its per-row cost.

    Every row needs the keys in ``columns`` (default: the first row's). The values go through
    the columns' own bind processors, so the stored bytes are those of ``conn.execute(table.insert(),
    rows)``; what is saved is SQLAlchemy's statement building and parameter processing per row,
    which costs more than the database's insert itself. ``returning`` names a column to return
    (one tuple per row, in no promised order).
    """
    if not rows:
        return []
    names = list(columns or rows[0].keys())
    dialect = conn.dialect
    values = _bound(rows, names, bind_processors(table, names, dialect))
    column_list = ", ".join(f'"{n}"' for n in names)
    tail = f' RETURNING "{returning}"' if returning else ""
    if dialect.name == "postgresql":
        from psycopg2.extras import execute_values

        sql = f'INSERT INTO "{table.name}" ({column_list}) VALUES %s{tail}'
        with driver_cursor(conn, sql) as cursor:
            return list(execute_values(cursor, sql, values, page_size=1000, fetch=bool(returning)) or [])
    marks = "(" + ", ".join("?" for _ in names) + ")"
    found: list[tuple[Any, ...]] = []
    # SQLite binds at most 32,766 variables per statement.
    step = max(1, min(1000, 30_000 // len(names)))
    for i in range(0, len(values), step):
        chunk = values[i : i + step]
        sql = f'INSERT INTO "{table.name}" ({column_list}) VALUES {", ".join(marks for _ in chunk)}{tail}'
        with driver_cursor(conn, sql) as cursor:
            cursor.execute(sql, [v for row in chunk for v in row])
            if returning:
                found.extend(cursor.fetchall())
    return found


class BatchingApplicationRecorder(SQLAlchemyApplicationRecorder):
    """The library's recorder, appending with one multi-row INSERT … RETURNING instead of one ORM object per event.

    Same table, same lock (``LOCK TABLE … IN EXCLUSIVE MODE`` on PostgreSQL, so ids still
    become visible in order), same NOTIFY; only the round trips are fewer, which is what bulk
    imports and every command pay for: on PostgreSQL the lock, the NOTIFY (delivered at commit
    whatever its place in the transaction) and the insert go in one statement string.

    ``prelude`` (passed through ``save(…, prelude=(sql, params))``) is a driver-level statement
    run first, in the same round trip on PostgreSQL: the application claims a command's
    idempotency key with it, so that a duplicate fails before any event is inserted or the
    lock is taken.
    """

    def select_events(self, originator_id: Any, gt: int | None = None, lte: int | None = None, desc: bool = False,
                      limit: int | None = None) -> list[StoredEvent]:
        """An aggregate's events, read through the driver (the library builds an ORM query and objects per call;
        every command loads at least one aggregate)."""
        with self.transaction(commit=False) as session:
            conn = session.connection()
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            (to_db,) = bind_processors(self.events_record_cls.__table__, ["originator_id"], conn.dialect)
            sql = (f"SELECT originator_version, topic, state FROM {self.events_table_name} "
                   f"WHERE originator_id = {mark}")
            params: list[Any] = [to_db(originator_id) if to_db else originator_id]
            if gt is not None:
                sql += f" AND originator_version > {mark}"
                params.append(gt)
            if lte is not None:
                sql += f" AND originator_version <= {mark}"
                params.append(lte)
            sql += " ORDER BY originator_version" + (" DESC" if desc else "")
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            with driver_cursor(conn, sql) as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
        return [StoredEvent(originator_id=originator_id, originator_version=int(version), topic=topic,
                            state=bytes(state)) for version, topic, state in rows]

    def _insert_stored_events(self, session: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        if not stored_events:
            return []
        prelude: tuple[str, Sequence[Any]] | None = kwargs.get("prelude")
        table = self.events_record_cls.__table__
        conn = session.connection()
        names = ("originator_id", "originator_version", "topic", "state")
        values = _bound([vars(e) for e in stored_events], names, bind_processors(table, names, conn.dialect))
        columns = "originator_id, originator_version, topic, state"
        if conn.dialect.name == "postgresql":
            from psycopg2.extras import execute_values

            sql = (f"LOCK TABLE {self.events_table_name} IN EXCLUSIVE MODE; NOTIFY {self.channel_name}; "
                   f"INSERT INTO {self.events_table_name} ({columns}) VALUES %s "
                   "RETURNING id, originator_id::text, originator_version")
            with driver_cursor(conn, sql) as cursor:
                if prelude is not None:
                    sql = cursor.mogrify(prelude[0], prelude[1]).decode().replace("%", "%%") + "; " + sql
                returned = execute_values(cursor, sql, values, page_size=1000, fetch=True)
            by_key = {(str(oid), int(version)): int(i) for i, oid, version in returned}
            return [by_key[(str(e.originator_id), e.originator_version)] for e in stored_events]
        # SQLite: the write lock is held from BEGIN IMMEDIATE, which keeps ids in commit order.
        if prelude is not None:
            with driver_cursor(conn, prelude[0]) as cursor:
                cursor.execute(prelude[0], prelude[1])
        found: dict[tuple[Any, Any], int] = {}
        for i in range(0, len(values), 1000):
            chunk = values[i : i + 1000]
            sql = (f"INSERT INTO {self.events_table_name} ({columns}) VALUES "
                   + ", ".join("(?, ?, ?, ?)" for _ in chunk) + " RETURNING id, originator_id, originator_version")
            with driver_cursor(conn, sql) as cursor:
                cursor.execute(sql, [v for row in chunk for v in row])
                found.update({(oid, int(version)): int(i) for i, oid, version in cursor.fetchall()})
        return [found[(row[0], row[1])] for row in values]


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
    # No pre-ping: it costs a round trip per checkout, on every request. A connection found
    # dead fails its statement instead; SQLAlchemy then drops the whole pool (an error on a
    # disconnect invalidates every older connection), so one request answers 503 and the
    # next ones get fresh connections.
    kwargs: dict[str, Any] = {}
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

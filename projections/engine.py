"""The projection engine: exactly-once, batched, rebuildable views of the event log.

A projection owns its tables and folds events into them. The engine feeds it batches of
events in log order; each batch's rows and the projection's new position commit in one
transaction, and the position only moves if nobody else moved it first
(``UPDATE … WHERE position = :seen``), so two workers can never both apply an event. On
PostgreSQL a transaction-level advisory lock also keeps a second worker from doing the same
work in vain.

Positions are notification ids: ordered, not gapless (a rolled-back insert on PostgreSQL
burns an id). Reading ``id > position`` skips holes and never waits for them.

A poison event (the fold raises) stops its projection at the position before it; the
error and the position are recorded in the tracking table and shown by ``status``. It is
never skipped. Transient database errors are retried.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, cast
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.persistence import StoredEvent
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateTable

from domain.application import SalesPlanning
from domain.persistence import IMMEDIATE, Database, driver_cursor, insert_rows
from projections import bi
from projections.history import RebuildState, rebuilding

log = logging.getLogger("salesplan.projections")

tracking_metadata = sa.MetaData()
tracking_table = sa.Table(
    "salesplan_projections",
    tracking_metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("fold_version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_position", sa.BigInteger, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

REBUILD_BATCH = 5000
LIVE = "live"
FAILED = "failed"
REBUILDING = "rebuilding"


@dataclass(frozen=True)
class Envelope:
    """A domain event with its log position; ``recorded_at`` is when the store learned it."""

    position: int
    event: Any

    @property
    def recorded_at(self) -> datetime:
        recorded: datetime = self.event.timestamp
        return recorded

    @property
    def type(self) -> str:
        return type(self.event).__qualname__


class Projection(ABC):
    """A deterministic function of the event log into tables this projection alone owns.

    Subclasses set ``name``, ``fold_version`` (bump it when the fold changes: the tables must
    then be rebuilt) and ``topics`` (event classes of interest; others are skipped without
    being decoded), define their tables in ``define_tables`` through ``self.table(...)``,
    and fold a batch in ``handle``. ``suffix`` names a blue/green generation under
    construction; queries always read the unsuffixed, live tables.
    """

    name: ClassVar[str]
    fold_version: ClassVar[int] = 1
    topics: ClassVar[tuple[type[Any], ...]] = ()

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix
        self.metadata = sa.MetaData()
        self._topic_names = {_topic(cls) for cls in self.topics}
        self.define_tables()

    def table(self, base: str, *columns: sa.Column[Any], indexes: Sequence[Sequence[str]] = ()) -> sa.Table:
        """A table of this projection; index names carry the generation so they never collide."""
        name = base + self.suffix
        table = sa.Table(name, self.metadata, *columns)
        tag = self.suffix.replace("__", "_") or ""
        for cols in indexes:
            sa.Index(f"ix_{base}{tag}_{'_'.join(cols)}"[:63], *[table.c[c] for c in cols])
        return table

    @abstractmethod
    def define_tables(self) -> None: ...

    @abstractmethod
    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        """Fold a batch of events (in log order) into this projection's tables."""

    def wants(self, topic: str) -> bool:
        return not self._topic_names or topic in self._topic_names

    @property
    def tables(self) -> list[sa.Table]:
        return list(self.metadata.sorted_tables)

    def base_names(self) -> list[str]:
        return [t.name[: len(t.name) - len(self.suffix)] if self.suffix else t.name for t in self.tables]


def _topic(cls: type[Any]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class PoisonEvent(Exception):
    """A projection's fold failed on one event; the projection stopped before it."""

    def __init__(self, name: str, position: int, error: BaseException) -> None:
        super().__init__(f"projection {name} failed at position {position}: {type(error).__name__}: {error}")
        self.name = name
        self.position = position


class PositionMoved(Exception):
    """Another worker advanced this projection first; this batch was rolled back."""


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    status: str
    generation: int
    fold_version: int
    code_fold_version: int
    error: str | None
    error_position: int | None


def _now() -> datetime:
    return datetime.now(UTC)


class ProjectionEngine:
    """Runs projections over one application's log, in this process."""

    def __init__(self, app: SalesPlanning, projections: Iterable[Projection], batch_size: int = 500) -> None:
        self.app = app
        self.database: Database = app.database
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self._events_table: sa.Table = app.recorder.events_record_cls.__table__  # type: ignore[attr-defined]
        self.wake = threading.Event()

    # --- setup --------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the tracking table, every projection's tables and its tracking row; rebuild any left stale.

        A projection whose tables were folded by another version of its fold (an upgrade of
        salesplan changed what it keeps) is rebuilt here, before anything reads or extends them.
        """
        engine = self.database.engine
        tracking_metadata.create_all(engine, checkfirst=True)
        for projection in self.projections.values():
            projection.metadata.create_all(engine, checkfirst=True)
            self._ensure_row(projection.name, projection.fold_version)
        bi.install(engine)
        self.upgrade()

    def stale(self) -> list[str]:
        """The projections whose tables another version of their fold wrote: they must be rebuilt."""
        with self.database.engine.connect() as conn:
            versions = {r.name: r.fold_version for r in conn.execute(
                sa.select(tracking_table.c.name, tracking_table.c.fold_version))}
        return [name for name, p in self.projections.items() if versions.get(name, p.fold_version) != p.fold_version]

    def upgrade(self) -> list[str]:
        """Rebuild the stale projections (once: another process starting at the same time waits, then finds none)."""
        with self._upgrade_lock():
            names = self.stale()
            if names:
                log.warning("rebuilding %s: their tables were folded by another version of salesplan",
                            ", ".join(names))
                self.rebuild_many(names)
        return names

    @contextmanager
    def _upgrade_lock(self) -> Iterator[None]:
        if not self.database.is_postgres:
            yield  # the embedded default: one process sets its file up
            return
        with self.database.engine.connect() as conn:
            conn.execute(sa.text("select pg_advisory_lock(:k)"), {"k": _lock_key("salesplan.upgrade")})
            try:
                conn.commit()
                yield
            finally:
                conn.execute(sa.text("select pg_advisory_unlock(:k)"), {"k": _lock_key("salesplan.upgrade")})
                conn.commit()

    def _ensure_row(self, name: str, fold_version: int, generation: int = 1, status: str = LIVE) -> None:
        with self._begin() as conn:
            exists = conn.execute(sa.select(tracking_table.c.name).where(tracking_table.c.name == name)).first()
            if exists is None:
                conn.execute(tracking_table.insert().values(
                    name=name, position=0, generation=generation, fold_version=fold_version, status=status,
                    error=None, error_position=None, updated_at=_now(),
                ))

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction (on SQLite: holding the write lock from BEGIN)."""
        with self.database.engine.connect() as conn:
            conn = conn.execution_options(**IMMEDIATE)
            with conn.begin():
                yield conn

    # --- reading ------------------------------------------------------------------------

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def position(self, name: str) -> int:
        with self.database.engine.connect() as conn:
            return int(conn.execute(
                sa.select(tracking_table.c.position).where(tracking_table.c.name == name)
            ).scalar_one())

    def _row(self, conn: Connection, name: str) -> Any:
        return conn.execute(sa.select(tracking_table).where(tracking_table.c.name == name)).first()

    def _read(self, projection: Projection, after: int, limit: int) -> tuple[list[Envelope], int]:
        """The next events after ``after`` that the projection wants, and the last position scanned."""
        log_rows = self._read_log(after, limit)
        return log_rows.envelopes(projection, after), log_rows.last(after)

    def _read_log(self, after: int, limit: int) -> _LogRows:
        """The next ``limit`` rows of the log after ``after``, decoded on demand (once, whoever asks).

        Read through the driver (the library's reader builds an ORM object per row, and
        SQLAlchemy's row processing costs more than the scan); events of topics nobody wants are
        never decoded.
        """
        events = self._events_table
        sql = (f"SELECT id, originator_id, originator_version, topic, state FROM {events.name} "
               f"WHERE id > {int(after)} ORDER BY id LIMIT {int(limit)}")
        with self.database.engine.connect() as conn:
            with driver_cursor(conn, sql) as cursor:
                cursor.execute(sql)
                rows = cursor.fetchall()
            to_id = self._originator_id(conn)
        return _LogRows([(int(r[0]), to_id(r[1]), int(r[2]), r[3], bytes(r[4])) for r in rows],
                        self.app.mapper.to_domain_event)

    @staticmethod
    def _originator_id(conn: Connection) -> Callable[[Any], Any]:
        """An originator id as the driver returns it (16 bytes on SQLite; text or a UUID on PostgreSQL), as a UUID."""
        if conn.dialect.name == "sqlite":
            return lambda value: UUID(bytes=value)
        return lambda value: value if isinstance(value, UUID) else UUID(value)

    # --- processing ---------------------------------------------------------------------

    def run_once(self, name: str, tracking_name: str | None = None, projection: Projection | None = None,
                 limit: int | None = None) -> int:
        """Process one batch of ``name``; returns how many positions it advanced over (0: caught up)."""
        projection = projection or self.projections[name]
        tracking_name = tracking_name or name
        with self.database.engine.connect() as conn:
            row = self._row(conn, tracking_name)
        if row is None or row.status == FAILED:
            return 0
        start = int(row.position)
        batch, last = self._read(projection, start, limit or self.batch_size)
        if last == start:
            return 0
        try:
            self._commit(projection, tracking_name, start, batch, last)
        except PositionMoved:
            return 0
        except sa.exc.OperationalError:
            raise
        except Exception as error:
            self._isolate(projection, tracking_name, start, batch, last, error)
            return 0
        return last - start

    def run_together(self, names: Sequence[str], limit: int | None = None) -> int:
        """One batch for several projections, reading the log once for all of them.

        Each projection commits its own rows and position (its own transaction, its own poison
        stop); they only share the read and the decoding. Returns how many positions the one
        furthest behind advanced over (0: all caught up); raises PoisonEvent, once every other
        projection has had its batch, if one stopped.
        """
        with self.database.engine.connect() as conn:
            rows = {r.name: r for r in conn.execute(
                sa.select(tracking_table).where(tracking_table.c.name.in_(list(names)))).all()}
        starts = {n: int(rows[n].position) for n in names if n in rows and rows[n].status != FAILED}
        if not starts:
            return 0
        after = min(starts.values())
        log_rows = self._read_log(after, limit or self.batch_size)
        last = log_rows.last(after)
        if last == after:
            return 0
        poisoned: list[PoisonEvent] = []
        for name, start in starts.items():
            if start >= last:
                continue
            projection = self.projections[name]
            batch = log_rows.envelopes(projection, start)
            started = time.perf_counter()
            try:
                self._commit(projection, name, start, batch, last)
            except PositionMoved:
                continue
            except sa.exc.OperationalError:
                self._batch_failed(name, "database")
                raise
            except Exception as error:
                try:
                    self._isolate(projection, name, start, batch, last, error)
                except PoisonEvent as poison:
                    self._batch_failed(name, "poison")
                    poisoned.append(poison)  # recorded in the tracking table; the others carry on
                    continue
            self._batch_done(name, last - start, time.perf_counter() - started)
        if poisoned:
            raise poisoned[0]
        return last - after

    def _batch_done(self, name: str, advanced: int, seconds: float) -> None:
        """Called after a shared-read batch of ``name`` committed (for metrics)."""

    def _batch_failed(self, name: str, kind: str) -> None:
        """Called when a shared-read batch of ``name`` failed: ``poison`` or ``database`` (for metrics)."""

    def _commit(self, projection: Projection, tracking_name: str, start: int, batch: Sequence[Envelope],
                last: int) -> None:
        with self._begin() as conn:
            # A view is derived data: its commit need not wait for the disk. Its rows and its
            # position still commit together or not at all; a crash can only lose the last few
            # batches of both, which the worker then folds again (the log is durable).
            if self.database.is_postgres and not conn.execute(
                sa.text("set local synchronous_commit = off; select pg_try_advisory_xact_lock(:k)"),
                {"k": _lock_key(tracking_name)},
            ).scalar_one():
                raise PositionMoved(tracking_name)
            # The batch was read before this transaction began: if another worker committed it
            # meanwhile, folding it again would collide with its rows. Under the lock (advisory
            # on PostgreSQL, the write lock on SQLite) the position cannot move until we commit.
            current = conn.execute(
                sa.select(tracking_table.c.position).where(tracking_table.c.name == tracking_name)
            ).scalar_one()
            if current != start:
                raise PositionMoved(tracking_name)
            if batch:
                projection.handle(cast(Connection, _FoldConnection(conn)), batch)
            moved = conn.execute(
                tracking_table.update()
                .where(tracking_table.c.name == tracking_name, tracking_table.c.position == start)
                .values(position=last, updated_at=_now())
            ).rowcount
            if moved != 1:
                raise PositionMoved(tracking_name)

    def _isolate(self, projection: Projection, tracking_name: str, start: int, batch: Sequence[Envelope],
                 last: int, batch_error: BaseException) -> None:
        """Re-run the failed batch one event at a time: commit the good ones, stop at the poison one."""
        position = start
        for envelope in batch:
            try:
                self._commit(projection, tracking_name, position, [envelope], envelope.position)
            except PositionMoved:
                return
            except sa.exc.OperationalError:
                raise
            except Exception as error:
                self._fail(tracking_name, position, envelope.position, error)
                raise PoisonEvent(projection.name, envelope.position, error) from error
            position = envelope.position
        # Every event succeeded on its own: the batch failure was transient. Move past the tail.
        log.warning("batch of %s failed but its events succeeded alone: %s", tracking_name, batch_error)
        if position != last:
            try:
                self._commit(projection, tracking_name, position, [], last)
            except PositionMoved:
                return

    def _fail(self, tracking_name: str, position: int, error_position: int, error: BaseException) -> None:
        log.error("projection %s stopped at %s: event %s failed: %r", tracking_name, position, error_position, error)
        with self._begin() as conn:
            conn.execute(
                tracking_table.update().where(tracking_table.c.name == tracking_name).values(
                    status=FAILED, error=f"{type(error).__name__}: {error}"[:2000], error_position=error_position,
                    updated_at=_now(),
                )
            )

    def retry(self, name: str) -> None:
        """Clear a failed projection's error so that it tries the poison event again (after a fix)."""
        with self._begin() as conn:
            conn.execute(tracking_table.update().where(tracking_table.c.name == name).values(
                status=LIVE, error=None, error_position=None, updated_at=_now()))

    def catch_up(self, names: Iterable[str] | None = None, until: int | None = None) -> None:
        """Process until every named projection has reached ``until`` (default: the head now)."""
        target = self.head() if until is None else until
        for name in list(names or self.projections):
            while self.position(name) < target:
                try:
                    self.run_once(name)
                except PoisonEvent as error:
                    log.error("%s", error)  # recorded in the tracking table; status shows it
                if self._status_of(name) == FAILED:
                    break

    def _status_of(self, name: str) -> str:
        with self.database.engine.connect() as conn:
            return str(self._row(conn, name).status)

    def run_forever(self, stop: threading.Event, poll_seconds: float = 0.2,
                    on_error: Callable[[BaseException], None] | None = None) -> None:
        """Keep every projection caught up until ``stop`` is set; woken early by ``wake``."""
        listener = _Listener(self.database) if self.database.is_postgres else None
        try:
            while not stop.is_set():
                busy = False
                try:
                    for group in self._groups():
                        busy = self.run_together(group) > 0 or busy
                except PoisonEvent as error:
                    if on_error:
                        on_error(error)
                except sa.exc.OperationalError as error:  # transient: database restarting, lock timeout
                    log.warning("projections: database error, retrying: %s", error)
                    time.sleep(min(poll_seconds * 5, 2.0))
                if busy:
                    continue
                if listener is not None:
                    listener.wait(poll_seconds * 5, self.wake)
                else:
                    self.wake.wait(poll_seconds)
                self.wake.clear()
        finally:
            if listener is not None:
                listener.close()

    def _groups(self) -> list[list[str]]:
        """The projections that can share a read: those within a batch of the one furthest ahead;
        each one further behind (rebuilt, retried, new) catches up on its own reads meanwhile."""
        with self.database.engine.connect() as conn:
            positions = dict(conn.execute(
                sa.select(tracking_table.c.name, tracking_table.c.position)
                .where(tracking_table.c.name.in_(list(self.projections)))).tuples().all())
        if not positions:
            return []
        lead = max(positions.values())
        close = [n for n in self.projections if positions.get(n, -1) >= lead - self.batch_size]
        return [close] + [[n] for n in self.projections if n in positions and n not in close]

    # --- status and read-your-writes ----------------------------------------------------

    def status(self) -> list[ProjectionStatus]:
        head = self.head()
        result = []
        with self.database.engine.connect() as conn:
            for name, projection in self.projections.items():
                row = self._row(conn, name)
                position = int(row.position) if row else 0
                lag_events = 0
                lag_seconds = 0.0
                if position < head:
                    lag_events = self._count_after(position)
                    first = self.app.recorder.select_notifications(start=position + 1, limit=1)
                    if first:
                        recorded: datetime = cast(Any, self.app.mapper.to_domain_event(first[0])).timestamp
                        lag_seconds = max((_now() - recorded).total_seconds(), 0.0)
                result.append(ProjectionStatus(
                    name=name, position=position, head=head, lag_events=lag_events, lag_seconds=lag_seconds,
                    status=row.status if row else "missing", generation=int(row.generation) if row else 0,
                    fold_version=int(row.fold_version) if row else 0, code_fold_version=projection.fold_version,
                    error=row.error if row else None, error_position=row.error_position if row else None,
                ))
        return result

    def _count_after(self, position: int) -> int:
        events = sa.table(self.app.recorder.events_table_name, sa.column("id"))  # type: ignore[attr-defined]
        with self.database.engine.connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(events).where(events.c.id > position)
            ).scalar_one())

    def wait_for(self, position: int, timeout: float, names: Iterable[str] | None = None) -> bool:
        """Block until the named projections (default: all) reach ``position``, or ``timeout`` passes."""
        wanted = list(names or self.projections)
        deadline = time.monotonic() + timeout
        self.wake.set()
        while True:
            with self.database.engine.connect() as conn:
                positions = conn.execute(
                    sa.select(tracking_table.c.position).where(tracking_table.c.name.in_(wanted))
                ).scalars().all()
            if len(positions) == len(wanted) and min(positions) >= position:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    # --- blue/green rebuild -------------------------------------------------------------

    def rebuild(self, name: str, progress: Callable[[int, int], None] | None = None) -> int:
        """Replay ``name`` from zero into new tables while the old ones keep answering; then swap.

        Returns the position the new tables were switched in at.
        """
        report = None if progress is None else (lambda _name, done, total: progress(done, total))
        return self.rebuild_many([name], report)[name]

    def rebuild_many(self, names: Sequence[str], progress: Callable[[str, int, int], None] | None = None
                     ) -> dict[str, int]:
        """Rebuild several projections in this process, reading and decoding the log once for all of them.

        Each is replayed into new ``…__gN`` tables in rebuild mode: the tables get their
        secondary indexes only once they are full (building an index once is cheaper than
        keeping it up for every row), and history tables are written without closing each
        entity's previous row, closed afterwards by one set-based statement
        (``projections.history``). Then each is caught up and switched in, as ``rebuild`` did.
        Returns the position each was switched in at.
        """
        fresh: dict[str, tuple[Projection, str, int, RebuildState]] = {}
        for name in names:
            live = self.projections[name]
            with self.database.engine.connect() as conn:
                row = self._row(conn, name)
            generation = (int(row.generation) if row else 1) + 1
            suffix = f"__g{generation}"
            projection = type(live)(suffix=suffix)
            build_name = f"{name}{suffix}"
            with self._begin() as conn:
                for table in reversed(projection.tables):
                    table.drop(conn, checkfirst=True)
                conn.execute(tracking_table.delete().where(tracking_table.c.name == build_name))
                for table in projection.tables:
                    conn.execute(CreateTable(table))  # its indexes come once it is full
            self._ensure_row(build_name, projection.fold_version, generation, REBUILDING)
            fresh[name] = (projection, build_name, generation, RebuildState())
        total = self.head()
        positions = dict.fromkeys(names, 0)
        while True:
            # Bigger batches than live processing: fewer commits, and nobody waits on a rebuild's lag.
            after = min(positions.values())
            log_rows = self._read_log(after, max(self.batch_size, REBUILD_BATCH))
            last = log_rows.last(after)
            if last == after:
                break
            for name, (projection, build_name, _generation, state) in fresh.items():
                start = positions[name]
                batch = log_rows.envelopes(projection, start)
                try:
                    with rebuilding(state):
                        self._commit(projection, build_name, start, batch, last)
                except sa.exc.OperationalError:
                    raise
                except Exception as error:
                    # What the failed batch folded was rolled back: so must be what rebuild mode remembers.
                    state.forget()
                    with rebuilding(state):
                        self._isolate(projection, build_name, start, batch, last, error)  # raises at a poison event
                positions[name] = last
                if progress:
                    progress(name, last, max(total, last))
        switched = {}
        for name, (projection, build_name, generation, state) in fresh.items():
            with self._begin() as conn:
                state.link(conn)
                for table in projection.tables:
                    for index in table.indexes:
                        index.create(conn)
            if self.database.is_postgres:
                with self.database.engine.connect() as conn:
                    for table in projection.tables:
                        conn.exec_driver_sql(f'ANALYZE "{table.name}"')
                    conn.commit()
            try:
                switched[name] = self._swap(self.projections[name], projection, build_name, generation)
            except Exception as error:
                # The swap's transaction rolled back (the live tables answer as before): drop what was half built.
                with self._begin() as conn:
                    conn.execute(tracking_table.delete().where(tracking_table.c.name == build_name))
                bi.abandon(self.database.engine, name, generation, projection.tables, error)
                raise
        return switched

    def _swap(self, live: Projection, fresh: Projection, build_name: str, generation: int) -> int:
        while True:
            with self._begin() as conn:
                if self.database.is_postgres:
                    # Wait for the live worker's batch to finish, then keep it out until we commit.
                    conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": _lock_key(live.name)})
                position = int(self._row(conn, build_name).position)
                batch, last = self._read(fresh, position, self.batch_size)
                if last != position:
                    # Events arrived meanwhile: fold them into the new tables, inside the swap.
                    if batch:
                        fresh.handle(conn, batch)
                    conn.execute(tracking_table.update().where(tracking_table.c.name == build_name)
                                 .values(position=last, updated_at=_now()))
                    if last - position >= self.batch_size:
                        continue  # commit this batch and go round again
                    position = last
                saved = bi.before_swap(conn, live.tables)  # grants and dependent views, put back below
                for table in reversed(live.tables):
                    table.drop(conn, checkfirst=True)
                for table, base in zip(fresh.tables, fresh.base_names(), strict=True):
                    conn.execute(sa.text(f'ALTER TABLE "{table.name}" RENAME TO "{base}"'))
                bi.after_swap(conn, saved, fresh.base_names(), live.name)
                conn.execute(tracking_table.update().where(tracking_table.c.name == live.name).values(
                    position=position, generation=generation, fold_version=fresh.fold_version, status=LIVE,
                    error=None, error_position=None, updated_at=_now(),
                ))
                conn.execute(tracking_table.delete().where(tracking_table.c.name == build_name))
                return position


class _FoldConnection:
    """The connection a projection folds a batch through: its multi-row INSERTs go straight through the driver.

    ``conn.execute(table.insert(), rows)`` — how folds write their new rows — costs more in
    SQLAlchemy's per-row parameter processing than in the database; ``insert_rows`` binds the
    same values with the same column types, so the stored bytes are the same. Any other
    statement (and an INSERT with values, RETURNING, a SELECT, hints or prefixes) goes to the
    connection as it is.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, statement: Any, parameters: Any = None, *args: Any, **kwargs: Any) -> Any:
        if (isinstance(parameters, list) and len(parameters) > 1 and not args and not kwargs
                and isinstance(statement, sa.Insert) and _plain(statement)):
            insert_rows(self._conn, cast(sa.Table, statement.table), parameters)
            return _Inserted(len(parameters))
        return self._conn.execute(statement, parameters, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _plain(insert: sa.Insert) -> bool:
    # SQLAlchemy 2.0's Insert keeps these privately; pinned below 2.1 by the persistence module.
    return (insert._values is None and not insert._multi_values and not insert._returning and insert.select is None
            and insert._post_values_clause is None and not insert._hints and not insert._prefixes
            and isinstance(insert.table, sa.Table))


@dataclass(frozen=True)
class _Inserted:
    rowcount: int


class _LogRows:
    """A batch of the log's rows, each decoded into an Envelope at most once, for whichever projection asks first."""

    def __init__(self, rows: list[tuple[int, Any, int, str, bytes]], decode: Callable[[StoredEvent], Any]) -> None:
        self.rows = rows
        self._decode = decode
        self._envelopes: dict[int, Envelope] = {}

    def last(self, after: int) -> int:
        return self.rows[-1][0] if self.rows else after

    def envelopes(self, projection: Projection, after: int) -> list[Envelope]:
        """The events after ``after`` that ``projection`` wants, in log order."""
        result = []
        known = self._envelopes
        for position, originator_id, version, topic, state in self.rows:
            if position <= after or not projection.wants(topic):
                continue
            envelope = known.get(position)
            if envelope is None:
                envelope = known[position] = Envelope(position, self._decode(
                    StoredEvent(originator_id, version, topic, state)))
            result.append(envelope)
        return result


def _lock_key(name: str) -> int:
    base = name.split("__g")[0]
    return zlib.crc32(f"salesplan.projection.{base}".encode()) - 2**31


class _Listener:
    """PostgreSQL LISTEN on the event store's channel: wakes the workers when events commit."""

    def __init__(self, database: Database) -> None:
        self._conn = database.engine.raw_connection()
        self._conn.driver_connection.set_isolation_level(0)  # type: ignore[union-attr]
        cursor = self._conn.cursor()
        cursor.execute("LISTEN salesplan_events")
        cursor.close()

    def wait(self, timeout: float, wake: threading.Event) -> None:
        import select

        raw: Any = self._conn.driver_connection
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not wake.is_set():
            if select.select([raw], [], [], 0.05)[0]:
                raw.poll()  # type: ignore[union-attr]
                if raw.notifies:  # type: ignore[union-attr]
                    raw.notifies.clear()  # type: ignore[union-attr]
                    return

    def close(self) -> None:
        with suppress(Exception):
            self._conn.close()

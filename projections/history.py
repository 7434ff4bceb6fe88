"""Per-entity history tables: one row per change, valid until the next one.

Every row is the entity's state right after one event, with that event's position and
effective time, and the position and effective time of the entity's *next* row (NULL while
it is the latest). Because an entity's changes take effect in the order they were made, the
events of an entity visible at a cut (position ≤ P, effective ≤ T) are a prefix of its
history, so its state at that cut is exactly one row, found without a subquery:

    position ≤ P AND effective_at ≤ T AND (next_position IS NULL OR next_position > P
                                          OR next_effective_at > T)

"Q1 as it looked on 31 March" and "Q1 as we know it today" are then the same indexed scan
with different cut-offs, and it does not get slower as other entities' history grows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.persistence import insert_rows
from projections.sqltypes import UTCDateTime

FAR_FUTURE_POSITION = 2**62


def history_columns(key: str) -> list[sa.Column[Any]]:
    """The entity key and the validity columns; (key, position) is the primary key."""
    return [
        sa.Column(key, sa.Uuid, primary_key=True),
        sa.Column("position", sa.BigInteger, primary_key=True),
        sa.Column("effective_at", UTCDateTime, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("next_position", sa.BigInteger, nullable=True),
        sa.Column("next_effective_at", UTCDateTime, nullable=True),
    ]


@dataclass(frozen=True)
class Cut:
    """A point on both clocks: events recorded up to ``position`` and effective up to ``as_of``."""

    position: int
    as_of: datetime | None = None  # None: no effective-time cut (everything known so far)

    def where(self, table: sa.Table) -> sa.ColumnElement[bool]:
        """Rows valid at this cut (see the module docstring)."""
        c = table.c
        if self.as_of is None:
            return sa.and_(
                c.position <= self.position,
                sa.or_(c.next_position.is_(None), c.next_position > self.position),
            )
        return sa.and_(
            c.position <= self.position,
            c.effective_at <= self.as_of,
            sa.or_(
                c.next_position.is_(None),
                c.next_position > self.position,
                c.next_effective_at > self.as_of,
            ),
        )


class RebuildState:
    """What rebuild mode keeps between the batches of one projection's rebuild.

    A rebuild replays the whole log into empty tables, so the latest row of every entity can
    stay in memory from batch to batch instead of being read back, and an entity's previous row
    is not closed row by row as its next one arrives: the rows go in with ``next_*`` empty and
    ``link`` fills them all at the end with one set-based statement (``lead()`` over each
    entity's rows), giving exactly what live processing writes. Memory is bounded: the entities
    touched longest ago are forgotten, and read back (by their last position) if they change again.
    """

    MAX_ENTITIES = 50_000  # per table

    def __init__(self) -> None:
        self.latest: dict[str, dict[Any, dict[str, Any]]] = {}
        self.tables: dict[str, tuple[sa.Table, str]] = {}

    def of(self, table: sa.Table, key: str) -> dict[Any, dict[str, Any]]:
        self.tables[table.name] = (table, key)
        return self.latest.setdefault(table.name, {})

    def forget(self) -> None:
        """Drop everything remembered (after a rolled-back batch): it is read back from the tables."""
        self.latest.clear()

    def trim(self, latest: dict[Any, dict[str, Any]]) -> None:
        excess = len(latest) - self.MAX_ENTITIES
        if excess > 0:
            for entity in list(islice(latest, excess + self.MAX_ENTITIES // 2)):
                del latest[entity]

    def link(self, conn: Connection) -> None:
        """Fill every history row's ``next_position`` / ``next_effective_at`` from the entity's next row."""
        for table, key in self.tables.values():
            t, k = f'"{table.name}"', f'"{key}"'
            conn.exec_driver_sql(
                f"UPDATE {t} SET next_position = n.next_position, next_effective_at = n.next_effective_at "
                f"FROM (SELECT {k} AS entity, position, lead(position) OVER w AS next_position, "
                f"lead(effective_at) OVER w AS next_effective_at FROM {t} "
                f"WINDOW w AS (PARTITION BY {k} ORDER BY position)) AS n "
                f"WHERE {t}.{k} = n.entity AND {t}.position = n.position AND n.next_position IS NOT NULL "
                f"AND {t}.next_position IS NULL"
            )


_rebuild: ContextVar[RebuildState | None] = ContextVar("salesplan_history_rebuild", default=None)


@contextmanager
def rebuilding(state: RebuildState) -> Iterator[None]:
    """Rebuild mode for the HistoryWriters created meanwhile (see ``RebuildState``)."""
    token = _rebuild.set(state)
    try:
        yield
    finally:
        _rebuild.reset(token)


class HistoryWriter:
    """Appends snapshots for one history table within a batch, closing each entity's previous row.

    Keeps the latest row of every entity touched in the batch in memory, so a batch of N
    events costs one prefetch, one executemany of inserts and one of updates. In rebuild mode
    (``rebuilding``) the latest rows outlive the batch and no row is updated (``RebuildState``).
    """

    def __init__(self, conn: Connection, table: sa.Table, key: str) -> None:
        self.conn = conn
        self.table = table
        self.key = key
        self._rebuild = _rebuild.get()
        self.latest: dict[Any, dict[str, Any]] = {} if self._rebuild is None else self._rebuild.of(table, key)
        self._new: list[dict[str, Any]] = []
        self._closed: dict[tuple[Any, int], dict[str, Any]] = {}
        self._new_keys: set[tuple[Any, int]] = set()

    def prefetch(self, ids: Iterable[Any]) -> None:
        missing = {i for i in ids if i not in self.latest}
        c = self.table.c
        for chunk in _chunks(list(missing), 500):
            if self._rebuild is None:
                query = sa.select(self.table).where(c[self.key].in_(chunk), c.next_position.is_(None))
            else:
                # Rows are not closed until the rebuild ends: an entity's latest is its last position.
                last = (sa.select(c[self.key].label("entity"), sa.func.max(c.position).label("position"))
                        .where(c[self.key].in_(chunk)).group_by(c[self.key]).subquery())
                query = sa.select(self.table).join(
                    last, sa.and_(c[self.key] == last.c.entity, c.position == last.c.position))
            for row in self.conn.execute(query).mappings():
                self.latest[row[self.key]] = dict(row)

    def current(self, entity_id: Any) -> dict[str, Any] | None:
        if entity_id not in self.latest:
            self.prefetch([entity_id])
        return self.latest.get(entity_id)

    def append(self, entity_id: Any, state: dict[str, Any], position: int, effective_at: datetime,
               recorded_at: datetime) -> None:
        previous = self.latest.pop(entity_id, None)
        if previous is not None:
            previous["next_position"] = position
            previous["next_effective_at"] = effective_at
            if (entity_id, previous["position"]) not in self._new_keys and self._rebuild is None:
                self._closed[(entity_id, previous["position"])] = previous
        row = {
            **state, self.key: entity_id, "position": position, "effective_at": effective_at,
            "recorded_at": recorded_at, "next_position": None, "next_effective_at": None,
        }
        self.latest[entity_id] = row  # last: the order the rebuild forgets entities in
        self._new.append(row)
        self._new_keys.add((entity_id, position))

    def flush(self) -> None:
        c = self.table.c
        if self._closed:
            self.conn.execute(
                self.table.update()
                .where(c[self.key] == sa.bindparam("b_key"), c.position == sa.bindparam("b_position"))
                .values(next_position=sa.bindparam("b_next_position"),
                        next_effective_at=sa.bindparam("b_next_effective_at")),
                [
                    {"b_key": r[self.key], "b_position": r["position"], "b_next_position": r["next_position"],
                     "b_next_effective_at": r["next_effective_at"]}
                    for r in self._closed.values()
                ],
            )
        if self._new:
            insert_rows(self.conn, self.table, self._new)
        if self._rebuild is not None:
            self._rebuild.trim(self.latest)
        self._new = []
        self._closed = {}
        self._new_keys = set()


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

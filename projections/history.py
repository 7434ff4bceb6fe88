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

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

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


class HistoryWriter:
    """Appends snapshots for one history table within a batch, closing each entity's previous row.

    Keeps the latest row of every entity touched in the batch in memory, so a batch of N
    events costs one prefetch, one executemany of inserts and one of updates.
    """

    def __init__(self, conn: Connection, table: sa.Table, key: str) -> None:
        self.conn = conn
        self.table = table
        self.key = key
        self.latest: dict[Any, dict[str, Any]] = {}
        self._new: list[dict[str, Any]] = []
        self._closed: dict[tuple[Any, int], dict[str, Any]] = {}
        self._new_keys: set[tuple[Any, int]] = set()

    def prefetch(self, ids: Iterable[Any]) -> None:
        missing = {i for i in ids if i not in self.latest}
        c = self.table.c
        for chunk in _chunks(list(missing), 500):
            rows = self.conn.execute(
                sa.select(self.table).where(c[self.key].in_(chunk), c.next_position.is_(None))
            ).mappings()
            for row in rows:
                self.latest[row[self.key]] = dict(row)

    def current(self, entity_id: Any) -> dict[str, Any] | None:
        if entity_id not in self.latest:
            self.prefetch([entity_id])
        return self.latest.get(entity_id)

    def append(self, entity_id: Any, state: dict[str, Any], position: int, effective_at: datetime,
               recorded_at: datetime) -> None:
        previous = self.latest.get(entity_id)
        if previous is not None:
            previous["next_position"] = position
            previous["next_effective_at"] = effective_at
            if (entity_id, previous["position"]) not in self._new_keys:
                self._closed[(entity_id, previous["position"])] = previous
        row = {
            **state, self.key: entity_id, "position": position, "effective_at": effective_at,
            "recorded_at": recorded_at, "next_position": None, "next_effective_at": None,
        }
        self.latest[entity_id] = row
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
            self.conn.execute(self.table.insert(), self._new)
        self._new = []
        self._closed = {}
        self._new_keys = set()


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

"""Log clock: when the store learned each position, so "as known at T" becomes a log position.

Event timestamps come from the writing processes' clocks, which need not agree: a later
position may carry an earlier timestamp. A reader at time T saw a prefix of the log, so the
position known at T is the last one whose whole prefix was recorded by T: each row keeps
``known_at``, the latest timestamp up to and including its position (never decreasing), and
"known at T" is the last position with ``known_at`` ≤ T — one index seek, however long the log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.engine import Envelope, Projection
from projections.sqltypes import UTCDateTime


class LogClock(Projection):
    """Which position the log had reached at any recorded time."""

    name = "log_clock"
    fold_version = 2

    def define_tables(self) -> None:
        self.positions = self.table(
            "log_clock",
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("recorded_at", UTCDateTime, nullable=False),
            sa.Column("known_at", UTCDateTime, nullable=False),
            indexes=[("known_at", "position")],
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        c = self.positions.c
        known = conn.execute(sa.select(c.known_at).order_by(c.position.desc()).limit(1)).scalar()
        rows = []
        for e in batch:
            known = e.recorded_at if known is None or e.recorded_at > known else known
            rows.append({"position": e.position, "recorded_at": e.recorded_at, "known_at": known})
        conn.execute(self.positions.insert(), rows)


LIVE = LogClock()
"""The live table, for queries."""

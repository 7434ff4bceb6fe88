"""Log clock: when the store learned each position, so "as known at T" becomes a log position.

Event timestamps come from the writing processes' clocks; a cut taken by position is exact
and reproducible, so every "known at" question is answered as "known at position P(T)",
where P(T) is the last position recorded at or before T.
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
    fold_version = 1

    def define_tables(self) -> None:
        self.positions = self.table(
            "log_clock",
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("recorded_at", UTCDateTime, nullable=False),
            indexes=[("recorded_at",)],
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        conn.execute(self.positions.insert(), [{"position": e.position, "recorded_at": e.recorded_at} for e in batch])

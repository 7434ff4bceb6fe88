"""Cuts on both clocks: "as known at" a recorded time becomes the log position reached then."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.folds.clock import LogClock


def position_known_at(conn: Connection, known_at: datetime) -> int:
    """The last log position recorded at or before ``known_at`` (0 before the first event)."""
    table = LogClock().positions
    value = conn.execute(sa.select(sa.func.max(table.c.position)).where(table.c.recorded_at <= known_at)).scalar()
    return int(value or 0)

"""Cuts on both clocks: "as known at" a recorded time becomes the log position reached then."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.folds.clock import LIVE

__all__ = ["position_known_at"]


def position_known_at(conn: Connection, known_at: datetime) -> int:
    """The last log position whose whole prefix was recorded at or before ``known_at`` (0 before the first)."""
    c = LIVE.positions.c
    value = conn.execute(sa.select(c.position).where(c.known_at <= known_at)
                         .order_by(c.known_at.desc(), c.position.desc()).limit(1)).scalar()
    return int(value or 0)

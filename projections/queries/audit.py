"""Queries over the audit projection's tables (``projections.folds.audit``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.folds.audit import ENTITIES, LIVE, AuditRow

# --- the query -------------------------------------------------------------------------------

Cursor = tuple[int, int]


@dataclass(frozen=True)
class AuditPage:
    """A page of audit rows; pass ``next_cursor`` as ``after`` for the next (None: the last page)."""

    rows: list[AuditRow]
    next_cursor: str | None


MAX_LIMIT: Final = 1000


def encode_cursor(cursor: Cursor) -> str:
    return f"{cursor[0]}.{cursor[1]}"


def decode_cursor(cursor: Cursor | str) -> Cursor:
    """A cursor from ``encode_cursor`` (or the (position, seq) pair itself); ValueError if malformed."""
    if isinstance(cursor, tuple):
        position, seq = cursor
    else:
        match = re.fullmatch(r"(\d{1,19})\.(\d{1,9})", cursor)
        if match is None:
            raise ValueError(f"malformed audit cursor {cursor!r}")
        position, seq = int(match.group(1)), int(match.group(2))
    if position < 0 or seq < 0:
        raise ValueError(f"malformed audit cursor {cursor!r}")
    return position, seq


def audit_history(
    conn: Connection, *, entity: str | None = None, entity_id: UUID | None = None, actor: str | None = None,
    plan_id: UUID | None = None, recorded_from: datetime | None = None, recorded_to: datetime | None = None,
    effective_from: datetime | None = None, effective_to: datetime | None = None, after: Cursor | str | None = None,
    limit: int = 100,
) -> AuditPage:
    """Changes matching every given filter, in log order (position, seq); time ranges are [from, to).

    Rows are only ever appended at higher positions, so paging with ``after`` is stable: a
    page never changes and no row is skipped or repeated while new changes arrive.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    if entity is not None and entity not in ENTITIES:
        raise ValueError(f"entity must be one of {', '.join(ENTITIES)}")
    t = LIVE.history
    c = t.c
    query = sa.select(t)
    for column, value in ((c.entity, entity), (c.entity_id, entity_id), (c.actor, actor), (c.plan_id, plan_id)):
        if value is not None:
            query = query.where(column == value)
    for column, low, high in ((c.recorded_at, recorded_from, recorded_to), (c.effective_at, effective_from,
                                                                              effective_to)):
        if low is not None:
            query = query.where(column >= low)
        if high is not None:
            query = query.where(column < high)
    if after is not None:
        position, seq = decode_cursor(after)
        # A row-value comparison: both backends turn it into one range on (position, seq).
        query = query.where(sa.tuple_(c.position, c.seq) > sa.tuple_(sa.literal(position), sa.literal(seq)))
    found = conn.execute(query.order_by(c.position, c.seq).limit(limit + 1)).all()
    rows = [
        AuditRow(
            position=r.position, seq=r.seq, recorded_at=r.recorded_at, effective_at=r.effective_at, actor=r.actor,
            entity=r.entity, entity_id=r.entity_id, plan_id=r.plan_id, event_type=r.event_type, summary=r.summary,
            changes=json.loads(r.changes), reason=r.reason,
        )
        for r in found[:limit]
    ]
    more = len(found) > limit
    return AuditPage(rows, encode_cursor((rows[-1].position, rows[-1].seq)) if more else None)

"""Queries over the revisions projection's tables (``projections.folds.revisions``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.folds.revisions import LIVE


@dataclass(frozen=True)
class RevisionReason:
    """One change of one target: who, when (both clocks), from what to what, why."""

    plan_id: UUID
    target_id: UUID
    position: int
    effective_at: datetime
    recorded_at: datetime
    actor: str
    kind: str
    before: Decimal | None
    after: Decimal | None
    before_stretch: Decimal | None
    after_stretch: Decimal | None
    reason: str


def revision_reasons(
    conn: Connection, *, plan_id: UUID, position: int, after_position: int = 0,
    target_ids: Iterable[UUID] | None = None,
) -> list[RevisionReason]:
    """The plan's target changes recorded in (``after_position``, ``position``], in log order."""
    c = LIVE.reasons.c
    query = sa.select(LIVE.reasons).where(c.plan_id == plan_id, c.position > after_position, c.position <= position)
    if target_ids is not None:
        query = query.where(c.target_id.in_(list(target_ids)))
    return [
        RevisionReason(
            plan_id=r.plan_id, target_id=r.target_id, position=int(r.position), effective_at=r.effective_at,
            recorded_at=r.recorded_at, actor=r.actor, kind=r.kind, before=r.before, after=r.after,
            before_stretch=r.before_stretch, after_stretch=r.after_stretch, reason=r.reason,
        )
        for r in conn.execute(query.order_by(c.position, c.target_id))
    ]

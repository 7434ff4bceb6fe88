"""A plan's own facts at a position: what it is, and when each of its versions was published.

Shared by every question about one plan (progress, baseline, replay, attribution, versions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.errors import NotFound
from projections.folds.progress import LIVE
from projections.history import Cut

__all__ = ["PlanInfo", "Publication", "find_plan", "plan_info", "publications"]


@dataclass(frozen=True)
class PlanInfo:
    plan_id: UUID
    name: str
    span: str
    currency: str
    unit_id: UUID
    status: str
    published_version: int


def plan_info(conn: Connection, cut: Cut, plan_ids: Sequence[UUID]) -> dict[UUID, PlanInfo]:
    """The plans at the cut (name, span, currency, owning unit, status)."""
    p = LIVE.plans
    rows = conn.execute(sa.select(p).where(cut.where(p), p.c.plan_id.in_(sorted(set(plan_ids), key=str))))
    return {r.plan_id: PlanInfo(r.plan_id, r.name, r.span, r.currency, r.unit_id, r.status, r.published_version)
            for r in rows}


def find_plan(conn: Connection, plan_id: UUID, position: int) -> PlanInfo:
    """The plan as recorded up to ``position`` (its name, span, currency and unit never change); NotFound otherwise."""
    found = plan_info(conn, Cut(position), [plan_id])
    if plan_id not in found:
        raise NotFound("plan", plan_id, "plan_id")
    return found[plan_id]


@dataclass(frozen=True)
class Publication:
    """When a version was published: the log position and effective time of its ``Plan.Published``."""

    version: int
    position: int
    effective_at: datetime
    recorded_at: datetime

    @property
    def cut(self) -> Cut:
        return Cut(self.position, self.effective_at)


def publications(conn: Connection, plan_id: UUID, position: int) -> list[Publication]:
    """The plan's publications recorded up to ``position``, oldest first."""
    p = LIVE.plans.c
    found: list[Publication] = []
    last = 0
    for row in conn.execute(sa.select(p.published_version, p.position, p.effective_at, p.recorded_at)
                            .where(p.plan_id == plan_id, p.position <= position).order_by(p.position)):
        if row.published_version > last:
            found.append(Publication(int(row.published_version), int(row.position), row.effective_at,
                                     row.recorded_at))
            last = row.published_version
    return found

"""Revision reasons: every change to a plan's targets with who, when, from what, to what and why.

The progress tables keep the values a target had; the reasons live only in the events. This
projection keeps one row per target per change (a target set, a child created by a
decomposition, a revision, a removal, and every target such a change moved with it), so that
"why did East's Q1 target move?" is an indexed read. A removal's event names only the ids it
removed: the value each had is read from this projection's own previous row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.plan import Plan
from projections.engine import Envelope, Projection
from projections.sqltypes import Money, UTCDateTime

SET: Final = "set"
DECOMPOSED: Final = "decomposed"
REVISED: Final = "revised"
REMOVED: Final = "removed"

Values = tuple[Decimal, Decimal | None]  # committed, stretch


@dataclass(frozen=True)
class RevisionEntry:
    """What one event did to one target, and why."""

    target_id: UUID
    kind: str  # set | decomposed | revised | removed, or how a change moved it: rolled_up | absorbed | re_spread
    before: Decimal | None
    after: Decimal | None
    before_stretch: Decimal | None
    after_stretch: Decimal | None
    reason: str


def revision_entries(event: Any, current: Mapping[UUID, Values]) -> list[RevisionEntry]:
    """The pure fold: the entries one plan event yields, given the targets' current values."""
    if isinstance(event, Plan.TargetSet):
        return [RevisionEntry(event.target_id, SET, None, event.committed, None, event.stretch, event.reason)]
    if isinstance(event, Plan.TargetDecomposed):
        return [RevisionEntry(c["target_id"], DECOMPOSED, None, c["committed"], None, c["stretch"], event.reason)
                for c in event.children]
    if isinstance(event, Plan.TargetRevised):
        return [RevisionEntry(event.target_id, REVISED, event.previous_committed, event.committed,
                              event.previous_stretch, event.stretch, event.reason), *_effects(event)]
    if isinstance(event, Plan.TargetRemoved):
        entries = []
        for target_id in event.removed_ids:
            committed, stretch = current[target_id]
            entries.append(RevisionEntry(target_id, REMOVED, committed, None, stretch, None, event.reason))
        return entries + _effects(event)
    raise TypeError(f"unexpected plan event {type(event).__qualname__}")


def _effects(event: Plan.TargetRevised | Plan.TargetRemoved) -> list[RevisionEntry]:
    """The targets a change moved besides the one it names, each with the change's reason; the kind
    says how (rolled_up: an ancestor; absorbed: a sibling; re_spread: beneath a changed target)."""
    return [RevisionEntry(e["target_id"], e["via"], e["previous_committed"], e["committed"], e["previous_stretch"],
                          e["stretch"], event.reason) for e in event.effects]


class RevisionReasonsProjection(Projection):
    """Answers "who changed this target, when, from what to what, and why"."""

    name = "revision_reasons"
    fold_version = 1
    topics = (Plan.TargetSet, Plan.TargetDecomposed, Plan.TargetRevised, Plan.TargetRemoved)

    def define_tables(self) -> None:
        self.reasons = self.table(
            "revision_reasons",
            sa.Column("target_id", sa.Uuid, primary_key=True),
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("plan_id", sa.Uuid, nullable=False),
            sa.Column("effective_at", UTCDateTime, nullable=False),
            sa.Column("recorded_at", UTCDateTime, nullable=False),
            sa.Column("actor", sa.Text, nullable=False),  # actors are not length-limited upstream
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("before", Money, nullable=True),
            sa.Column("after", Money, nullable=True),
            sa.Column("before_stretch", Money, nullable=True),
            sa.Column("after_stretch", Money, nullable=True),
            sa.Column("reason", sa.Text, nullable=False),
            indexes=[("plan_id", "position")],
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        removed = {t for e in batch if isinstance(e.event, Plan.TargetRemoved) for t in e.event.removed_ids}
        current = self._latest(conn, removed)
        rows: list[dict[str, Any]] = []
        for envelope in batch:
            e = envelope.event
            for entry in revision_entries(e, current):
                if entry.after is None:
                    current.pop(entry.target_id, None)
                else:
                    current[entry.target_id] = (entry.after, entry.after_stretch)
                rows.append({
                    "target_id": entry.target_id, "position": envelope.position, "plan_id": e.originator_id,
                    "effective_at": e.effective_at, "recorded_at": envelope.recorded_at, "actor": e.actor,
                    "kind": entry.kind, "before": entry.before, "after": entry.after,
                    "before_stretch": entry.before_stretch, "after_stretch": entry.after_stretch,
                    "reason": entry.reason,
                })
        if rows:
            conn.execute(self.reasons.insert(), rows)

    def _latest(self, conn: Connection, target_ids: Iterable[UUID]) -> dict[UUID, Values]:
        """The values of these targets after their last recorded change."""
        c = self.reasons.c
        wanted = list(target_ids)
        latest: dict[UUID, Values] = {}
        for i in range(0, len(wanted), 500):
            last = (sa.select(c.target_id, sa.func.max(c.position).label("position"))
                    .where(c.target_id.in_(wanted[i:i + 500])).group_by(c.target_id).subquery())
            rows = conn.execute(sa.select(c.target_id, c.after, c.after_stretch).join(
                last, sa.and_(c.target_id == last.c.target_id, c.position == last.c.position)))
            latest.update({row.target_id: (row.after, row.after_stretch) for row in rows if row.after is not None})
        return latest


LIVE = RevisionReasonsProjection()
"""The live table, for queries."""


"""The ledger of facts every measurement reads: units, members, plans, targets, deals and activities.

The projection keeps the history of each of them (one row per change, see
``projections.history``), so that any cut — events recorded up to a log position and
effective up to a time — is an indexed filter. It only folds; the questions asked of these
tables (progress, versions against actuals, replays, attribution, reports, alerts) are
answered by ``projections.measure`` and ``projections.queries``.

What the measurement needs is kept explicitly: the member a new deal counts for
(``opened_by``: its owner when it opened), amounts also as integer cents so that sums run
exactly in the database on every backend, and when each membership row starts placing the
member (``valid_from``; the first row also places facts back-dated to before the member
was added).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain import values as v
from domain.deal import Activity, Deal
from domain.organisation import Member, Unit
from domain.plan import Plan
from projections.engine import Envelope, Projection
from projections.folds.organisation import evolve_member, evolve_unit
from projections.history import HistoryWriter, history_columns
from projections.sqltypes import Money, UTCDateTime

# --- pure folds: (state before, event) -> state after --------------------------------------

State = dict[str, Any]


def evolve_plan(state: State | None, event: Any) -> State:
    if isinstance(event, Plan.Drafted):
        return {"name": event.name, "span": event.span, "currency": event.currency, "unit_id": event.unit_id,
                "status": "draft", "published_version": 0}
    assert state is not None
    if isinstance(event, Plan.Published):
        return {**state, "status": "published", "published_version": event.version}
    if isinstance(event, Plan.Closed):
        return {**state, "status": "closed"}
    return state


def new_target(plan_id: UUID, metric: str, period: str, scope: dict[str, Any], committed: Decimal,
               stretch: Decimal | None, parent_id: UUID | None, start: date | None = None,
               end: date | None = None) -> State:
    """A target row; a decomposition's child may cover only part of its period (a week clipped to its month)."""
    p = v.Period.parse(period)
    return {
        "plan_id": plan_id, "metric": metric, "period": period, "period_start": start or p.start,
        "period_end": end or p.end,
        "unit_id": scope.get("unit_id"), "member_id": scope.get("member_id"),
        "product_line": scope.get("product_line"), "region": scope.get("region"), "segment": scope.get("segment"),
        "committed": committed, "stretch": stretch, "parent_id": parent_id, "removed": False,
    }


def evolve_target(state: State, event: Any, target_id: UUID) -> State:
    """One target after a revision or removal: removed, or the values the event gives it (its own
    or, when another target's change moved it, an effect's)."""
    if isinstance(event, Plan.TargetRemoved) and target_id in event.removed_ids:
        return {**state, "removed": True}
    if isinstance(event, (Plan.TargetRevised, Plan.TargetRemoved)):
        committed, stretch = event.moved()[target_id]
        return {**state, "committed": committed, "stretch": stretch}
    raise TypeError(f"unexpected target event {type(event).__qualname__}")


def evolve_deal(state: State | None, event: Any) -> State:
    if isinstance(event, Deal.Opened):
        return {
            "name": event.name, "owner_id": event.owner_id, "opened_by": event.owner_id,
            "account_id": event.account_id, "product_id": event.product_id, "product_line": event.product_line,
            "region": event.region, "segment": event.segment, "currency": event.currency,
            **_amount(event.amount), "stage": event.stage, "expected_close": event.expected_close,
            "opened_at": event.effective_at, "closed_at": None, "stage_entered_at": event.effective_at,
            "last_stage_change_at": None,
        }
    assert state is not None
    if isinstance(event, Deal.AmountChanged):
        return {**state, **_amount(event.amount)}
    if isinstance(event, Deal.ExpectedCloseChanged):
        return {**state, "expected_close": event.expected_close}
    if isinstance(event, Deal.Reassigned):
        return {**state, "owner_id": event.owner_id}
    moved = {**state, "stage_entered_at": event.effective_at, "last_stage_change_at": event.effective_at}
    if isinstance(event, Deal.StageChanged):
        return {**moved, "stage": event.stage}
    if isinstance(event, Deal.Won):
        return {**moved, "stage": "won", **_amount(event.amount), "owner_id": event.owner_id,
                "closed_at": event.effective_at}
    if isinstance(event, Deal.Lost):
        return {**moved, "stage": "lost", "closed_at": event.effective_at}
    if isinstance(event, Deal.Reopened):
        return {**moved, "stage": event.stage, "closed_at": None}
    raise TypeError(f"unexpected deal event {type(event).__qualname__}")


def _amount(amount: Decimal) -> State:
    # Sums run in the database: integer cents add up exactly on every backend (SQLite has no decimal type).
    return {"amount": amount, "amount_cents": int(amount * 100)}


def evolve_activity(event: Activity.Logged) -> State:
    return {"member_id": event.member_id, "kind": event.kind, "deal_id": event.deal_id}


# --- the view ------------------------------------------------------------------------------

UNIT_EVENTS = (Unit.Added, Unit.Renamed, Unit.Moved, Unit.Deactivated)
MEMBER_EVENTS = (Member.Added, Member.Renamed, Member.Moved, Member.Deactivated)
PLAN_EVENTS = (Plan.Drafted, Plan.Published, Plan.Closed)
TARGET_EVENTS = (Plan.TargetSet, Plan.TargetDecomposed, Plan.TargetRevised, Plan.TargetRemoved)
CREATION_EVENTS = (Unit.Added, Member.Added, Plan.Drafted, Deal.Opened)
DEAL_EVENTS = (Deal.Opened, Deal.StageChanged, Deal.AmountChanged, Deal.ExpectedCloseChanged, Deal.Reassigned,
               Deal.Won, Deal.Lost, Deal.Reopened)


class ProgressProjection(Projection):
    """Answers "where do we stand": every target's actual, pace and forecast, at any cut."""

    name = "progress"
    fold_version = 3
    topics = (*UNIT_EVENTS, *MEMBER_EVENTS, *PLAN_EVENTS, *TARGET_EVENTS, *DEAL_EVENTS, Activity.Logged)

    def define_tables(self) -> None:
        self.units = self.table(
            "progress_units", *history_columns("unit_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("parent_id", sa.Uuid, nullable=True),
            sa.Column("active", sa.Boolean, nullable=False),
        )
        self.members = self.table(
            "progress_members", *history_columns("member_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("role", sa.String(20), nullable=False),
            sa.Column("unit_id", sa.Uuid, nullable=False),
            sa.Column("active", sa.Boolean, nullable=False),
            # From when this row places the member in ``unit_id``: NULL on the first row, which also
            # places facts back-dated to before the member was added.
            sa.Column("valid_from", UTCDateTime, nullable=True),
            indexes=[("unit_id",)],  # who was ever in a unit: the members a unit's facts can come from
        )
        self.plans = self.table(
            "progress_plans", *history_columns("plan_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("span", sa.String(10), nullable=False),
            sa.Column("currency", sa.String(3), nullable=False),
            sa.Column("unit_id", sa.Uuid, nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("published_version", sa.Integer, nullable=False),
        )
        self.targets = self.table(
            "progress_targets", *history_columns("target_id"),
            sa.Column("plan_id", sa.Uuid, nullable=False),
            sa.Column("metric", sa.String(30), nullable=False),
            sa.Column("period", sa.String(10), nullable=False),
            sa.Column("period_start", sa.Date, nullable=False),
            sa.Column("period_end", sa.Date, nullable=False),
            sa.Column("unit_id", sa.Uuid, nullable=True),
            sa.Column("member_id", sa.Uuid, nullable=True),
            sa.Column("product_line", sa.String(100), nullable=True),
            sa.Column("region", sa.String(100), nullable=True),
            sa.Column("segment", sa.String(100), nullable=True),
            sa.Column("committed", Money, nullable=False),
            sa.Column("stretch", Money, nullable=True),
            sa.Column("parent_id", sa.Uuid, nullable=True),
            sa.Column("removed", sa.Boolean, nullable=False),
            indexes=[("plan_id", "position")],
        )
        self.deals = self.table(
            "progress_deals", *history_columns("deal_id"),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("owner_id", sa.Uuid, nullable=False),
            sa.Column("opened_by", sa.Uuid, nullable=False),  # the owner when it opened: new deals count for them
            sa.Column("account_id", sa.Uuid, nullable=True),
            sa.Column("product_id", sa.Uuid, nullable=False),
            sa.Column("product_line", sa.String(200), nullable=False),
            sa.Column("region", sa.String(200), nullable=False),
            sa.Column("segment", sa.String(200), nullable=False),
            sa.Column("currency", sa.String(3), nullable=False),
            sa.Column("amount", Money, nullable=False),
            sa.Column("amount_cents", sa.BigInteger, nullable=False),
            sa.Column("stage", sa.String(20), nullable=False),
            sa.Column("expected_close", sa.Date, nullable=False),
            sa.Column("opened_at", UTCDateTime, nullable=False),
            sa.Column("closed_at", UTCDateTime, nullable=True),
            sa.Column("stage_entered_at", UTCDateTime, nullable=False),
            sa.Column("last_stage_change_at", UTCDateTime, nullable=True),
            # By time for a whole organisation, by member and time for a part of it (see projections.measure.facts).
            indexes=[("closed_at",), ("opened_at",), ("expected_close",), ("owner_id", "position"),
                     ("owner_id", "closed_at"), ("opened_by", "opened_at"), ("owner_id", "expected_close")],
        )
        self.activities = self.table(
            "progress_activities", *history_columns("activity_id"),
            sa.Column("member_id", sa.Uuid, nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("deal_id", sa.Uuid, nullable=True),
            indexes=[("effective_at",), ("member_id", "effective_at")],
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        units = HistoryWriter(conn, self.units, "unit_id")
        members = HistoryWriter(conn, self.members, "member_id")
        plans = HistoryWriter(conn, self.plans, "plan_id")
        targets = HistoryWriter(conn, self.targets, "target_id")
        deals = HistoryWriter(conn, self.deals, "deal_id")
        activities = HistoryWriter(conn, self.activities, "activity_id")
        self._prefetch(batch, units, members, plans, targets, deals)
        for envelope in batch:
            e = envelope.event
            stamp = (envelope.position, e.effective_at, envelope.recorded_at)
            if isinstance(e, UNIT_EVENTS):
                units.append(e.originator_id, evolve_unit(_before(units, e), e), *stamp)
            elif isinstance(e, MEMBER_EVENTS):
                before = _before(members, e)
                members.append(e.originator_id, {**evolve_member(before, e),
                                                 "valid_from": None if before is None else e.effective_at}, *stamp)
            elif isinstance(e, PLAN_EVENTS):
                plans.append(e.originator_id, evolve_plan(_before(plans, e), e), *stamp)
            elif isinstance(e, Plan.TargetSet):
                targets.append(e.target_id, new_target(e.originator_id, e.metric, e.period, e.scope, e.committed,
                                                       e.stretch, e.parent_id), *stamp)
            elif isinstance(e, Plan.TargetDecomposed):
                parent = targets.current(e.parent_id)
                assert parent is not None, f"decomposed target {e.parent_id} was never set"
                for child in e.children:
                    targets.append(child["target_id"], new_target(
                        e.originator_id, parent["metric"], child["period"], child["scope"], child["committed"],
                        child["stretch"], e.parent_id, child.get("start"), child.get("end")), *stamp)
            elif isinstance(e, (Plan.TargetRevised, Plan.TargetRemoved)):
                # One row per affected target, all at the event's position: the tree adds up at every cut.
                for target_id in _touched(e):
                    targets.append(target_id, evolve_target(_known(targets, target_id), e, target_id), *stamp)
            elif isinstance(e, DEAL_EVENTS):
                deals.append(e.originator_id, evolve_deal(_before(deals, e), e), *stamp)
            elif isinstance(e, Activity.Logged):
                activities.append(e.originator_id, evolve_activity(e), *stamp)
        for writer in (units, members, plans, targets, deals, activities):
            writer.flush()

    @staticmethod
    def _prefetch(batch: Sequence[Envelope], units: HistoryWriter, members: HistoryWriter, plans: HistoryWriter,
                  targets: HistoryWriter, deals: HistoryWriter) -> None:
        ids: dict[str, set[Any]] = defaultdict(set)
        for envelope in batch:
            e = envelope.event
            if isinstance(e, UNIT_EVENTS) and not isinstance(e, Unit.Added):
                ids["units"].add(e.originator_id)
            elif isinstance(e, MEMBER_EVENTS) and not isinstance(e, Member.Added):
                ids["members"].add(e.originator_id)
            elif isinstance(e, PLAN_EVENTS) and not isinstance(e, Plan.Drafted):
                ids["plans"].add(e.originator_id)
            elif isinstance(e, Plan.TargetDecomposed):
                ids["targets"].add(e.parent_id)
            elif isinstance(e, (Plan.TargetRevised, Plan.TargetRemoved)):
                ids["targets"].update(_touched(e))
            elif isinstance(e, DEAL_EVENTS) and not isinstance(e, Deal.Opened):
                ids["deals"].add(e.originator_id)
        units.prefetch(ids["units"])
        members.prefetch(ids["members"])
        plans.prefetch(ids["plans"])
        targets.prefetch(ids["targets"])
        deals.prefetch(ids["deals"])


def _before(writer: HistoryWriter, event: Any) -> State | None:
    """The entity's state before ``event``: nothing to look up for the event that creates it."""
    if isinstance(event, CREATION_EVENTS):
        return None
    return writer.current(event.originator_id)


def _touched(event: Plan.TargetRevised | Plan.TargetRemoved) -> list[UUID]:
    """The targets a revision or removal changes: the removed ones, then every one it moved."""
    removed = event.removed_ids if isinstance(event, Plan.TargetRemoved) else []
    return [*removed, *event.moved()]


def _known(writer: HistoryWriter, entity_id: Any) -> State:
    state = writer.current(entity_id)
    assert state is not None, f"{writer.table.name}: {entity_id} was never created"
    return state


LIVE = ProgressProjection()
"""The live tables, for queries."""



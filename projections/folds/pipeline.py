"""Pipeline and tasks: how long every deal sat in each stage, and who owes which task.

The projection keeps, in tables it alone owns, one row per stay of a deal in a stage and the
history of every task (one row per change, see ``projections.history``). Deals themselves,
the units and the members are in the ledger (``projections.folds.progress``): one history of
each, read by every question.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.deal import Deal
from domain.task import Task
from projections.engine import Envelope, Projection
from projections.history import HistoryWriter, history_columns
from projections.sqltypes import UTCDateTime

# --- pure folds: (state before, event) -> state after --------------------------------------

State = dict[str, Any]


def stage_entered(event: Any) -> tuple[str, str] | None:
    """The stage a deal event puts the deal in and why; None when the event leaves the stage as it is."""
    if isinstance(event, Deal.Opened):
        return event.stage, ""
    if isinstance(event, (Deal.StageChanged, Deal.Reopened)):
        return event.stage, event.reason
    if isinstance(event, Deal.Won):
        return "won", ""
    if isinstance(event, Deal.Lost):
        return "lost", event.reason
    return None


def evolve_stay(current: State | None, event: Any, position: int) -> tuple[State | None, State | None]:
    """(the stay the event ends, the stay it begins) for the deal's open stay ``current``.

    (None, None) when the event does not change the stage. Every deal is in exactly one
    open stay from the moment it opens, so any other combination is a broken log.
    """
    entered = stage_entered(event)
    if entered is None:
        return None, None
    if (current is None) != isinstance(event, Deal.Opened):
        raise ValueError(f"deal {event.originator_id}: {type(event).__qualname__} with open stay {current}")
    closed = None if current is None else {**current, "left_at": event.effective_at, "left_position": position}
    opened = {
        "deal_id": event.originator_id, "stage": entered[0], "reason": entered[1],
        "entered_at": event.effective_at, "entered_position": position, "left_at": None, "left_position": None,
    }
    return closed, opened


def evolve_task(state: State | None, event: Any) -> State:
    if isinstance(event, Task.Created):
        return {
            "title": event.title, "assignee_id": event.assignee_id, "due": event.due, "plan_id": event.plan_id,
            "target_id": event.target_id, "status": "open", "progress": 0, "created_at": event.effective_at,
            "completed_at": None,
        }
    assert state is not None
    if isinstance(event, Task.Reassigned):
        return {**state, "assignee_id": event.assignee_id}
    if isinstance(event, Task.Rescheduled):
        return {**state, "due": event.due}
    if isinstance(event, Task.ProgressReported):
        return {**state, "progress": event.progress}
    if isinstance(event, Task.Completed):
        return {**state, "status": "done", "progress": 100, "completed_at": event.effective_at}
    if isinstance(event, Task.Cancelled):
        return {**state, "status": "cancelled"}
    raise TypeError(f"unexpected task event {type(event).__qualname__}")


# --- the view ------------------------------------------------------------------------------

DEAL_EVENTS = (Deal.Opened, Deal.StageChanged, Deal.AmountChanged, Deal.ExpectedCloseChanged, Deal.Reassigned,
               Deal.Won, Deal.Lost, Deal.Reopened)
TASK_EVENTS = (Task.Created, Task.Reassigned, Task.Rescheduled, Task.ProgressReported, Task.Completed,
               Task.Cancelled)
CREATED = (Deal.Opened, Task.Created)


class PipelineProjection(Projection):
    """Answers "what is in the pipeline, how long has each deal sat in each stage, who owes which task"."""

    name = "pipeline"
    fold_version = 2
    topics = (*DEAL_EVENTS, *TASK_EVENTS)

    def define_tables(self) -> None:
        self.stays = self.table(
            "pipeline_stage_intervals",
            sa.Column("deal_id", sa.Uuid, primary_key=True),
            sa.Column("entered_position", sa.BigInteger, primary_key=True),
            sa.Column("stage", sa.String(20), nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("entered_at", UTCDateTime, nullable=False),
            sa.Column("left_at", UTCDateTime, nullable=True),
            sa.Column("left_position", sa.BigInteger, nullable=True),
        )
        self.tasks = self.table(
            "pipeline_tasks", *history_columns("task_id"),
            sa.Column("title", sa.String(200), nullable=False),
            sa.Column("assignee_id", sa.Uuid, nullable=False),
            sa.Column("due", sa.Date, nullable=False),
            sa.Column("plan_id", sa.Uuid, nullable=True),
            sa.Column("target_id", sa.Uuid, nullable=True),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("progress", sa.Integer, nullable=False),
            sa.Column("created_at", UTCDateTime, nullable=False),
            sa.Column("completed_at", UTCDateTime, nullable=True),
            indexes=[("assignee_id", "position"), ("due", "task_id")],
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        tasks_ = HistoryWriter(conn, self.tasks, "task_id")
        stays = _StayWriter(conn, self.stays)
        # Entities created in this batch have no earlier row: fetch only the others, in bulk.
        stays.prefetch({e.event.originator_id for e in batch if _changes(e.event, DEAL_EVENTS)})
        tasks_.prefetch(e.event.originator_id for e in batch if _changes(e.event, TASK_EVENTS))
        for envelope in batch:
            e = envelope.event
            stamp = (envelope.position, e.effective_at, envelope.recorded_at)
            if isinstance(e, DEAL_EVENTS):
                open_stay = None if isinstance(e, Deal.Opened) else stays.open.get(e.originator_id)
                stays.apply(*evolve_stay(open_stay, e, envelope.position))
            elif isinstance(e, TASK_EVENTS):
                tasks_.append(e.originator_id, evolve_task(_before(tasks_, e), e), *stamp)
        tasks_.flush()
        stays.flush()


def _changes(event: Any, kinds: tuple[type[Any], ...]) -> bool:
    return isinstance(event, kinds) and not isinstance(event, CREATED)


def _before(writer: HistoryWriter, event: Any) -> State | None:
    if isinstance(event, CREATED):
        return None
    state = writer.latest.get(event.originator_id)
    assert state is not None, f"{writer.table.name}: {event.originator_id} was never created"
    return state


class _StayWriter:
    """Closes each deal's open stay and opens the next; a batch costs one prefetch and two executemanys."""

    def __init__(self, conn: Connection, table: sa.Table) -> None:
        self.conn = conn
        self.table = table
        self.open: dict[UUID, State] = {}
        self._new: dict[tuple[UUID, int], State] = {}
        self._closed: dict[tuple[UUID, int], State] = {}

    def prefetch(self, deal_ids: Iterable[UUID]) -> None:
        c = self.table.c
        missing = sorted({d for d in deal_ids if d not in self.open})
        for i in range(0, len(missing), 500):
            rows = self.conn.execute(
                sa.select(self.table).where(c.deal_id.in_(missing[i : i + 500]), c.left_position.is_(None))
            ).mappings()
            for row in rows:
                self.open[row["deal_id"]] = dict(row)

    def apply(self, closed: State | None, opened: State | None) -> None:
        if closed is not None:
            key = (closed["deal_id"], closed["entered_position"])
            # A stay opened earlier in this batch is not in the table yet: close it before inserting.
            if key in self._new:
                self._new[key] = closed
            else:
                self._closed[key] = closed
        if opened is not None:
            self._new[(opened["deal_id"], opened["entered_position"])] = opened
            self.open[opened["deal_id"]] = opened

    def flush(self) -> None:
        c = self.table.c
        if self._closed:
            self.conn.execute(
                self.table.update()
                .where(c.deal_id == sa.bindparam("b_deal_id"), c.entered_position == sa.bindparam("b_entered"))
                .values(left_at=sa.bindparam("b_left_at"), left_position=sa.bindparam("b_left_position")),
                [{"b_deal_id": r["deal_id"], "b_entered": r["entered_position"], "b_left_at": r["left_at"],
                  "b_left_position": r["left_position"]} for r in self._closed.values()],
            )
        if self._new:
            self.conn.execute(self.table.insert(), list(self._new.values()))
        self._new = {}
        self._closed = {}


LIVE = PipelineProjection()
"""The live tables, for queries."""



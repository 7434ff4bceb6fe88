"""Task: a concrete step of the action plan toward a target, with an owner and a deadline."""

from __future__ import annotations

from datetime import date, datetime
from typing import Final
from uuid import UUID

from domain import values as v
from domain.aggregate import SalesAggregate
from domain.errors import RuleViolation, ValidationError

TASK_STATUSES: Final = ("open", "done", "cancelled")


class Task(SalesAggregate):
    class Created(SalesAggregate.Created):
        title: str
        assignee_id: UUID
        due: date
        plan_id: UUID | None
        target_id: UUID | None

    class Reassigned(SalesAggregate.Event):
        assignee_id: UUID
        previous_assignee_id: UUID
        reason: str

        def apply(self, aggregate: Task) -> None:
            aggregate.assignee_id = self.assignee_id

    class Rescheduled(SalesAggregate.Event):
        due: date
        previous_due: date
        reason: str

        def apply(self, aggregate: Task) -> None:
            aggregate.due = self.due

    class ProgressReported(SalesAggregate.Event):
        progress: int
        previous_progress: int
        note: str

        def apply(self, aggregate: Task) -> None:
            aggregate.progress = self.progress

    class Completed(SalesAggregate.Event):
        outcome: str

        def apply(self, aggregate: Task) -> None:
            aggregate.status = "done"
            aggregate.progress = 100
            aggregate.outcome = self.outcome

    class Cancelled(SalesAggregate.Event):
        reason: str

        def apply(self, aggregate: Task) -> None:
            aggregate.status = "cancelled"

    def __init__(self, title: str, assignee_id: UUID, due: date, plan_id: UUID | None, target_id: UUID | None) -> None:
        self.title = title
        self.assignee_id = assignee_id
        self.due = due
        self.plan_id = plan_id
        self.target_id = target_id
        self.status = "open"
        self.progress = 0
        self.outcome = ""

    @classmethod
    def create(
        cls, *, id: UUID, title: str, assignee_id: UUID, due: date, plan_id: UUID | None = None,
        target_id: UUID | None = None, actor: str, effective_at: datetime,
    ) -> Task:
        return cls._create(
            cls.Created, id=id, title=v.text(title, "title"), assignee_id=assignee_id, due=due, plan_id=plan_id,
            target_id=target_id, actor=actor, effective_at=effective_at,
        )

    def _check_open(self, effective_at: datetime) -> None:
        if self.status != "open":
            raise RuleViolation("task.closed", f"task {self.id} is {self.status}: it cannot change", None)
        self.check_effective(effective_at)

    def reassign(self, assignee_id: UUID, *, reason: str | None, actor: str, effective_at: datetime) -> None:
        self._check_open(effective_at)
        if assignee_id == self.assignee_id:
            raise RuleViolation("task.same_assignee", "the task is already assigned to that member", "assignee_id")
        self.trigger_event(
            self.Reassigned, assignee_id=assignee_id, previous_assignee_id=self.assignee_id,
            reason=v.reason(reason), actor=actor, effective_at=effective_at,
        )

    def reschedule(self, due: date, *, reason: str | None, actor: str, effective_at: datetime) -> None:
        self._check_open(effective_at)
        if due == self.due:
            raise RuleViolation("task.same_due", "the task is already due then", "due")
        self.trigger_event(
            self.Rescheduled, due=due, previous_due=self.due, reason=v.reason(reason),
            actor=actor, effective_at=effective_at,
        )

    def report_progress(self, progress: int, *, note: str = "", actor: str, effective_at: datetime) -> None:
        self._check_open(effective_at)
        if isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100:
            raise ValidationError("task.progress_range", "progress is a percentage from 0 to 100", "progress")
        self.trigger_event(
            self.ProgressReported, progress=progress, previous_progress=self.progress,
            note=v.optional_reason(note, "note"), actor=actor, effective_at=effective_at,
        )

    def complete(self, *, outcome: str = "", actor: str, effective_at: datetime) -> None:
        self._check_open(effective_at)
        self.trigger_event(
            self.Completed, outcome=v.optional_reason(outcome, "outcome"), actor=actor, effective_at=effective_at
        )

    def cancel(self, *, reason: str | None, actor: str, effective_at: datetime) -> None:
        self._check_open(effective_at)
        self.trigger_event(self.Cancelled, reason=v.reason(reason), actor=actor, effective_at=effective_at)

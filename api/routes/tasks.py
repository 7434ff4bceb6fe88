"""Tasks of the action plan: a concrete step with an assignee, a due date, progress and an outcome."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from api import schemas as s
from api.deps import ChangeDep, CreateDep, GuardDep, WaitForPosition, etag
from api.errors import PROBLEM_RESPONSES
from api.openapi import VERSIONED

router = APIRouter(tags=["tasks"], responses=PROBLEM_RESPONSES)


@router.post("/tasks", status_code=201)
def create_task(body: s.CreateTask, cmd: CreateDep) -> s.CommandOut:
    """Create a task for a member (a rep: for themselves), optionally toward one target of a plan."""
    cmd.guard.act_for(body.assignee_id, "assignee_id")
    return cmd.run(cmd.planning.create_task, body, "/tasks/{id}", title=body.title, assignee_id=body.assignee_id,
                   due=body.due, plan_id=body.plan_id, target_id=body.target_id, id=body.id)


@router.get("/tasks/{task_id}", responses=VERSIONED)
def get_task(task_id: UUID, guard: GuardDep, response: Response, wait_for_position: WaitForPosition = None) -> s.TaskOut:
    task = guard.task(task_id, write=False)
    etag(response, task.version)
    return s.TaskOut(id=task.id, version=task.version, last_effective_at=task.last_effective_at, title=task.title,
                     assignee_id=task.assignee_id, due=task.due, plan_id=task.plan_id, target_id=task.target_id,
                     status=task.status, progress=task.progress, outcome=task.outcome)


@router.post("/tasks/{task_id}/reassign")
def reassign_task(task_id: UUID, body: s.ReassignTask, cmd: ChangeDep) -> s.CommandOut:
    """Hand a task to someone else (a manager's decision), with the reason."""
    cmd.guard.task(task_id, write=True)
    cmd.guard.not_rep()
    cmd.guard.act_for(body.assignee_id, "assignee_id")
    return cmd.run(cmd.planning.reassign_task, body, "/tasks/{id}", task_id, assignee_id=body.assignee_id,
                   reason=body.reason)


@router.post("/tasks/{task_id}/reschedule")
def reschedule_task(task_id: UUID, body: s.RescheduleTask, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.task(task_id, write=True)
    return cmd.run(cmd.planning.reschedule_task, body, "/tasks/{id}", task_id, due=body.due, reason=body.reason)


@router.post("/tasks/{task_id}/progress")
def report_task_progress(task_id: UUID, body: s.ReportTaskProgress, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.task(task_id, write=True)
    return cmd.run(cmd.planning.report_task_progress, body, "/tasks/{id}", task_id, progress=body.progress,
                   note=body.note)


@router.post("/tasks/{task_id}/complete")
def complete_task(task_id: UUID, body: s.CompleteTask, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.task(task_id, write=True)
    return cmd.run(cmd.planning.complete_task, body, "/tasks/{id}", task_id, outcome=body.outcome)


@router.post("/tasks/{task_id}/cancel")
def cancel_task(task_id: UUID, body: s.ReasonBody, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.task(task_id, write=True)
    return cmd.run(cmd.planning.cancel_task, body, "/tasks/{id}", task_id, reason=body.reason)

"""The pipeline and the action plan as projected: deals by stage, stage history, tasks and their load."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response

from api import pagination
from api import schemas as s
from api.deps import CutDep, GuardDep, ServicesDep, reading, stamp
from api.errors import PROBLEM_RESPONSES
from api.openapi import POSITIONED
from api.pagination import CursorToken, Limit, parse_date, parse_uuid
from domain.errors import NotFound
from projections.queries.pipeline import deal_detail, pipeline_deals, stage_summary, task_summary, tasks

router = APIRouter(tags=["pipeline"], responses={**PROBLEM_RESPONSES, **POSITIONED})

PIPELINE: Final = ("progress", "pipeline", "catalogue")  # deals in the ledger, stays and tasks in the pipeline

DayQuery = Annotated[s.Day | None, Query()]


@router.get("/pipeline", dependencies=[Depends(pagination.no_after)])
def list_pipeline_deals(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep, owner_id: UUID | None = None,
    unit_id: UUID | None = None, stage: s.Stage | None = None, status: Literal["open", "won", "lost"] | None = None,
    expected_close_from: DayQuery = None, expected_close_to: DayQuery = None,
    limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.PipelineOut:
    """Deals at a cut, by expected close date, each with its stage history (a rep: their own)."""
    owner_id = guard.own_member(owner_id, "owner_id")
    filters = {"owner_id": owner_id, "unit_id": unit_id, "stage": stage, "status": status,
               "expected_close_from": expected_close_from, "expected_close_to": expected_close_to}
    found, cut = pagination.read_page(
        services, PIPELINE, cut_query, listing="pipeline", filters=filters, token=cursor, parsers=(parse_uuid,),
        limit=limit, key=lambda deal: (deal.deal_id,),
        fetch=lambda conn, cut, after: pipeline_deals(
            conn, cut=cut, at=cut_query.at, owner_id=owner_id, unit_id=unit_id, stage=stage, status=status,
            expected_close_from=expected_close_from, expected_close_to=expected_close_to, limit=limit + 1,
            after=None if after is None else after[0]),
    )
    stamp(response, cut.position)
    return s.PipelineOut(position=cut.position, at=cut_query.at, next_cursor=found.next_cursor,
                         deals=[s.PipelineDealOut.model_validate(d, from_attributes=True) for d in found.rows])


@router.get("/pipeline/summary")
def get_pipeline_summary(services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
                         unit_id: UUID | None = None) -> s.StageSummaryOut:
    """Per currency and stage: count, amount, weighted amount and average days in the stage."""
    unit_id = guard.own_unit(unit_id)
    with reading(services, PIPELINE, cut_query) as (conn, cut):
        rows = stage_summary(conn, cut=cut, at=cut_query.at, unit_id=unit_id,
                             probabilities=services.settings.stage_probabilities)
    stamp(response, cut.position)
    return s.StageSummaryOut(position=cut.position, at=cut_query.at,
                             rows=[s.StageSummaryRowOut.model_validate(r, from_attributes=True) for r in rows])


@router.get("/pipeline/deals/{deal_id}")
def get_pipeline_deal(deal_id: UUID, services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep
                      ) -> s.PipelineDealOut:
    """One deal as it stood at a cut, with every stay in a stage and the reasons it moved."""
    guard.deal(deal_id, write=False)
    with reading(services, PIPELINE, cut_query) as (conn, cut):
        deal = deal_detail(conn, deal_id, cut=cut, at=cut_query.at)
    if deal is None:
        raise NotFound("deal", deal_id)
    stamp(response, cut.position)
    return s.PipelineDealOut.model_validate(deal, from_attributes=True)


@router.get("/tasks")
def list_tasks(
    services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep, assignee_id: UUID | None = None,
    unit_id: UUID | None = None, status: Literal["open", "done", "cancelled"] | None = None,
    overdue_only: bool = False, limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.TasksOut:
    """Tasks at a cut by due date (then id), with what is overdue (a rep: their own)."""
    assignee_id = guard.own_member(assignee_id, "assignee_id")
    filters = {"assignee_id": assignee_id, "unit_id": unit_id, "status": status, "overdue_only": overdue_only}

    def fetch(conn: Any, cut: Any, after: tuple[Any, ...] | None) -> list[Any]:
        found = tasks(conn, cut=cut, at=cut_query.at, assignee_id=assignee_id, unit_id=unit_id, status=status,
                      overdue_only=overdue_only)
        if after is not None:  # the query answers in (due, task_id) order
            found = [t for t in found if (t.due, t.task_id) > after]
        return found[:limit + 1]

    page, cut = pagination.read_page(services, PIPELINE, cut_query, listing="tasks", filters=filters, token=cursor,
                                     parsers=(parse_date, parse_uuid), limit=limit, fetch=fetch,
                                     key=lambda task: (task.due, task.task_id))
    stamp(response, cut.position)
    return s.TasksOut(position=cut.position, at=cut_query.at, next_cursor=page.next_cursor,
                      tasks=[s.TaskViewOut.model_validate(t, from_attributes=True) for t in page.rows])


@router.get("/tasks/summary")
def get_task_summary(services: ServicesDep, guard: GuardDep, response: Response, cut_query: CutDep,
                     unit_id: UUID | None = None) -> s.TaskSummaryOut:
    """Per member: open, overdue, done and cancelled tasks (a rep: their unit)."""
    unit_id = guard.own_unit(unit_id)
    with reading(services, PIPELINE, cut_query) as (conn, cut):
        rows = task_summary(conn, cut=cut, at=cut_query.at, unit_id=unit_id)
    stamp(response, cut.position)
    return s.TaskSummaryOut(position=cut.position, at=cut_query.at,
                            members=[s.MemberTaskSummaryOut.model_validate(r, from_attributes=True) for r in rows])



"""Deals walking the pipeline, and the activities members log."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from api import schemas as s
from api.deps import ChangeDep, CreateDep, GuardDep, WaitForPosition, etag
from api.errors import PROBLEM_RESPONSES
from api.openapi import VERSIONED
from domain import values as v

router = APIRouter(tags=["deals"], responses=PROBLEM_RESPONSES)


@router.post("/deals", status_code=201)
def open_deal(body: s.OpenDeal, cmd: CreateDep) -> s.CommandOut:
    """Open a deal for an account and product, owned by a member (a rep: by themselves)."""
    cmd.guard.act_for(body.owner_id, "owner_id")
    return cmd.run(cmd.planning.open_deal, body, "/deals/{id}", name=body.name, account_id=body.account_id,
                   owner_id=body.owner_id, product_id=body.product_id, amount=body.amount, currency=body.currency,
                   expected_close=body.expected_close, stage=body.stage, id=body.id)


@router.get("/deals/{deal_id}", responses=VERSIONED)
def get_deal(deal_id: UUID, guard: GuardDep, response: Response, wait_for_position: WaitForPosition = None) -> s.DealOut:
    """The deal as it stands now, with the stages it may move to next."""
    deal = guard.deal(deal_id, write=False)
    etag(response, deal.version)
    return s.DealOut(
        id=deal.id, version=deal.version, last_effective_at=deal.last_effective_at, name=deal.name,
        account_id=deal.account_id, owner_id=deal.owner_id, product_id=deal.product_id,
        product_line=deal.product_line, region=deal.region, segment=deal.segment, amount=deal.amount,
        currency=deal.currency, expected_close=deal.expected_close, stage=deal.stage,
        allowed_next_stages=v.allowed_next_stages(deal.stage),
    )


@router.post("/deals/{deal_id}/stage")
def change_deal_stage(deal_id: UUID, body: s.ChangeDealStage, cmd: ChangeDep) -> s.CommandOut:
    """Move the deal to another stage; backwards needs a reason (the answer lists the allowed stages)."""
    cmd.guard.deal(deal_id, write=True)
    return cmd.run(cmd.planning.change_deal_stage, body, "/deals/{id}", deal_id, stage=body.stage, reason=body.reason)


@router.post("/deals/{deal_id}/amount")
def change_deal_amount(deal_id: UUID, body: s.ChangeDealAmount, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.deal(deal_id, write=True)
    return cmd.run(cmd.planning.change_deal_amount, body, "/deals/{id}", deal_id, amount=body.amount,
                   reason=body.reason)


@router.post("/deals/{deal_id}/expected-close")
def change_deal_expected_close(deal_id: UUID, body: s.ChangeDealExpectedClose, cmd: ChangeDep) -> s.CommandOut:
    """Move the expected close date (a deal moved out of its period has slipped)."""
    cmd.guard.deal(deal_id, write=True)
    return cmd.run(cmd.planning.change_deal_expected_close, body, "/deals/{id}", deal_id,
                   expected_close=body.expected_close, reason=body.reason)


@router.post("/deals/{deal_id}/reassign")
def reassign_deal(deal_id: UUID, body: s.ReassignDeal, cmd: ChangeDep) -> s.CommandOut:
    """Hand a deal to another owner (a manager's decision), with the reason."""
    cmd.guard.deal(deal_id, write=True)
    cmd.guard.not_rep()
    cmd.guard.act_for(body.owner_id, "owner_id")
    return cmd.run(cmd.planning.reassign_deal, body, "/deals/{id}", deal_id, owner_id=body.owner_id,
                   reason=body.reason)


@router.post("/deals/{deal_id}/win")
def win_deal(deal_id: UUID, body: s.WinDeal, cmd: ChangeDep) -> s.CommandOut:
    """Close the deal as won: its amount counts as revenue at the effective time."""
    cmd.guard.deal(deal_id, write=True)
    return cmd.run(cmd.planning.win_deal, body, "/deals/{id}", deal_id, amount=body.amount)


@router.post("/deals/{deal_id}/lose")
def lose_deal(deal_id: UUID, body: s.ReasonBody, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.deal(deal_id, write=True)
    return cmd.run(cmd.planning.lose_deal, body, "/deals/{id}", deal_id, reason=body.reason)


@router.post("/deals/{deal_id}/reopen")
def reopen_deal(deal_id: UUID, body: s.ReopenDeal, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.deal(deal_id, write=True)
    return cmd.run(cmd.planning.reopen_deal, body, "/deals/{id}", deal_id, reason=body.reason, stage=body.stage)


@router.post("/activities", status_code=201)
def log_activity(body: s.LogActivity, cmd: CreateDep) -> s.CommandOut:
    """Log a call, visit, meeting, demo or email (a rep: their own, on their own deals)."""
    cmd.guard.act_for(body.member_id, "member_id")
    if body.deal_id is not None:
        cmd.guard.deal_field(body.deal_id, "deal_id")
    return cmd.run(cmd.planning.log_activity, body, "/activities/{id}", kind=body.kind, member_id=body.member_id,
                   deal_id=body.deal_id, note=body.note, id=body.id)


@router.get("/activities/{activity_id}", responses=VERSIONED)
def get_activity(activity_id: UUID, guard: GuardDep, response: Response,
                 wait_for_position: WaitForPosition = None) -> s.ActivityOut:
    activity = guard.activity(activity_id)
    etag(response, activity.version)
    return s.ActivityOut(id=activity.id, version=activity.version, last_effective_at=activity.last_effective_at,
                         kind=activity.kind, member_id=activity.member_id, deal_id=activity.deal_id,
                         note=activity.note)

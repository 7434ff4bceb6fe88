"""Plans and their targets: drafting, setting, decomposing, revising, publishing, closing."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from api import schemas as s
from api.deps import ChangeDep, CreateDep, GuardDep, WaitForPosition, etag
from api.errors import PROBLEM_RESPONSES
from api.openapi import VERSIONED
from domain import values as v
from domain.plan import Plan, Spread

router = APIRouter(tags=["plans"], responses=PROBLEM_RESPONSES)


@router.post("/plans", status_code=201)
def draft_plan(body: s.DraftPlan, cmd: CreateDep) -> s.CommandOut:
    """Draft a plan for a fiscal year or a quarter, owned by a unit you manage."""
    cmd.guard.manage_unit(body.unit_id)
    return cmd.run(cmd.planning.draft_plan, body, "/plans/{id}", name=body.name, span=body.span,
                   currency=body.currency, unit_id=body.unit_id, id=body.id)


@router.get("/plans/{plan_id}", responses=VERSIONED)
def get_plan(plan_id: UUID, guard: GuardDep, response: Response, wait_for_position: WaitForPosition = None) -> s.PlanOut:
    """The plan as it stands now, with every target."""
    plan = guard.planning.get(Plan, plan_id)
    etag(response, plan.version)
    return s.PlanOut(
        id=plan.id, version=plan.version, last_effective_at=plan.last_effective_at, name=plan.name, span=plan.span,
        currency=plan.currency, unit_id=plan.unit_id, status=plan.status, published_version=plan.published_version,
        unpublished_changes=plan.unpublished_changes,
        targets=[
            s.TargetOut(target_id=t["target_id"], metric=t["metric"], period=t["period"], start=t["start"],
                        end=t["end"], scope=s.ScopeOut(**v.Scope.from_dict(t["scope"]).as_dict()),
                        committed=t["committed"], stretch=t["stretch"], parent_id=t["parent_id"])
            for t in plan.targets.values()
        ],
        decompositions=[
            s.DecompositionOut(parent_id=parent_id, by=d["by"], children=d["children"], residue_to=d["residue_to"])
            for parent_id, decompositions in plan.decompositions.items() for d in decompositions
        ],
        locked_periods=[s.LockedPeriodOut(period=key, start=w["start"], end=w["end"])
                        for key, w in sorted(plan.locked_periods.items(), key=lambda kw: kw[1]["start"])],
    )


@router.post("/plans/{plan_id}/targets")
def set_target(plan_id: UUID, body: s.SetTarget, cmd: ChangeDep) -> s.CommandOut:
    """Set one target (metric × period × scope); once published, a reason is required."""
    cmd.guard.manage_plan(plan_id)
    cmd.guard.manage_scope(body.scope.unit_id, body.scope.member_id)
    scope = v.Scope(**body.scope.model_dump())
    return cmd.run(cmd.planning.set_target, body, "/plans/{id}", plan_id, metric=body.metric, period=body.period,
                   scope=scope, committed=body.committed, stretch=body.stretch, currency=body.currency,
                   reason=body.reason, target_id=body.target_id)


@router.post("/plans/{plan_id}/decompose")
def decompose_target(plan_id: UUID, body: s.DecomposeTarget, cmd: ChangeDep) -> s.CommandOut:
    """Split a target into children that sum exactly to it (equal, weights, last year's actuals or values)."""
    cmd.guard.manage_plan(plan_id)
    cmd.guard.manage_parts(body.by, body.parts)
    return cmd.run(cmd.planning.decompose_target, body, "/plans/{id}", plan_id, parent_id=body.parent_id, by=body.by,
                   parts=body.parts, method=body.method, weights=body.weights, history=body.history,
                   values=body.values, residue_to=body.residue_to, reason=body.reason)


@router.post("/plans/{plan_id}/revise")
def revise_target(plan_id: UUID, body: s.ReviseTarget, cmd: ChangeDep) -> s.CommandOut:
    """Revise a target's committed or stretch value; once published, a reason is required.

    Its decompositions re-spread in the same event (proportionally, or as ``spread`` says); a
    decomposition's child says where the difference goes (``absorb``). The answer's
    ``details.affected_ids`` lists every other target that moved.
    """
    cmd.guard.manage_plan(plan_id)
    spread = [Spread(by=x.by, target_id=x.target_id, method=x.method, weights=x.weights, values=x.values,
                     residue_to=x.residue_to) for x in body.spread]
    return cmd.run(cmd.planning.revise_target, body, "/plans/{id}", plan_id, target_id=body.target_id,
                   committed=body.committed, stretch=body.stretch, clear_stretch=body.clear_stretch,
                   absorb=body.absorb, spread=spread, reason=body.reason)


@router.post("/plans/{plan_id}/remove-target")
def remove_target(plan_id: UUID, body: s.RemoveTarget, cmd: ChangeDep) -> s.CommandOut:
    """Remove a target and its decompositions beneath it; a child says where its value goes (``mode``)."""
    cmd.guard.manage_plan(plan_id)
    return cmd.run(cmd.planning.remove_target, body, "/plans/{id}", plan_id, target_id=body.target_id,
                   mode=body.mode, method=body.method, residue_to=body.residue_to, reason=body.reason)


@router.post("/plans/{plan_id}/lock-period")
def lock_period(plan_id: UUID, body: s.LockPeriod, cmd: ChangeDep) -> s.CommandOut:
    """Lock a period of the plan (its figures are final), with a reason. Later entries inside it are
    still accepted: history stays true."""
    cmd.guard.manage_plan(plan_id)
    return cmd.run(cmd.planning.lock_period, body, "/plans/{id}", plan_id, period=body.period, reason=body.reason)


@router.post("/plans/{plan_id}/unlock-period")
def unlock_period(plan_id: UUID, body: s.UnlockPeriod, cmd: ChangeDep) -> s.CommandOut:
    """Lift a period's lock, with a reason."""
    cmd.guard.manage_plan(plan_id)
    return cmd.run(cmd.planning.unlock_period, body, "/plans/{id}", plan_id, period=body.period,
                   reason=body.reason)


@router.post("/plans/{plan_id}/publish")
def publish_plan(plan_id: UUID, body: s.PublishPlan, cmd: ChangeDep) -> s.CommandOut:
    """Freeze the current targets as the next numbered version (v1 is the baseline)."""
    cmd.guard.manage_plan(plan_id)
    return cmd.run(cmd.planning.publish_plan, body, "/plans/{id}", plan_id, note=body.note)


@router.post("/plans/{plan_id}/close")
def close_plan(plan_id: UUID, body: s.ClosePlan, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.manage_plan(plan_id)
    return cmd.run(cmd.planning.close_plan, body, "/plans/{id}", plan_id, reason=body.reason)

"""Units in a tree and the members who belong to them."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from api import schemas as s
from api.deps import ChangeDep, CreateDep, GuardDep, WaitForPosition, etag
from api.errors import PROBLEM_RESPONSES
from api.openapi import VERSIONED
from domain.organisation import Member, Unit

router = APIRouter(tags=["organisation"], responses=PROBLEM_RESPONSES)


@router.post("/units", status_code=201)
def add_unit(body: s.AddUnit, cmd: CreateDep) -> s.CommandOut:
    """Add a unit (company, region, office, team) under a parent; a root unit needs an admin."""
    cmd.guard.manage_unit(body.parent_id, "parent_id")
    return cmd.run(cmd.planning.add_unit, body, "/units/{id}", name=body.name, parent_id=body.parent_id, id=body.id)


@router.get("/units/{unit_id}", responses=VERSIONED)
def get_unit(unit_id: UUID, guard: GuardDep, response: Response, wait_for_position: WaitForPosition = None) -> s.UnitOut:
    unit = guard.planning.get(Unit, unit_id)
    etag(response, unit.version)
    return s.UnitOut(id=unit.id, version=unit.version, last_effective_at=unit.last_effective_at, name=unit.name,
                     parent_id=unit.parent_id, active=unit.active)


@router.post("/units/{unit_id}/rename")
def rename_unit(unit_id: UUID, body: s.RenameBody, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.manage_unit(unit_id)
    return cmd.run(cmd.planning.rename_unit, body, "/units/{id}", unit_id, name=body.name)


@router.post("/units/{unit_id}/move")
def move_unit(unit_id: UUID, body: s.MoveUnit, cmd: ChangeDep) -> s.CommandOut:
    """Re-parent a unit: both the unit and its new parent must be yours to manage."""
    cmd.guard.manage_unit(unit_id)
    cmd.guard.manage_unit(body.parent_id, "parent_id")
    return cmd.run(cmd.planning.move_unit, body, "/units/{id}", unit_id, parent_id=body.parent_id, reason=body.reason)


@router.post("/units/{unit_id}/deactivate")
def deactivate_unit(unit_id: UUID, body: s.ReasonBody, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.manage_unit(unit_id)
    return cmd.run(cmd.planning.deactivate_unit, body, "/units/{id}", unit_id, reason=body.reason)


@router.post("/members", status_code=201)
def add_member(body: s.AddMember, cmd: CreateDep) -> s.CommandOut:
    """Add a rep or a manager to a unit."""
    cmd.guard.manage_unit(body.unit_id)
    return cmd.run(cmd.planning.add_member, body, "/members/{id}", name=body.name, role=body.role,
                   unit_id=body.unit_id, email=body.email, id=body.id)


@router.get("/members/{member_id}", responses=VERSIONED)
def get_member(member_id: UUID, guard: GuardDep, response: Response,
               wait_for_position: WaitForPosition = None) -> s.MemberOut:
    member = guard.planning.get(Member, member_id)
    etag(response, member.version)
    return s.MemberOut(id=member.id, version=member.version, last_effective_at=member.last_effective_at,
                       name=member.name, role=member.role, unit_id=member.unit_id, email=member.email,
                       active=member.active)


@router.post("/members/{member_id}/rename")
def rename_member(member_id: UUID, body: s.RenameBody, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.manage_member(member_id)
    return cmd.run(cmd.planning.rename_member, body, "/members/{id}", member_id, name=body.name)


@router.post("/members/{member_id}/move")
def move_member(member_id: UUID, body: s.MoveMember, cmd: ChangeDep) -> s.CommandOut:
    """Move a member to another unit from the effective time on; earlier results stay where they were."""
    cmd.guard.manage_member(member_id)
    cmd.guard.manage_unit(body.unit_id)
    return cmd.run(cmd.planning.move_member, body, "/members/{id}", member_id, unit_id=body.unit_id,
                   reason=body.reason)


@router.post("/members/{member_id}/deactivate")
def deactivate_member(member_id: UUID, body: s.ReasonBody, cmd: ChangeDep) -> s.CommandOut:
    cmd.guard.manage_member(member_id)
    return cmd.run(cmd.planning.deactivate_member, body, "/members/{id}", member_id, reason=body.reason)

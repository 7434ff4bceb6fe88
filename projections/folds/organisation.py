"""Pure folds of the organisation, shared by the projections that keep their own copy of it.

Each projection owns its tables, so progress and pipeline both record units and members;
the way an event changes a unit or a member is written once, here.
"""

from __future__ import annotations

from typing import Any

from domain.organisation import Member, Unit

State = dict[str, Any]


def evolve_unit(state: State | None, event: Any) -> State:
    if isinstance(event, Unit.Added):
        return {"name": event.name, "parent_id": event.parent_id, "active": True}
    assert state is not None
    if isinstance(event, Unit.Renamed):
        return {**state, "name": event.name}
    if isinstance(event, Unit.Moved):
        return {**state, "parent_id": event.parent_id}
    if isinstance(event, Unit.Deactivated):
        return {**state, "active": False}
    raise TypeError(f"unexpected unit event {type(event).__qualname__}")


def evolve_member(state: State | None, event: Any) -> State:
    if isinstance(event, Member.Added):
        return {"name": event.name, "role": event.role, "unit_id": event.unit_id, "active": True}
    assert state is not None
    if isinstance(event, Member.Renamed):
        return {**state, "name": event.name}
    if isinstance(event, Member.Moved):
        return {**state, "unit_id": event.unit_id}
    if isinstance(event, Member.Deactivated):
        return {**state, "active": False}
    raise TypeError(f"unexpected member event {type(event).__qualname__}")

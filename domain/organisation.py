"""Organisation: units in a tree and the members (reps and managers) who belong to one unit."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from domain.aggregate import SalesAggregate
from domain.errors import RuleViolation


class Unit(SalesAggregate):
    """A company, region, office or team; units form a tree through ``parent_id``."""

    class Added(SalesAggregate.Created):
        name: str
        parent_id: UUID | None

    class Renamed(SalesAggregate.Event):
        name: str
        previous_name: str

        def apply(self, aggregate: Unit) -> None:
            aggregate.name = self.name

    class Moved(SalesAggregate.Event):
        parent_id: UUID | None
        previous_parent_id: UUID | None
        reason: str

        def apply(self, aggregate: Unit) -> None:
            aggregate.parent_id = self.parent_id

    class Deactivated(SalesAggregate.Event):
        reason: str

        def apply(self, aggregate: Unit) -> None:
            aggregate.active = False

    def __init__(self, name: str, parent_id: UUID | None) -> None:
        self.name = name
        self.parent_id = parent_id
        self.active = True

    @classmethod
    def add(cls, *, id: UUID, name: str, parent_id: UUID | None, actor: str, effective_at: datetime) -> Unit:
        return cls._create(cls.Added, id=id, name=name, parent_id=parent_id, actor=actor, effective_at=effective_at)

    def _check_active(self) -> None:
        if not self.active:
            raise RuleViolation("unit.inactive", f"unit {self.id} is deactivated", "unit_id")

    def rename(self, name: str, *, actor: str, effective_at: datetime) -> None:
        self._check_active()
        self.check_effective(effective_at)
        self.trigger_event(self.Renamed, name=name, previous_name=self.name, actor=actor, effective_at=effective_at)

    def move(self, parent_id: UUID | None, reason: str, *, actor: str, effective_at: datetime) -> None:
        self._check_active()
        self.check_effective(effective_at)
        if parent_id == self.id:
            raise RuleViolation("unit.cycle", "a unit cannot be its own parent", "parent_id")
        self.trigger_event(
            self.Moved, parent_id=parent_id, previous_parent_id=self.parent_id, reason=reason,
            actor=actor, effective_at=effective_at,
        )

    def deactivate(self, reason: str, *, actor: str, effective_at: datetime) -> None:
        self._check_active()
        self.check_effective(effective_at)
        self.trigger_event(self.Deactivated, reason=reason, actor=actor, effective_at=effective_at)


class Member(SalesAggregate):
    """A rep or manager. Belongs to one unit at a time; a move takes effect at its effective time."""

    class Added(SalesAggregate.Created):
        name: str
        role: str
        unit_id: UUID
        email: str

    class Renamed(SalesAggregate.Event):
        name: str
        previous_name: str

        def apply(self, aggregate: Member) -> None:
            aggregate.name = self.name

    class Moved(SalesAggregate.Event):
        unit_id: UUID
        previous_unit_id: UUID
        reason: str

        def apply(self, aggregate: Member) -> None:
            aggregate.unit_id = self.unit_id

    class Deactivated(SalesAggregate.Event):
        reason: str

        def apply(self, aggregate: Member) -> None:
            aggregate.active = False

    def __init__(self, name: str, role: str, unit_id: UUID, email: str) -> None:
        self.name = name
        self.role = role
        self.unit_id = unit_id
        self.email = email
        self.active = True

    @classmethod
    def add(
        cls, *, id: UUID, name: str, role: str, unit_id: UUID, email: str, actor: str, effective_at: datetime
    ) -> Member:
        return cls._create(
            cls.Added, id=id, name=name, role=role, unit_id=unit_id, email=email, actor=actor,
            effective_at=effective_at,
        )

    def check_active(self, field: str = "member_id") -> None:
        if not self.active:
            raise RuleViolation("member.inactive", f"member {self.id} is deactivated", field)

    def rename(self, name: str, *, actor: str, effective_at: datetime) -> None:
        self.check_active()
        self.check_effective(effective_at)
        self.trigger_event(self.Renamed, name=name, previous_name=self.name, actor=actor, effective_at=effective_at)

    def move(self, unit_id: UUID, reason: str, *, actor: str, effective_at: datetime) -> None:
        self.check_active()
        self.check_effective(effective_at)
        if unit_id == self.unit_id:
            raise RuleViolation("member.same_unit", "the member already belongs to that unit", "unit_id")
        self.trigger_event(
            self.Moved, unit_id=unit_id, previous_unit_id=self.unit_id, reason=reason,
            actor=actor, effective_at=effective_at,
        )

    def deactivate(self, reason: str, *, actor: str, effective_at: datetime) -> None:
        self.check_active()
        self.check_effective(effective_at)
        self.trigger_event(self.Deactivated, reason=reason, actor=actor, effective_at=effective_at)

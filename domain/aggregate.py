"""The base every salesplan aggregate shares: each event carries who and when (in business time)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.errors import RuleViolation


class SalesAggregate(Aggregate):
    """An aggregate whose events all carry the actor and the effective time.

    An entity's changes take effect in the order they were made: a back-dated change may
    not precede the entity's previous change. That keeps "as of T" well defined: the
    events of one entity effective up to T are always a prefix of its history.
    """

    last_effective_at: datetime

    class Event(Aggregate.Event):
        actor: str
        effective_at: datetime

        def mutate(self, aggregate: Any) -> Any:
            aggregate = super().mutate(aggregate)
            aggregate.last_effective_at = self.effective_at
            return aggregate

    class Created(Aggregate.Created, Event):
        def mutate(self, aggregate: Any) -> Any:
            aggregate = super().mutate(aggregate)
            aggregate.last_effective_at = self.effective_at
            return aggregate

    def check_effective(self, effective_at: datetime) -> None:
        if effective_at < self.last_effective_at:
            raise RuleViolation(
                "time.before_previous_change",
                f"effective_at {effective_at.isoformat()} precedes this entity's previous change "
                f"({self.last_effective_at.isoformat()})",
                "effective_at",
            )

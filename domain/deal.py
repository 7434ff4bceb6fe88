"""Deal (opportunity) walking the pipeline, and the activities members log.

Stages: lead → qualified → needs_analysis → proposal → negotiation → won | lost. Moving a
deal backwards, losing it and reopening it all need a reason; won and lost are terminal
unless the deal is reopened.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from domain import values as v
from domain.aggregate import SalesAggregate
from domain.errors import RuleViolation, ValidationError


class Deal(SalesAggregate):
    class Opened(SalesAggregate.Created):
        name: str
        account_id: UUID | None
        owner_id: UUID
        product_id: UUID
        product_line: str
        region: str
        segment: str
        amount: Decimal
        currency: str
        expected_close: date
        stage: str

    class StageChanged(SalesAggregate.Event):
        stage: str
        previous_stage: str
        reason: str

        def apply(self, aggregate: Deal) -> None:
            aggregate.stage = self.stage

    class AmountChanged(SalesAggregate.Event):
        amount: Decimal
        previous_amount: Decimal
        reason: str

        def apply(self, aggregate: Deal) -> None:
            aggregate.amount = self.amount

    class ExpectedCloseChanged(SalesAggregate.Event):
        expected_close: date
        previous_expected_close: date
        reason: str

        def apply(self, aggregate: Deal) -> None:
            aggregate.expected_close = self.expected_close

    class Reassigned(SalesAggregate.Event):
        owner_id: UUID
        previous_owner_id: UUID
        reason: str

        def apply(self, aggregate: Deal) -> None:
            aggregate.owner_id = self.owner_id

    class Won(SalesAggregate.Event):
        amount: Decimal
        previous_stage: str
        owner_id: UUID

        def apply(self, aggregate: Deal) -> None:
            aggregate.stage = "won"
            aggregate.amount = self.amount

    class Lost(SalesAggregate.Event):
        previous_stage: str
        reason: str

        def apply(self, aggregate: Deal) -> None:
            aggregate.stage = "lost"

    class Reopened(SalesAggregate.Event):
        stage: str
        previous_stage: str
        reason: str

        def apply(self, aggregate: Deal) -> None:
            aggregate.stage = self.stage

    def __init__(
        self, name: str, account_id: UUID | None, owner_id: UUID, product_id: UUID, product_line: str, region: str,
        segment: str, amount: Decimal, currency: str, expected_close: date, stage: str,
    ) -> None:
        self.name = name
        self.account_id = account_id
        self.owner_id = owner_id
        self.product_id = product_id
        self.product_line = product_line
        self.region = region
        self.segment = segment
        self.amount = amount
        self.currency = currency
        self.expected_close = expected_close
        self.stage = stage

    @classmethod
    def open(
        cls, *, id: UUID, name: str, account_id: UUID | None, owner_id: UUID, product_id: UUID, product_line: str,
        region: str, segment: str, amount: Decimal, currency: str, expected_close: date, stage: str = "lead",
        actor: str, effective_at: datetime,
    ) -> Deal:
        """Open a deal; the product line, region and segment are recorded as known when it opened."""
        if v.stage(stage) not in v.OPEN_STAGES:
            raise RuleViolation("deal.opened_closed", "a deal opens in an open stage; win or lose it afterwards",
                                "stage", allowed=list(v.OPEN_STAGES))
        return cls._create(
            cls.Opened, id=id, name=v.text(name, "name"), account_id=account_id, owner_id=owner_id,
            product_id=product_id, product_line=product_line, region=region, segment=segment,
            amount=v.money(amount, "amount"), currency=v.currency(currency), expected_close=expected_close,
            stage=stage, actor=actor, effective_at=effective_at,
        )

    @property
    def is_closed(self) -> bool:
        return self.stage in v.CLOSED_STAGES

    def _check_open(self, effective_at: datetime) -> None:
        if self.is_closed:
            raise RuleViolation(
                "deal.closed", f"deal {self.id} is {self.stage}: reopen it first", None, allowed_next_stages=[]
            )
        self.check_effective(effective_at)

    def change_stage(self, stage: str, *, reason: str | None = None, actor: str, effective_at: datetime) -> None:
        """Move an open deal to another open stage; backwards needs a reason."""
        v.stage(stage)
        if stage == "won":
            self.win(actor=actor, effective_at=effective_at)
            return
        if stage == "lost":
            self.lose(reason=reason, actor=actor, effective_at=effective_at)
            return
        self._check_open(effective_at)
        allowed = v.allowed_next_stages(self.stage)
        if stage not in allowed:
            raise RuleViolation(
                "deal.illegal_transition", f"a deal cannot move from {self.stage} to {stage}", "stage",
                allowed_next_stages=allowed,
            )
        backwards = v.OPEN_STAGES.index(stage) < v.OPEN_STAGES.index(self.stage)
        why = v.reason(reason) if backwards else v.optional_reason(reason)
        self.trigger_event(
            self.StageChanged, stage=stage, previous_stage=self.stage, reason=why, actor=actor, effective_at=effective_at
        )

    def change_amount(self, amount: Decimal, *, reason: str | None = None, actor: str, effective_at: datetime) -> None:
        self._check_open(effective_at)
        value = v.money(amount, "amount")
        if value == self.amount:
            raise RuleViolation("deal.unchanged", "the amount is unchanged", "amount")
        self.trigger_event(
            self.AmountChanged, amount=value, previous_amount=self.amount, reason=v.optional_reason(reason),
            actor=actor, effective_at=effective_at,
        )

    def change_expected_close(
        self, expected_close: date, *, reason: str | None = None, actor: str, effective_at: datetime
    ) -> None:
        self._check_open(effective_at)
        if expected_close == self.expected_close:
            raise RuleViolation("deal.unchanged", "the expected close date is unchanged", "expected_close")
        self.trigger_event(
            self.ExpectedCloseChanged, expected_close=expected_close, previous_expected_close=self.expected_close,
            reason=v.optional_reason(reason), actor=actor, effective_at=effective_at,
        )

    def reassign(self, owner_id: UUID, *, reason: str | None, actor: str, effective_at: datetime) -> None:
        self._check_open(effective_at)
        if owner_id == self.owner_id:
            raise RuleViolation("deal.same_owner", "the deal already belongs to that member", "owner_id")
        self.trigger_event(
            self.Reassigned, owner_id=owner_id, previous_owner_id=self.owner_id, reason=v.reason(reason),
            actor=actor, effective_at=effective_at,
        )

    def win(self, *, amount: Decimal | None = None, actor: str, effective_at: datetime) -> None:
        """Close the deal as won; its amount (as won) counts as revenue at the effective time."""
        self._check_open(effective_at)
        value = self.amount if amount is None else v.money(amount, "amount")
        self.trigger_event(
            self.Won, amount=value, previous_stage=self.stage, owner_id=self.owner_id, actor=actor,
            effective_at=effective_at,
        )

    def lose(self, *, reason: str | None, actor: str, effective_at: datetime) -> None:
        self._check_open(effective_at)
        self.trigger_event(
            self.Lost, previous_stage=self.stage, reason=v.reason(reason), actor=actor, effective_at=effective_at
        )

    def reopen(self, *, reason: str | None, stage: str = "negotiation", actor: str, effective_at: datetime) -> None:
        if not self.is_closed:
            raise RuleViolation("deal.not_closed", f"deal {self.id} is still open", None,
                                allowed_next_stages=v.allowed_next_stages(self.stage))
        self.check_effective(effective_at)
        if v.stage(stage) not in v.OPEN_STAGES:
            raise RuleViolation("deal.reopen_stage", "a deal reopens in an open stage", "stage",
                                allowed=list(v.OPEN_STAGES))
        self.trigger_event(
            self.Reopened, stage=stage, previous_stage=self.stage, reason=v.reason(reason), actor=actor,
            effective_at=effective_at,
        )


class Activity(SalesAggregate):
    """A call, visit, meeting, demo or email a member logged, optionally on a deal: process metrics."""

    class Logged(SalesAggregate.Created):
        kind: str
        member_id: UUID
        deal_id: UUID | None
        note: str

    def __init__(self, kind: str, member_id: UUID, deal_id: UUID | None, note: str) -> None:
        self.kind = kind
        self.member_id = member_id
        self.deal_id = deal_id
        self.note = note

    @classmethod
    def log(
        cls, *, id: UUID, kind: str, member_id: UUID, deal_id: UUID | None, note: str, actor: str,
        effective_at: datetime,
    ) -> Activity:
        if kind not in v.ACTIVITY_KINDS:
            raise ValidationError("activity.kind", f"kind must be one of {', '.join(v.ACTIVITY_KINDS)}", "kind",
                                  allowed=list(v.ACTIVITY_KINDS))
        return cls._create(
            cls.Logged, id=id, kind=kind, member_id=member_id, deal_id=deal_id,
            note=v.optional_reason(note, "note"), actor=actor, effective_at=effective_at,
        )

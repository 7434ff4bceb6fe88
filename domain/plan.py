"""Plan: a named sales plan for a span, owned by a unit, in one currency, holding its targets.

Lifecycle: drafted → published (v1, the baseline) → revised → re-published (v2, v3 …) → closed.
Once a plan has been published, every change to it is a revision and carries a reason.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from domain import values as v
from domain.aggregate import SalesAggregate
from domain.decomposition import split
from domain.errors import NotFound, RuleViolation, ValidationError

DECOMPOSE_BY: Final = ("period", "unit", "member", "product_line", "region", "segment")
PLAN_STATUSES: Final = ("draft", "published", "closed")


def target_value(metric: str, value: Any, field: str) -> Decimal:
    """Money for revenue and order value, whole numbers for counts, a share for win rate."""
    if metric in v.MONEY_METRICS:
        return v.money(value, field)
    amount = v.money(value, field) if not isinstance(value, Decimal) else value
    if not amount.is_finite() or amount < 0:
        raise ValidationError("target.value_negative", f"{field} must be finite and non-negative", field)
    if metric == "win_rate":
        if amount > 1:
            raise ValidationError("target.win_rate_range", f"{field} is a share between 0 and 1", field)
        return amount
    if amount != amount.to_integral_value():
        raise ValidationError("target.not_whole", f"{field} counts {metric}: it must be a whole number", field)
    return amount.quantize(Decimal(1))


class Plan(SalesAggregate):
    """The target tree of one plan and its published versions."""

    class Drafted(SalesAggregate.Created):
        name: str
        span: str
        currency: str
        unit_id: UUID

    class TargetSet(SalesAggregate.Event):
        target_id: UUID
        metric: str
        period: str
        scope: dict[str, Any]
        committed: Decimal
        stretch: Decimal | None
        parent_id: UUID | None
        reason: str

        def apply(self, aggregate: Plan) -> None:
            aggregate.add_target_state(
                self.target_id, self.metric, self.period, self.scope, self.committed, self.stretch, self.parent_id
            )

    class TargetDecomposed(SalesAggregate.Event):
        parent_id: UUID
        by: str
        method: str
        residue_to: UUID
        children: list[dict[str, Any]]
        reason: str

        def apply(self, aggregate: Plan) -> None:
            parent = aggregate.targets[self.parent_id]
            for child in self.children:
                aggregate.add_target_state(
                    child["target_id"], parent["metric"], child["period"], child["scope"],
                    child["committed"], child["stretch"], self.parent_id,
                )

    class TargetRevised(SalesAggregate.Event):
        target_id: UUID
        committed: Decimal
        stretch: Decimal | None
        previous_committed: Decimal
        previous_stretch: Decimal | None
        reason: str

        def apply(self, aggregate: Plan) -> None:
            target = aggregate.targets[self.target_id]
            target["committed"] = self.committed
            target["stretch"] = self.stretch
            aggregate.unpublished_changes = True

    class TargetRemoved(SalesAggregate.Event):
        target_id: UUID
        removed_ids: list[UUID]
        reason: str

        def apply(self, aggregate: Plan) -> None:
            for target_id in self.removed_ids:
                aggregate.targets.pop(target_id, None)
            aggregate.unpublished_changes = True

    class Published(SalesAggregate.Event):
        version: int
        note: str

        def apply(self, aggregate: Plan) -> None:
            aggregate.status = "published"
            aggregate.published_version = self.version
            aggregate.unpublished_changes = False

    class Closed(SalesAggregate.Event):
        reason: str

        def apply(self, aggregate: Plan) -> None:
            aggregate.status = "closed"

    def __init__(self, name: str, span: str, currency: str, unit_id: UUID) -> None:
        self.name = name
        self.span = span
        self.currency = currency
        self.unit_id = unit_id
        self.status = "draft"
        self.published_version = 0
        self.unpublished_changes = False
        self.targets: dict[UUID, dict[str, Any]] = {}

    def add_target_state(
        self, target_id: UUID, metric: str, period: str, scope: dict[str, Any],
        committed: Decimal, stretch: Decimal | None, parent_id: UUID | None,
    ) -> None:
        self.targets[target_id] = {
            "target_id": target_id, "metric": metric, "period": period, "scope": dict(scope),
            "committed": committed, "stretch": stretch, "parent_id": parent_id,
        }
        self.unpublished_changes = True

    # --- commands ---------------------------------------------------------------------

    @classmethod
    def draft(
        cls, *, id: UUID, name: str, span: str, currency: str, unit_id: UUID, actor: str, effective_at: datetime
    ) -> Plan:
        period = v.Period.parse(span, "span")
        if period.kind not in ("year", "quarter"):
            raise ValidationError("plan.span_kind", "a plan spans a fiscal year or a quarter", "span")
        return cls._create(
            cls.Drafted, id=id, name=v.text(name, "name"), span=span, currency=v.currency(currency),
            unit_id=unit_id, actor=actor, effective_at=effective_at,
        )

    def set_target(
        self, *, target_id: UUID, metric: str, period: str, scope: v.Scope, committed: Any,
        stretch: Any = None, currency: str | None = None, reason: str | None = None,
        actor: str, effective_at: datetime,
    ) -> None:
        why = self._check_change(reason, effective_at)
        v.metric(metric)
        self._check_currency(currency)
        self._check_period(period, "period")
        self._check_unique(metric, period, scope, "scope")
        value, upside = self._values(metric, committed, stretch)
        if target_id in self.targets:
            raise RuleViolation("target.id_taken", f"target {target_id} already exists", "target_id")
        self.trigger_event(
            self.TargetSet, target_id=target_id, metric=metric, period=period, scope=scope.as_dict(),
            committed=value, stretch=upside, parent_id=None, reason=why, actor=actor, effective_at=effective_at,
        )

    def decompose(
        self, *, parent_id: UUID, by: str, parts: list[str], child_ids: list[UUID], method: str = "equal",
        weights: list[Decimal] | None = None, history: list[Decimal] | None = None,
        values: list[Decimal] | None = None, residue_to: int = 0, reason: str | None = None,
        actor: str, effective_at: datetime,
    ) -> None:
        """Split a target into children by period, unit, member, product line, region or segment."""
        why = self._check_change(reason, effective_at)
        parent = self._target(parent_id, "parent_id")
        if by not in DECOMPOSE_BY:
            raise ValidationError("decomposition.by", f"by must be one of {', '.join(DECOMPOSE_BY)}", "by",
                                  allowed=list(DECOMPOSE_BY))
        metric = parent["metric"]
        if metric in v.RATIO_METRICS:
            raise RuleViolation("decomposition.ratio_metric", f"{metric} is a ratio: it does not sum up", "parent_id")
        if len(set(parts)) != len(parts) or not parts:
            raise ValidationError("decomposition.parts", "parts must be distinct and not empty", "parts")
        places = 2 if metric in v.MONEY_METRICS else 0
        committed = split(parent["committed"], parts=len(parts), method=method, places=places,
                          weights=weights, history=history, values=values, residue_to=residue_to)
        stretch: list[Decimal | None] = [None] * len(parts)
        if parent["stretch"] is not None:
            # The upside is split in the same proportions as the committed value.
            proportional = method == "values" and sum(committed) > 0
            stretch = list(split(
                parent["stretch"], parts=len(parts), places=places, residue_to=residue_to,
                method="history" if proportional else ("equal" if method == "values" else method),
                weights=weights, history=committed if proportional else history,
            ))
        scope = v.Scope.from_dict(parent["scope"])
        children = []
        for i, (part, child_id) in enumerate(zip(parts, child_ids, strict=True)):
            field = f"parts/{i}"
            period, child_scope = parent["period"], scope
            if by == "period":
                child_period = v.Period.parse(part, field)
                parent_period = v.Period.parse(parent["period"])
                if not parent_period.contains(child_period) or child_period.kind == parent_period.kind:
                    raise RuleViolation("decomposition.period_outside", f"{part} is not inside {parent['period']}", field)
                period = part
            elif by in ("unit", "member"):
                if scope.member_id is not None:
                    raise RuleViolation("decomposition.member_scope", "a member's target cannot be split by people", "parent_id")
                owner = UUID(part)
                child_scope = v.Scope(
                    unit_id=owner if by == "unit" else None, member_id=owner if by == "member" else None,
                    product_line=scope.product_line, region=scope.region, segment=scope.segment,
                )
            else:
                if getattr(scope, by) is not None:
                    raise RuleViolation("decomposition.already_narrowed", f"the parent is already narrowed by {by}", "by")
                child_scope = v.Scope(**{**scope.as_dict(), by: v.text(part, field, max_length=100)})
            self._check_unique(metric, period, child_scope, field)
            if child_id in self.targets:
                raise RuleViolation("target.id_taken", f"target {child_id} already exists", "child_ids")
            children.append({
                "target_id": child_id, "period": period, "scope": child_scope.as_dict(),
                "committed": committed[i], "stretch": stretch[i], "part": part,
            })
        self.trigger_event(
            self.TargetDecomposed, parent_id=parent_id, by=by, method=method, residue_to=child_ids[residue_to],
            children=children, reason=why, actor=actor, effective_at=effective_at,
        )

    def revise_target(
        self, *, target_id: UUID, committed: Any = None, stretch: Any = None, clear_stretch: bool = False,
        reason: str | None, actor: str, effective_at: datetime,
    ) -> None:
        """Change a target's committed and/or stretch value (a revision, once published)."""
        why = self._check_change(reason, effective_at)
        target = self._target(target_id, "target_id")
        new_committed = target["committed"] if committed is None else committed
        new_stretch = None if clear_stretch else (target["stretch"] if stretch is None else stretch)
        value, upside = self._values(target["metric"], new_committed, new_stretch)
        if value == target["committed"] and upside == target["stretch"]:
            raise RuleViolation("target.unchanged", "the revision changes nothing", "committed")
        self.trigger_event(
            self.TargetRevised, target_id=target_id, committed=value, stretch=upside,
            previous_committed=target["committed"], previous_stretch=target["stretch"], reason=why,
            actor=actor, effective_at=effective_at,
        )

    def remove_target(self, *, target_id: UUID, reason: str | None, actor: str, effective_at: datetime) -> None:
        """Remove a target and its decomposition beneath it."""
        why = self._check_change(reason, effective_at)
        self._target(target_id, "target_id")
        removed = [target_id]
        for tid in removed:  # grows while walking: breadth-first over the subtree
            removed.extend(t["target_id"] for t in self.targets.values() if t["parent_id"] == tid)
        self.trigger_event(
            self.TargetRemoved, target_id=target_id, removed_ids=removed, reason=why,
            actor=actor, effective_at=effective_at,
        )

    def publish(self, *, note: str = "", actor: str, effective_at: datetime) -> int:
        """Freeze the current targets as the next numbered version (v1 is the baseline)."""
        self._check_open()
        self.check_effective(effective_at)
        if not self.targets:
            raise RuleViolation("plan.no_targets", "a plan without targets cannot be published", None)
        if self.status == "published" and not self.unpublished_changes:
            raise RuleViolation("plan.nothing_to_publish", f"v{self.published_version} is already current", None)
        version = self.published_version + 1
        self.trigger_event(self.Published, version=version, note=note, actor=actor, effective_at=effective_at)
        return version

    def close(self, *, reason: str, actor: str, effective_at: datetime) -> None:
        self._check_open()
        self.check_effective(effective_at)
        self.trigger_event(self.Closed, reason=reason, actor=actor, effective_at=effective_at)

    # --- guards -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.status == "closed":
            raise RuleViolation("plan.closed", f"plan {self.id} is closed: it cannot change", None)

    def _check_change(self, reason: str | None, effective_at: datetime) -> str:
        self._check_open()
        self.check_effective(effective_at)
        if self.status == "published":
            return v.reason(reason)
        return v.optional_reason(reason)

    def _check_currency(self, currency: str | None) -> None:
        if currency is not None and currency != self.currency:
            raise RuleViolation(
                "currency.mismatch", f"the plan is in {self.currency}, not {currency}", "currency"
            )

    def _check_period(self, period: str, field: str) -> None:
        if not v.Period.parse(self.span).contains(v.Period.parse(period, field)):
            raise RuleViolation("target.period_outside_span", f"{period} is outside the plan's span {self.span}", field)

    def _check_unique(self, metric: str, period: str, scope: v.Scope, field: str) -> None:
        key = scope.key()
        for t in self.targets.values():
            if t["metric"] == metric and t["period"] == period and v.Scope.from_dict(t["scope"]).key() == key:
                raise RuleViolation(
                    "target.duplicate", f"the plan already has a {metric} target for {period} and this scope", field,
                    target_id=str(t["target_id"]),
                )

    def _values(self, metric: str, committed: Any, stretch: Any) -> tuple[Decimal, Decimal | None]:
        value = target_value(metric, committed, "committed")
        upside = None if stretch is None else target_value(metric, stretch, "stretch")
        if upside is not None and upside < value:
            raise RuleViolation(
                "target.stretch_below_committed", "the stretch value must not be below the committed value", "stretch"
            )
        return value, upside

    def _target(self, target_id: UUID, field: str) -> dict[str, Any]:
        try:
            return self.targets[target_id]
        except KeyError:
            raise NotFound("target", target_id, field) from None

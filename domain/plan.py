"""Plan: a named sales plan for a span, owned by a unit, in one currency, holding its targets.

Lifecycle: drafted → published (v1, the baseline) → revised → re-published (v2, v3 …) → closed.
Once a plan has been published, every change to it is a revision and carries a reason.

The target tree always adds up. A *decomposition* splits a parent target into children
along one axis — period, owner (units or members), product line, region or segment — and a
parent may be decomposed once per axis, so a year can be split by quarter *and* by rep (two
views of one number). In every state of the plan each decomposition's children sum exactly
to their parent, committed and upside alike (a target without a stretch value counts at its
committed value; the upside above committed is spread like the committed value, so no child's
stretch ever falls below its committed value). A change that moves one number moves every
number that must move with it, in the same event:

- revising a parent re-spreads the children of each of its decompositions (proportionally
  unless told otherwise), and so on down every decomposition beneath;
- revising a child says where the difference goes: its parent (which changes with it, and so
  on up the chain, each ancestor's other decompositions re-spread) or a named sibling;
- removing a child takes its subtree with it and either shrinks the parent with it or
  re-spreads its value over its siblings, keeping the parent's sum.

Children lie within their parent: a period child inside the parent's window (a month splits
into the ISO weeks that overlap it, each clipped to the month and carrying its window), an
owner child inside the parent unit's subtree, a narrowing child only narrowing.

How totals read such a tree (the roll-up rule, which every read side follows): a scope's
total for a metric and a period is its own un-narrowed target when it has one — its children
by owner or by narrowing never add to it — otherwise the sum of the targets that cover it
(members counted in the unit they belonged to at the period's start, sub-units recursively).
Ratio metrics (win rate, average order value) never sum.

History written before these rules (revisions that left a decomposition not adding up,
several decompositions along one axis) replays as it was; the next re-spread of such a
decomposition makes it add up again.

Locking a period (``Plan.PeriodLocked``) records that its figures are final, with a reason.
It never refuses a later business event — history must stay true — so a late entry is
accepted and can be flagged against the lock, whose event names the period and its window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from domain import values as v
from domain.aggregate import SalesAggregate
from domain.decomposition import SPREAD_METHODS, respread, split, split_upside
from domain.errors import DomainError, NotFound, RuleViolation, ValidationError

DECOMPOSE_BY: Final = ("period", "unit", "member", "product_line", "region", "segment")
# The axis each way of decomposing splits along: a parent is decomposed at most once per axis.
AXIS: Final = {"period": "period", "unit": "owner", "member": "owner", "product_line": "product_line",
               "region": "region", "segment": "segment"}
PLAN_STATUSES: Final = ("draft", "published", "closed")
REMOVE_MODES: Final = ("subtree", "respread")
ABSORB_PARENT: Final = "parent"

# How an effect came about, as recorded in each effect of a revision or removal.
ROLLED_UP: Final = "rolled_up"  # an ancestor changed with its child
ABSORBED: Final = "absorbed"  # a named sibling took the difference
RE_SPREAD: Final = "re_spread"  # a child re-spread beneath a target that changed

Values = tuple[Decimal, Decimal | None]  # committed, stretch


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


def places_of(metric: str) -> int:
    """A decomposition never invents cents or half deals."""
    return v.MONEY_PLACES if metric in v.MONEY_METRICS else 0


def upside_of(committed: Decimal, stretch: Decimal | None) -> Decimal:
    """What a target adds to its parent's upside: its stretch, or its committed value without one."""
    return committed if stretch is None else stretch


def window_of(target: Mapping[str, Any]) -> tuple[date, date]:
    """The days a target covers (end exclusive): its period, or the part of it a decomposition clipped."""
    if target.get("start") is not None and target.get("end") is not None:
        return target["start"], target["end"]
    period = v.Period.parse(target["period"])
    return period.start, period.end


@dataclass(frozen=True)
class Spread:
    """How to re-spread one decomposition that a change touches (the others go proportionally).

    ``target_id`` names the decomposed target (None: the target the command names) and ``by``
    the decomposition; ``weights`` and ``values`` are keyed by child target id; the rounding
    residue lands on ``residue_to`` (default: the child that took it when the target was
    decomposed).
    """

    by: str
    target_id: UUID | None = None
    method: str = "proportional"
    weights: Mapping[UUID, Decimal] | None = None
    values: Mapping[UUID, Decimal] | None = None
    residue_to: UUID | None = None


def _moved(effects: Sequence[Mapping[str, Any]]) -> dict[UUID, Values]:
    return {e["target_id"]: (e["committed"], e["stretch"]) for e in effects}


class Plan(SalesAggregate):
    """The target tree of one plan, its published versions and its locked periods."""

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
        """Children carry ``start``/``end`` (their window) since schema v2; older children cover their period."""

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
                    child["committed"], child["stretch"], self.parent_id, child.get("start"), child.get("end"),
                )
            aggregate.decompositions.setdefault(self.parent_id, []).append({
                "by": self.by, "axis": AXIS.get(self.by, self.by),
                "children": [c["target_id"] for c in self.children], "residue_to": self.residue_to,
            })

    class TargetRevised(SalesAggregate.Event):
        """One revision and everything it moved: ``effects`` lists every other target whose values
        changed (``target_id``, ``previous_committed``, ``committed``, ``previous_stretch``,
        ``stretch``, ``via``: rolled_up | absorbed | re_spread); ``absorb`` says where a child's
        difference went ("parent", a sibling's id, or "" for a target without a parent)."""

        class_version = 2

        target_id: UUID
        committed: Decimal
        stretch: Decimal | None
        previous_committed: Decimal
        previous_stretch: Decimal | None
        reason: str
        absorb: str = ""
        effects: list[dict[str, Any]] = dataclasses.field(default_factory=list)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["absorb"] = ""
            state["effects"] = []

        def moved(self) -> dict[UUID, Values]:
            """Every target this revision gives new values, the revised one first."""
            return {self.target_id: (self.committed, self.stretch), **_moved(self.effects)}

        def apply(self, aggregate: Plan) -> None:
            target = aggregate.targets[self.target_id]
            target["committed"] = self.committed
            target["stretch"] = self.stretch
            aggregate.apply_effects(self.effects)
            aggregate.unpublished_changes = True

    class TargetRemoved(SalesAggregate.Event):
        """A removal and what it moved: ``mode`` is "subtree" (the parent shrinks with it, or keeps
        its value when the last child of a decomposition goes) or "respread" (its value re-spread
        over its siblings); ``effects`` as for a revision."""

        class_version = 2

        target_id: UUID
        removed_ids: list[UUID]
        reason: str
        mode: str = "subtree"
        effects: list[dict[str, Any]] = dataclasses.field(default_factory=list)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["mode"] = "subtree"
            state["effects"] = []

        def moved(self) -> dict[UUID, Values]:
            """Every target that stays but takes new values."""
            return _moved(self.effects)

        def apply(self, aggregate: Plan) -> None:
            gone = set(self.removed_ids)
            for target_id in self.removed_ids:
                aggregate.targets.pop(target_id, None)
                aggregate.decompositions.pop(target_id, None)
            for parent_id, decompositions in list(aggregate.decompositions.items()):
                for d in decompositions:
                    d["children"] = [c for c in d["children"] if c not in gone]
                kept = [d for d in decompositions if d["children"]]
                if kept:
                    aggregate.decompositions[parent_id] = kept
                else:
                    del aggregate.decompositions[parent_id]
            aggregate.apply_effects(self.effects)
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

    class PeriodLocked(SalesAggregate.Event):
        """A manager declared a period's figures final: ``start``–``end`` (end exclusive, UTC days)
        is the window later entries are checked against; ``plan_version`` the version in force."""

        period: str
        start: date
        end: date
        plan_version: int
        reason: str

        def apply(self, aggregate: Plan) -> None:
            aggregate.locked_periods[self.period] = {"start": self.start, "end": self.end}

    class PeriodUnlocked(SalesAggregate.Event):
        period: str
        start: date
        end: date
        reason: str

        def apply(self, aggregate: Plan) -> None:
            aggregate.locked_periods.pop(self.period, None)

    def __init__(self, name: str, span: str, currency: str, unit_id: UUID) -> None:
        self.name = name
        self.span = span
        self.currency = currency
        self.unit_id = unit_id
        self.status = "draft"
        self.published_version = 0
        self.unpublished_changes = False
        self.targets: dict[UUID, dict[str, Any]] = {}
        # parent id → its decompositions, each {"by", "axis", "children": [ids in order], "residue_to"}
        self.decompositions: dict[UUID, list[dict[str, Any]]] = {}
        self.locked_periods: dict[str, dict[str, date]] = {}

    def add_target_state(
        self, target_id: UUID, metric: str, period: str, scope: dict[str, Any],
        committed: Decimal, stretch: Decimal | None, parent_id: UUID | None,
        start: date | None = None, end: date | None = None,
    ) -> None:
        whole = v.Period.parse(period)
        self.targets[target_id] = {
            "target_id": target_id, "metric": metric, "period": period, "scope": dict(scope),
            "committed": committed, "stretch": stretch, "parent_id": parent_id,
            "start": start or whole.start, "end": end or whole.end,
        }
        self.unpublished_changes = True

    def apply_effects(self, effects: Sequence[Mapping[str, Any]]) -> None:
        for effect in effects:
            target = self.targets[effect["target_id"]]
            target["committed"] = effect["committed"]
            target["stretch"] = effect["stretch"]

    # --- reading the tree -------------------------------------------------------------

    def decomposition_of(self, target_id: UUID) -> dict[str, Any] | None:
        """The decomposition a target is a child in (None for a target without a parent)."""
        parent_id = self.targets[target_id]["parent_id"]
        for d in self.decompositions.get(parent_id, []) if parent_id is not None else []:
            if target_id in d["children"]:
                return d
        return None

    def subtree(self, target_id: UUID) -> list[UUID]:
        """The target and everything beneath it, breadth-first."""
        found = [target_id]
        for tid in found:  # grows while walking
            found.extend(c for d in self.decompositions.get(tid, []) for c in d["children"])
        return found

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
        whole = v.Period.parse(period)
        self._check_unique(metric, period, (whole.start, whole.end), scope, "scope")
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
        values: list[Decimal] | None = None, residue_to: int = 0,
        owner_units: Sequence[Sequence[UUID]] | None = None, reason: str | None = None,
        actor: str, effective_at: datetime,
    ) -> None:
        """Split a target into children by period, unit, member, product line, region or segment.

        Splitting into ISO weeks gives every week that overlaps the parent, clipped to it
        (``equal`` then means in proportion to each clipped week's days). Splitting by unit or
        member needs ``owner_units``: for each part, the units it lies within (a unit: its
        ancestors; a member: the unit she belonged to at the parent's period start, and its
        ancestors), which the parent's unit must be among.
        """
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
        for d in self.decompositions.get(parent_id, []):
            if d["axis"] == AXIS[by]:
                raise RuleViolation(
                    "decomposition.axis_taken",
                    f"the target is already decomposed by {d['by']}: one decomposition per axis "
                    "(period, owner, product line, region, segment)", "by",
                )
        scope = v.Scope.from_dict(parent["scope"])
        start, end = window_of(parent)
        children: list[dict[str, Any]] = []
        days: list[int] = []
        kinds: set[str] = set()
        for i, (part, child_id) in enumerate(zip(parts, child_ids, strict=True)):
            field = f"parts/{i}"
            period, child_scope, window = parent["period"], scope, (start, end)
            if by == "period":
                child_period = v.Period.parse(part, field)
                parent_period = v.Period.parse(parent["period"])
                window = (max(start, child_period.start), min(end, child_period.end))
                inside = (window[0] < window[1] if child_period.kind == "week"
                          else start <= child_period.start and child_period.end <= end)
                if not inside or v.PERIOD_KINDS.index(child_period.kind) <= v.PERIOD_KINDS.index(parent_period.kind):
                    raise RuleViolation(
                        "decomposition.period_outside",
                        f"{part} does not lie in {parent['period']} ({start.isoformat()} to {end.isoformat()})", field,
                    )
                kinds.add(child_period.kind)
                if len(kinds) > 1:
                    raise RuleViolation("decomposition.period_kinds",
                                        "a period splits into periods of one kind (they must not overlap)", field)
                period = part
            elif by in ("unit", "member"):
                if scope.member_id is not None:
                    raise RuleViolation("decomposition.member_scope", "a member's target cannot be split by people", "parent_id")
                owner = UUID(part)
                self._check_owner_within(by, owner, scope.unit_id, owner_units, i)
                child_scope = v.Scope(
                    unit_id=owner if by == "unit" else None, member_id=owner if by == "member" else None,
                    product_line=scope.product_line, region=scope.region, segment=scope.segment,
                )
            else:
                if getattr(scope, by) is not None:
                    raise RuleViolation(
                        "decomposition.already_narrowed",
                        f"the parent is already narrowed to {by} {getattr(scope, by)!r}: a split by {by} would "
                        "widen it", "by",
                    )
                child_scope = v.Scope(**{**scope.as_dict(), by: v.text(part, field, max_length=100)})
            self._check_unique(metric, period, window, child_scope, field)
            if child_id in self.targets:
                raise RuleViolation("target.id_taken", f"target {child_id} already exists", "child_ids")
            days.append((window[1] - window[0]).days)
            children.append({"target_id": child_id, "period": period, "start": window[0], "end": window[1],
                             "scope": child_scope.as_dict(), "part": part})
        places = places_of(metric)
        by_days = kinds == {"week"} and method == "equal"
        committed = split(parent["committed"], parts=len(parts), places=places, residue_to=residue_to,
                          method="history" if by_days else method, weights=weights,
                          history=[Decimal(d) for d in days] if by_days else history, values=values)
        excess = upside_of(parent["committed"], parent["stretch"]) - parent["committed"]
        if method == "values":
            upsides = split_upside(excess, list(committed), [], places=places, residue_to=residue_to, days=days)
        else:
            upsides = split(excess, parts=len(parts), places=places, residue_to=residue_to,
                            method="history" if by_days else method, weights=weights,
                            history=[Decimal(d) for d in days] if by_days else history)
        for child, value, extra in zip(children, committed, upsides, strict=True):
            child["committed"] = value
            child["stretch"] = None if parent["stretch"] is None else value + extra
        self.trigger_event(
            self.TargetDecomposed, parent_id=parent_id, by=by, method=method, residue_to=child_ids[residue_to],
            children=children, reason=why, actor=actor, effective_at=effective_at,
        )

    def revise_target(
        self, *, target_id: UUID, committed: Any = None, stretch: Any = None, clear_stretch: bool = False,
        absorb: str | UUID | None = None, spread: Sequence[Spread] = (), reason: str | None,
        actor: str, effective_at: datetime,
    ) -> None:
        """Change a target's committed and/or stretch value, and everything that must change with it.

        Its decompositions re-spread (proportionally, unless ``spread`` says otherwise for one of
        them); a child's difference goes where ``absorb`` says: ``"parent"`` (up the chain) or a
        sibling's id.
        """
        why = self._check_change(reason, effective_at)
        target = self._target(target_id, "target_id")
        new_committed = target["committed"] if committed is None else committed
        new_stretch = None if clear_stretch else (target["stretch"] if stretch is None else stretch)
        value, upside = self._values(target["metric"], new_committed, new_stretch)
        if value == target["committed"] and upside == target["stretch"]:
            raise RuleViolation("target.unchanged", "the revision changes nothing", "committed")
        work = _Rework(self, spread)
        absorber = self._absorber(target_id, absorb)
        work.put(target_id, value, upside, "")
        work.absorb(target_id, absorber, "absorb")
        work.spread_beneath(target_id)
        work.check_all_used()
        self.trigger_event(
            self.TargetRevised, target_id=target_id, committed=value, stretch=upside,
            previous_committed=target["committed"], previous_stretch=target["stretch"], reason=why,
            absorb="" if absorber is None else str(absorber), effects=work.effects(exclude={target_id}),
            actor=actor, effective_at=effective_at,
        )

    def remove_target(
        self, *, target_id: UUID, mode: str | None = None, method: str = "proportional",
        residue_to: UUID | None = None, reason: str | None, actor: str, effective_at: datetime,
    ) -> None:
        """Remove a target with its subtree; a child says where its value goes (``mode``):
        ``"subtree"`` (the parent shrinks with it) or ``"respread"`` (over its siblings, by
        ``method`` proportional or equal, the residue on ``residue_to``)."""
        why = self._check_change(reason, effective_at)
        self._target(target_id, "target_id")
        decomposition = self.decomposition_of(target_id)
        if mode is not None and mode not in REMOVE_MODES:
            raise ValidationError("target.remove_mode", f"mode must be one of {', '.join(REMOVE_MODES)}", "mode",
                                  allowed=list(REMOVE_MODES))
        if decomposition is None:
            if mode == "respread":
                raise RuleViolation("target.remove_no_siblings",
                                    "this target has no parent: there are no siblings to re-spread it over", "mode")
            mode = "subtree"
        elif mode is None:
            raise RuleViolation(
                "target.remove_mode_required",
                "this target is part of a decomposition: say where its value goes (mode subtree: the parent "
                "shrinks with it; respread: its siblings take it)", "mode", allowed=list(REMOVE_MODES),
            )
        removed = self.subtree(target_id)
        work = _Rework(self, ())
        if decomposition is not None:
            siblings = [c for c in decomposition["children"] if c != target_id]
            if mode == "respread":
                if not siblings:
                    raise RuleViolation("target.remove_no_siblings",
                                        "the last child of a decomposition has no siblings to re-spread it over",
                                        "mode")
                if method not in ("proportional", "equal"):
                    raise ValidationError("spread.method", "method must be proportional or equal", "method",
                                          allowed=["proportional", "equal"])
                if residue_to is not None and residue_to not in siblings:
                    raise RuleViolation("decomposition.residue_to", "residue_to must name one of the siblings",
                                        "residue_to")
                work.share_out(target_id, decomposition, siblings, method, residue_to)
            elif siblings:
                c, s = work.value(target_id)
                work.roll_up(target_id, -c, -(upside_of(c, s) - c), "target_id")
        self.trigger_event(
            self.TargetRemoved, target_id=target_id, removed_ids=removed, reason=why, mode=mode,
            effects=work.effects(exclude=set(removed)), actor=actor, effective_at=effective_at,
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

    def lock_period(self, *, period: str, reason: str | None, actor: str, effective_at: datetime) -> None:
        """Declare a period's figures final. Later entries inside it are still accepted (history stays true)."""
        self._check_open()
        self.check_effective(effective_at)
        why = v.reason(reason)
        self._check_period(period, "period")
        locked = v.Period.parse(period)
        for key, window in self.locked_periods.items():
            if window["start"] <= locked.start and locked.end <= window["end"]:
                raise RuleViolation("period.already_locked", f"{period} is already locked (by {key})", "period",
                                    locked_by=key)
        self.trigger_event(self.PeriodLocked, period=period, start=locked.start, end=locked.end,
                           plan_version=self.published_version, reason=why, actor=actor, effective_at=effective_at)

    def unlock_period(self, *, period: str, reason: str | None, actor: str, effective_at: datetime) -> None:
        """Lift a lock (a mistaken or reopened month close), with a reason."""
        self._check_open()
        self.check_effective(effective_at)
        why = v.reason(reason)
        v.Period.parse(period, "period")
        window = self.locked_periods.get(period)
        if window is None:
            raise RuleViolation("period.not_locked", f"{period} is not locked", "period",
                                locked=sorted(self.locked_periods))
        self.trigger_event(self.PeriodUnlocked, period=period, start=window["start"], end=window["end"], reason=why,
                           actor=actor, effective_at=effective_at)

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

    def _check_unique(self, metric: str, period: str, window: tuple[date, date], scope: v.Scope, field: str) -> None:
        """One target per metric, period, window and scope (a week clipped to January and the same
        week clipped to February are two cells)."""
        key = scope.key()
        for t in self.targets.values():
            if (t["metric"] == metric and t["period"] == period and window_of(t) == window
                    and v.Scope.from_dict(t["scope"]).key() == key):
                raise RuleViolation(
                    "target.duplicate", f"the plan already has a {metric} target for {period} and this scope", field,
                    target_id=str(t["target_id"]),
                )

    @staticmethod
    def _check_owner_within(by: str, owner: UUID, parent_unit: UUID | None,
                            owner_units: Sequence[Sequence[UUID]] | None, i: int) -> None:
        if owner_units is None or parent_unit is None:
            return
        if parent_unit not in owner_units[i]:
            if by == "unit":
                raise RuleViolation("decomposition.unit_outside_parent",
                                    f"unit {owner} is not beneath the parent's unit {parent_unit}", f"parts/{i}")
            raise RuleViolation(
                "decomposition.member_outside_parent",
                f"member {owner} did not belong to the parent's unit {parent_unit} or beneath it at the period's "
                "start", f"parts/{i}",
            )

    def _absorber(self, target_id: UUID, absorb: str | UUID | None) -> UUID | str | None:
        """Where a child's difference goes: "parent", a sibling's id, or nowhere for a target without a parent."""
        decomposition = self.decomposition_of(target_id)
        if decomposition is None:
            if absorb is not None:
                raise RuleViolation("target.absorb_without_parent",
                                    "this target has no parent: there is nothing to absorb the difference", "absorb")
            return None
        if absorb is None:
            raise RuleViolation(
                "target.absorb_required",
                "this target is part of a decomposition: say where the difference goes (absorb \"parent\" or a "
                "sibling's target id)", "absorb",
            )
        if absorb == ABSORB_PARENT:
            return ABSORB_PARENT
        try:
            sibling = absorb if isinstance(absorb, UUID) else UUID(absorb)
        except ValueError:
            raise ValidationError("target.absorb", 'absorb is "parent" or a sibling\'s target id', "absorb") from None
        if sibling == target_id or sibling not in decomposition["children"]:
            raise RuleViolation("target.absorb_not_sibling",
                                f"{sibling} is not a sibling of this target in its decomposition", "absorb")
        return sibling

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


class _Rework:
    """The new values one change gives the tree, worked out before the event records them.

    Works in committed value and *excess* (stretch − committed, zero without a stretch): both
    add up along every decomposition, and a non-negative excess is what keeps each stretch at
    or above its committed value.
    """

    def __init__(self, plan: Plan, specs: Sequence[Spread]) -> None:
        self.plan = plan
        self.new: dict[UUID, Values] = {}
        self.via: dict[UUID, str] = {}
        self.order: list[UUID] = []
        self.specs: dict[tuple[UUID | None, str], tuple[int, Spread]] = {}
        for i, spec in enumerate(specs):
            if spec.by not in AXIS:
                raise ValidationError("decomposition.by", f"by must be one of {', '.join(DECOMPOSE_BY)}",
                                      f"spread/{i}/by", allowed=list(DECOMPOSE_BY))
            key = (spec.target_id, AXIS[spec.by])
            if key in self.specs:
                raise ValidationError("spread.duplicate", "one spread per decomposition", f"spread/{i}")
            self.specs[key] = (i, spec)
        self.used: set[tuple[UUID | None, str]] = set()

    def value(self, target_id: UUID) -> Values:
        if target_id in self.new:
            return self.new[target_id]
        t = self.plan.targets[target_id]
        return t["committed"], t["stretch"]

    def excess(self, target_id: UUID) -> Decimal:
        c, s = self.value(target_id)
        return upside_of(c, s) - c

    def put(self, target_id: UUID, committed: Decimal, stretch: Decimal | None, via: str) -> None:
        if target_id not in self.new:
            self.order.append(target_id)
            self.via[target_id] = via
        self.new[target_id] = (committed, stretch)

    def set_parts(self, target_id: UUID, committed: Decimal, excess: Decimal, via: str) -> bool:
        """Set a target from committed and excess; False when nothing changed."""
        old_c, old_s = self.value(target_id)
        stretch = None if old_s is None and excess == 0 else committed + excess
        # An unchanged value keeps the digits it was written with (5200000 stays 5200000, not 5200000.00).
        committed = old_c if committed == old_c else committed
        stretch = old_s if stretch is not None and stretch == old_s else stretch
        if (committed, stretch) == (old_c, old_s):
            return False
        self.put(target_id, committed, stretch, via)
        return True

    def absorb(self, target_id: UUID, absorber: UUID | str | None, field: str) -> None:
        """Send a child's difference to its parent (up the chain) or to a sibling."""
        if absorber is None:
            return
        t = self.plan.targets[target_id]
        d_committed = self.value(target_id)[0] - t["committed"]
        d_excess = self.excess(target_id) - (upside_of(t["committed"], t["stretch"]) - t["committed"])
        if absorber == ABSORB_PARENT:
            self.roll_up(target_id, d_committed, d_excess, field)
            return
        assert isinstance(absorber, UUID)
        c = self.value(absorber)[0] - d_committed
        e = self.excess(absorber) - d_excess
        if c < 0:
            raise RuleViolation("target.absorb_negative",
                                f"sibling {absorber} holds {self.value(absorber)[0]}: it cannot absorb {d_committed}",
                                field, sibling_id=str(absorber))
        if e < 0:
            raise RuleViolation("target.absorb_stretch_below_committed",
                                f"sibling {absorber}'s stretch would fall below its committed value", field,
                                sibling_id=str(absorber))
        self.set_parts(absorber, c, e, ABSORBED)
        self.spread_beneath(absorber)

    def roll_up(self, target_id: UUID, d_committed: Decimal, d_excess: Decimal, field: str) -> None:
        """Each ancestor changes by the same difference; its other decompositions re-spread."""
        node = target_id
        while (parent_id := self.plan.targets[node]["parent_id"]) is not None:
            decomposition = self.plan.decomposition_of(node)
            c = self.value(parent_id)[0] + d_committed
            e = self.excess(parent_id) + d_excess
            if c < 0 or e < 0:
                raise RuleViolation("target.absorb_negative",
                                    f"ancestor {parent_id} would fall below zero (its children no longer add up to "
                                    "it)", field, ancestor_id=str(parent_id))
            self.set_parts(parent_id, c, e, ROLLED_UP)
            self.spread_beneath(parent_id, skip=decomposition)
            node = parent_id

    def spread_beneath(self, target_id: UUID, skip: dict[str, Any] | None = None) -> None:
        """Re-spread every decomposition of a changed target (but ``skip``), recursively."""
        for d in self.plan.decompositions.get(target_id, []):
            if d is not skip:
                key: tuple[UUID | None, str] = (target_id, d["axis"])
                found = self.specs.get(key)
                if found is None and target_id == self.order[0]:
                    key = (None, d["axis"])
                    found = self.specs.get(key)
                if found is not None:
                    self.used.add(key)
                i, spec = found if found is not None else (-1, Spread(by=d["by"]))
                self.spread(target_id, d, d["children"], spec, f"spread/{i}/" if i >= 0 else "")

    def spread(self, parent_id: UUID, d: dict[str, Any], children: list[UUID], spec: Spread, field: str) -> None:
        """Give ``children`` (of decomposition ``d``) new values that sum to the parent's."""
        metric = self.plan.targets[parent_id]["metric"]
        places = places_of(metric)
        residue = spec.residue_to if spec.residue_to is not None else (
            d["residue_to"] if d["residue_to"] in children else children[0])
        if residue not in children:
            raise RuleViolation("decomposition.residue_to", "residue_to must name one of the decomposition's children",
                                f"{field}residue_to")
        if spec.method not in SPREAD_METHODS:
            raise ValidationError("spread.method", f"method must be one of {', '.join(SPREAD_METHODS)}",
                                  f"{field}method", allowed=list(SPREAD_METHODS))
        at = children.index(residue)
        days = self.days(children)
        current = [self.value(c)[0] for c in children]
        try:
            committed = respread(self.value(parent_id)[0], current, method=spec.method, places=places,
                                 residue_to=at, weights=_ordered(spec.weights, children, "weights"),
                                 values=_ordered(spec.values, children, "values"), days=days)
            excess = split_upside(self.excess(parent_id), [self.excess(c) for c in children], list(committed),
                                  places=places, residue_to=at, days=days)
        except DomainError as error:
            if not field:
                raise
            raise type(error)(error.rule, error.message, field + (error.field or ""), **error.details) from None
        for child, c, extra in zip(children, committed, excess, strict=True):
            if self.set_parts(child, c, extra, RE_SPREAD):
                self.spread_beneath(child)

    def share_out(self, removed: UUID, d: dict[str, Any], siblings: list[UUID], method: str,
                  residue_to: UUID | None) -> None:
        """Add a removed child's committed value and upside to its siblings (proportionally to what
        they hold, or equally), so the parent keeps its sum."""
        metric = self.plan.targets[removed]["metric"]
        residue = residue_to if residue_to is not None else (
            d["residue_to"] if d["residue_to"] in siblings else siblings[0])
        at = siblings.index(residue)
        days = self.days(siblings)
        current = [self.value(c)[0] for c in siblings]
        excess = [self.excess(c) for c in siblings]
        shares = respread(self.value(removed)[0], current, method=method, places=places_of(metric), residue_to=at,
                          days=days)
        none = [Decimal(0)] * len(siblings)
        proportional = method == "proportional"
        extra = split_upside(self.excess(removed), excess if proportional else none, current if proportional else none,
                             places=places_of(metric), residue_to=at, days=days)
        for child, c, e, share, more in zip(siblings, current, excess, shares, extra, strict=True):
            if self.set_parts(child, c + share, e + more, RE_SPREAD):
                self.spread_beneath(child)

    def days(self, children: list[UUID]) -> list[int] | None:
        """Weeks clipped to their month share "equally" by days; other periods share equally."""
        targets = [self.plan.targets[c] for c in children]
        if not all(v.Period.parse(t["period"]).kind == "week" for t in targets):
            return None
        return [(window_of(t)[1] - window_of(t)[0]).days for t in targets]

    def check_all_used(self) -> None:
        for key, (i, spec) in self.specs.items():
            if key not in self.used:
                raise RuleViolation("spread.not_touched",
                                    f"this change does not re-spread a decomposition by {spec.by} of that target",
                                    f"spread/{i}")

    def effects(self, exclude: set[UUID]) -> list[dict[str, Any]]:
        """Every changed target but ``exclude``, in the order the change reached them."""
        result = []
        for target_id in self.order:
            if target_id in exclude:
                continue
            t = self.plan.targets[target_id]
            committed, stretch = self.new[target_id]
            result.append({"target_id": target_id, "previous_committed": t["committed"], "committed": committed,
                           "previous_stretch": t["stretch"], "stretch": stretch, "via": self.via[target_id]})
        return result


def _ordered(given: Mapping[UUID, Decimal] | None, children: list[UUID], field: str) -> list[Decimal] | None:
    """Per-child figures keyed by child id, in the decomposition's order."""
    if given is None:
        return None
    if set(given) != set(children):
        raise ValidationError(f"decomposition.{field}_count",
                              f"{field} must name each child of the decomposition exactly once", field,
                              children=[str(c) for c in children])
    return [given[c] for c in children]

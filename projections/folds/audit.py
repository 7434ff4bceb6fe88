"""Audit history: who changed what, when and why — one row per change, for every entity.

Every event of every aggregate becomes at least one row; an event that changes several
targets at once becomes one row per target (a decomposition: the parent "decomposed" and one
row per child created; a removal: one row per removed target; a revision or removal: one more
row per target it moved with it — rolled up, absorbed or re-spread — each with the change's
reason), keyed by (position, seq).

``changes`` is derived from the event alone (events carry their ``previous_*`` values):
field → {"before": …, "after": …}, values as JSON strings/numbers (Decimals, dates and UUIDs
as strings). ``before`` is null when the field did not exist before or the event does not
say (a plan's status before it closed). Pairs that did not change are left out.

The human ``summary`` names entities (units, members, targets…) by what they were called
when the change was recorded: the projection keeps those names in its own ``audit_subjects``
table, learnt from the creation and rename events, never from the write model.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.catalogue import Account, Product
from domain.deal import Activity, Deal
from domain.organisation import Member, Unit
from domain.plan import Plan
from domain.task import Task
from projections.engine import Envelope, Projection
from projections.sqltypes import UTCDateTime

ENTITIES: Final = ("unit", "member", "product", "account", "plan", "target", "task", "deal", "activity")

# --- pure folds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """What summaries call an entity, and the plan it belongs to (targets and tasks)."""

    entity: str
    label: str
    plan_id: UUID | None = None
    metric: str | None = None  # targets: decomposition children inherit it


@dataclass(frozen=True)
class AuditRow:
    """One change to one entity."""

    position: int
    seq: int
    recorded_at: datetime
    effective_at: datetime
    actor: str
    entity: str
    entity_id: UUID
    plan_id: UUID | None
    event_type: str
    summary: str
    changes: dict[str, dict[str, Any]]
    reason: str


_ROW_FIELDS: Final = dataclasses.fields(AuditRow)

Change = tuple[Any, Any]  # (before, after), as found in the event

_NOT_PAYLOAD: Final = frozenset(
    {"originator_id", "originator_version", "timestamp", "originator_topic", "actor", "effective_at", "reason"}
)
# Facts an event implies without carrying them as fields: (before, after).
_IMPLIED: Final[dict[type[Any], dict[str, Change]]] = {
    Unit.Deactivated: {"active": (True, False)},
    Member.Deactivated: {"active": (True, False)},
    Plan.Drafted: {"status": (None, "draft")},
    Plan.Closed: {"status": (None, "closed")},
    Plan.PeriodLocked: {"locked": (False, True)},
    Plan.PeriodUnlocked: {"locked": (True, False)},
    Task.Created: {"status": (None, "open")},
    Task.Completed: {"status": ("open", "done"), "progress": (None, 100)},
    Task.Cancelled: {"status": ("open", "cancelled")},
    Deal.Won: {"stage": (None, "won")},
    Deal.Lost: {"stage": (None, "lost")},
}
# Fields recorded for attribution, not changes: the owner a won deal counts for.
_NOT_CHANGES: Final[dict[type[Any], frozenset[str]]] = {Deal.Won: frozenset({"owner_id"})}


def plain(value: Any) -> Any:
    """A JSON-ready value: Decimals, dates, datetimes and UUIDs as strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def _diff(pairs: Mapping[str, Change]) -> dict[str, dict[str, Any]]:
    result = {}
    for name, (before, after) in pairs.items():
        b, a = plain(before), plain(after)
        if b == a or (b is None and a == ""):
            continue
        result[name] = {"before": b, "after": a}
    return result


def event_changes(event: Any) -> dict[str, dict[str, Any]]:
    """field → {"before", "after"}, from the event alone: ``previous_x`` pairs with ``x``."""
    skip = _NOT_PAYLOAD | _NOT_CHANGES.get(type(event), frozenset())
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in skip}
    pairs: dict[str, Change] = dict(_IMPLIED.get(type(event), {}))
    for name, value in fields.items():
        if name.startswith("previous_"):
            field = name.removeprefix("previous_")
            pairs[field] = (value, fields[field] if field in fields else pairs.get(field, (None, None))[1])
        elif f"previous_{name}" not in fields:
            pairs[name] = (pairs.get(name, (None, None))[0], value)
    if isinstance(event, Plan.Published):
        pairs["version"] = (event.version - 1 or None, event.version)
        pairs["status"] = ("draft" if event.version == 1 else "published", "published")
    return _diff(pairs)


def referenced_ids(event: Any) -> set[UUID]:
    """Every entity an event mentions (its own, its targets, the owners and units it names)."""
    found: set[UUID] = set()

    def walk(value: Any) -> None:
        if isinstance(value, UUID):
            found.add(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    for f in dataclasses.fields(event):
        walk(getattr(event, f.name))
    return found


class Namer:
    """Names entities in summaries (first layer first); an unknown id shows as its first eight hex digits."""

    def __init__(self, *layers: Mapping[UUID, Subject]) -> None:
        self.layers = layers

    def __call__(self, entity_id: UUID | None) -> str:
        if entity_id is None:
            return "(none)"
        for layer in self.layers:
            subject = layer.get(entity_id)
            if subject is not None:
                return subject.label
        return str(entity_id)[:8]


def amount(value: Decimal | None) -> str:
    return "(none)" if value is None else f"{value:,}"


def target_label(metric: str, period: str, scope: Mapping[str, Any], name: Namer) -> str:
    """"revenue 2026-Q2 for East (GTX, APAC)": what managers call a target."""
    owner = scope.get("member_id") or scope.get("unit_id")
    narrowed = [str(scope[k]) for k in ("product_line", "region", "segment") if scope.get(k)]
    return f"{metric} {period} for {name(owner)}" + (f" ({', '.join(narrowed)})" if narrowed else "")


def learn(event: Any, subjects: Mapping[UUID, Subject]) -> dict[UUID, Subject]:
    """The subjects this event creates or renames (activities are never named later: not kept)."""
    o = event.originator_id
    name = Namer(subjects)
    if isinstance(event, (Unit.Added, Member.Added, Product.Added, Account.Added, Deal.Opened)):
        return {o: Subject(type(event).__qualname__.split(".")[0].lower(), event.name)}
    if isinstance(event, (Unit.Renamed, Member.Renamed)):
        known = subjects.get(o) or Subject(type(event).__qualname__.split(".")[0].lower(), event.name)
        return {o: dataclasses.replace(known, label=event.name)}
    if isinstance(event, Plan.Drafted):
        return {o: Subject("plan", event.name, plan_id=o)}
    if isinstance(event, Task.Created):
        return {o: Subject("task", event.title, plan_id=event.plan_id)}
    if isinstance(event, Plan.TargetSet):
        label = target_label(event.metric, event.period, event.scope, name)
        return {event.target_id: Subject("target", label, plan_id=o, metric=event.metric)}
    if isinstance(event, Plan.TargetDecomposed):
        parent = subjects.get(event.parent_id)
        metric = parent.metric if parent is not None and parent.metric else "?"
        return {
            child["target_id"]: Subject("target", target_label(metric, child["period"], child["scope"], name),
                                        plan_id=o, metric=metric)
            for child in event.children
        }
    return {}


Summary = Callable[[Any, Namer], str]

_SUMMARIES: Final[dict[type[Any], Summary]] = {
    Unit.Added: lambda e, n: f"unit {e.name} added" + (f" under {n(e.parent_id)}" if e.parent_id else ""),
    Unit.Renamed: lambda e, n: f"unit {e.previous_name} renamed to {e.name}",
    Unit.Moved: lambda e, n: f"unit {n(e.originator_id)} moved from {n(e.previous_parent_id)} to {n(e.parent_id)}",
    Unit.Deactivated: lambda e, n: f"unit {n(e.originator_id)} deactivated",
    Member.Added: lambda e, n: f"{e.role} {e.name} added to {n(e.unit_id)}",
    Member.Renamed: lambda e, n: f"member {e.previous_name} renamed to {e.name}",
    Member.Moved: lambda e, n: f"member {n(e.originator_id)} moved from {n(e.previous_unit_id)} to {n(e.unit_id)}",
    Member.Deactivated: lambda e, n: f"member {n(e.originator_id)} deactivated",
    Product.Added: lambda e, n: f"product {e.name} ({e.product_line}) added at {amount(e.list_price)} {e.currency}",
    Product.ListPriceChanged: lambda e, n: (
        f"product {n(e.originator_id)} list price {amount(e.previous_list_price)} → {amount(e.list_price)}"),
    Account.Added: lambda e, n: f"account {e.name} added ({e.segment}, {e.region})",
    Account.Reclassified: lambda e, n: (
        f"account {n(e.originator_id)} reclassified from {e.previous_segment}/{e.previous_region} "
        f"to {e.segment}/{e.region}"),
    Plan.Drafted: lambda e, n: f"plan {e.name} drafted for {e.span} in {e.currency}, owned by {n(e.unit_id)}",
    Plan.Published: lambda e, n: f"plan {n(e.originator_id)} published as v{e.version}" + (
        f": {e.note}" if e.note else ""),
    Plan.Closed: lambda e, n: f"plan {n(e.originator_id)} closed",
    Plan.PeriodLocked: lambda e, n: (
        f"plan {n(e.originator_id)}: period {e.period} locked ({e.start} to {e.end - timedelta(days=1)})"),
    Plan.PeriodUnlocked: lambda e, n: f"plan {n(e.originator_id)}: period {e.period} unlocked",
    Task.Created: lambda e, n: f"task {e.title} created for {n(e.assignee_id)}, due {e.due}" + (
        f", toward {n(e.target_id)}" if e.target_id else ""),
    Task.Reassigned: lambda e, n: (
        f"task {n(e.originator_id)} reassigned from {n(e.previous_assignee_id)} to {n(e.assignee_id)}"),
    Task.Rescheduled: lambda e, n: f"task {n(e.originator_id)} rescheduled from {e.previous_due} to {e.due}",
    Task.ProgressReported: lambda e, n: (
        f"task {n(e.originator_id)} progress {e.previous_progress}% → {e.progress}%" + (
            f": {e.note}" if e.note else "")),
    Task.Completed: lambda e, n: f"task {n(e.originator_id)} completed" + (f": {e.outcome}" if e.outcome else ""),
    Task.Cancelled: lambda e, n: f"task {n(e.originator_id)} cancelled",
    Deal.Opened: lambda e, n: (
        f"deal {e.name} opened" + (f" with {n(e.account_id)}" if e.account_id else "")
        + f": {amount(e.amount)} {e.currency}, owner {n(e.owner_id)}, {e.stage}, closing {e.expected_close}"),
    Deal.StageChanged: lambda e, n: f"deal {n(e.originator_id)} moved from {e.previous_stage} to {e.stage}",
    Deal.AmountChanged: lambda e, n: (
        f"deal {n(e.originator_id)} amount {amount(e.previous_amount)} → {amount(e.amount)}"),
    Deal.ExpectedCloseChanged: lambda e, n: (
        f"deal {n(e.originator_id)} expected close {e.previous_expected_close} → {e.expected_close}"),
    Deal.Reassigned: lambda e, n: (
        f"deal {n(e.originator_id)} reassigned from {n(e.previous_owner_id)} to {n(e.owner_id)}"),
    Deal.Won: lambda e, n: f"deal {n(e.originator_id)} won at {amount(e.amount)}",
    Deal.Lost: lambda e, n: f"deal {n(e.originator_id)} lost at {e.previous_stage}",
    Deal.Reopened: lambda e, n: f"deal {n(e.originator_id)} reopened at {e.stage}",
    Activity.Logged: lambda e, n: f"{e.kind} logged by {n(e.member_id)}" + (
        f" on deal {n(e.deal_id)}" if e.deal_id else ""),
}


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


@dataclass(frozen=True)
class _Entry:
    entity: str
    entity_id: UUID
    changes: dict[str, dict[str, Any]]
    summary: str


def _values(committed: Change, stretch: Change) -> dict[str, dict[str, Any]]:
    return _diff({"committed": committed, "stretch": stretch})


def _target_entries(e: Any, n: Namer) -> list[_Entry]:
    if isinstance(e, Plan.TargetSet):
        scope = {k: v for k, v in e.scope.items() if v is not None}
        pairs: dict[str, Change] = {k: (None, v) for k, v in (("metric", e.metric), ("period", e.period),
                                                              *scope.items(), ("parent_id", e.parent_id))}
        summary = f"target {n(e.target_id)} set: committed {amount(e.committed)}" + (
            f", stretch {amount(e.stretch)}" if e.stretch is not None else "")
        return [_Entry("target", e.target_id, {**_diff(pairs), **_values((None, e.committed), (None, e.stretch))},
                       summary)]
    if isinstance(e, Plan.TargetDecomposed):
        children = [c["target_id"] for c in e.children]
        parent = _Entry("target", e.parent_id, _diff({
            "decomposed_by": (None, e.by), "method": (None, e.method), "residue_to": (None, e.residue_to),
            "children": (None, children),
        }), f"target {n(e.parent_id)} decomposed by {e.by} ({e.method}) into {len(children)} targets")
        return [parent] + [
            _Entry("target", c["target_id"], {
                **_diff({"period": (None, c["period"]), **{k: (None, v) for k, v in c["scope"].items()},
                         "parent_id": (None, e.parent_id)}),
                **_values((None, c["committed"]), (None, c["stretch"])),
            }, f"target {n(c['target_id'])} added by decomposing {n(e.parent_id)}: committed {amount(c['committed'])}"
               + (f", stretch {amount(c['stretch'])}" if c["stretch"] is not None else ""))
            for c in e.children
        ]
    if isinstance(e, Plan.TargetRevised):
        where = ""
        if e.absorb == "parent":
            where = " (its parent changes with it)"
        elif e.absorb:
            where = f" ({n(UUID(e.absorb))} absorbs the difference)"
        return [_Entry("target", e.target_id,
                       _values((e.previous_committed, e.committed), (e.previous_stretch, e.stretch)),
                       f"target {n(e.target_id)} revised: "
                       f"{_moves(e.previous_committed, e.committed, e.previous_stretch, e.stretch)}{where}"),
                *_effect_entries(e, n, f"revising {n(e.target_id)}")]
    assert isinstance(e, Plan.TargetRemoved)
    return [
        _Entry("target", t, _diff({"removed": (False, True)}),
               f"target {n(t)} removed" + (f" with its parent {n(e.target_id)}" if t != e.target_id else ""))
        for t in e.removed_ids
    ] + _effect_entries(e, n, f"removing {n(e.target_id)}")


def _moves(before: Decimal, after: Decimal, before_stretch: Decimal | None, after_stretch: Decimal | None) -> str:
    parts = []
    if after != before:
        parts.append(f"committed {amount(before)} → {amount(after)}")
    if after_stretch != before_stretch:
        parts.append(f"stretch {amount(before_stretch)} → {amount(after_stretch)}")
    return "; ".join(parts)


_HOW: Final = {"rolled_up": "rolled up", "absorbed": "absorbed the difference", "re_spread": "re-spread"}


def _effect_entries(e: Plan.TargetRevised | Plan.TargetRemoved, n: Namer, cause: str) -> list[_Entry]:
    """One row per target the change moved besides the one it names, each saying how and why."""
    return [
        _Entry("target", x["target_id"],
               _values((x["previous_committed"], x["committed"]), (x["previous_stretch"], x["stretch"])),
               f"target {n(x['target_id'])} {_HOW.get(x['via'], x['via'])} by {cause}: "
               f"{_moves(x['previous_committed'], x['committed'], x['previous_stretch'], x['stretch'])}")
        for x in e.effects
    ]


TARGET_EVENTS: Final = (Plan.TargetSet, Plan.TargetDecomposed, Plan.TargetRevised, Plan.TargetRemoved)


def audit_rows(envelope: Envelope, subjects: Mapping[UUID, Subject]) -> tuple[list[AuditRow], dict[UUID, Subject]]:
    """The audit rows of one event, and the subjects it creates or renames.

    ``subjects`` must hold every entity the event mentions that is known (see
    ``referenced_ids``); summaries show unknown ones by a short id.
    """
    e = envelope.event
    learnt = learn(e, subjects)
    n = Namer(learnt, subjects)
    entity = type(e).__qualname__.split(".")[0].lower()
    if isinstance(e, TARGET_EVENTS):
        entries = _target_entries(e, n)
    else:
        describe = _SUMMARIES.get(type(e))
        summary = describe(e, n) if describe else f"{entity} {n(e.originator_id)}: {_words(type(e).__name__)}"
        entries = [_Entry(entity, e.originator_id, event_changes(e), summary)]
    plan_id: UUID | None = None
    if entity == "plan":
        plan_id = e.originator_id
    elif entity == "task":
        known = learnt.get(e.originator_id) or subjects.get(e.originator_id)
        plan_id = known.plan_id if known is not None else None
    rows = [
        AuditRow(
            position=envelope.position, seq=seq, recorded_at=envelope.recorded_at,
            effective_at=getattr(e, "effective_at", envelope.recorded_at), actor=getattr(e, "actor", ""),
            entity=entry.entity, entity_id=entry.entity_id, plan_id=plan_id, event_type=envelope.type,
            summary=entry.summary, changes=entry.changes, reason=getattr(e, "reason", "") or "",
        )
        for seq, entry in enumerate(entries)
    ]
    return rows, learnt


# --- the view ------------------------------------------------------------------------------


class AuditProjection(Projection):
    """Answers "who changed what, when and why": every change of every entity, in log order."""

    name = "audit"
    fold_version = 1
    topics = ()  # every event of every aggregate

    def define_tables(self) -> None:
        self.history = self.table(
            "audit_history",
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True),
            sa.Column("recorded_at", UTCDateTime, nullable=False),
            sa.Column("effective_at", UTCDateTime, nullable=False),
            sa.Column("actor", sa.Text, nullable=False),  # unvalidated upstream: no length to overflow
            sa.Column("entity", sa.String(20), nullable=False),
            sa.Column("entity_id", sa.Uuid, nullable=False),
            sa.Column("plan_id", sa.Uuid, nullable=True),
            sa.Column("event_type", sa.String(100), nullable=False),
            sa.Column("summary", sa.Text, nullable=False),
            sa.Column("changes", sa.Text, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            # Each filter's index ends in the page order, so a filtered page is one range scan.
            indexes=[("entity", "position", "seq"), ("entity_id", "position", "seq"), ("actor", "position", "seq"),
                     ("plan_id", "position", "seq"), ("recorded_at",), ("effective_at",)],
        )
        self.subjects = self.table(
            "audit_subjects",
            sa.Column("entity_id", sa.Uuid, primary_key=True),
            sa.Column("entity", sa.String(20), nullable=False),
            sa.Column("label", sa.Text, nullable=False),
            sa.Column("plan_id", sa.Uuid, nullable=True),
            sa.Column("metric", sa.String(30), nullable=True),
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        wanted: set[UUID] = set()
        for envelope in batch:
            wanted |= referenced_ids(envelope.event)
        subjects = self._prefetch(conn, wanted)
        stored = set(subjects)
        changed: dict[UUID, Subject] = {}
        rows: list[dict[str, Any]] = []
        for envelope in batch:
            entries, learnt = audit_rows(envelope, subjects)
            subjects.update(learnt)
            changed.update(learnt)
            # A shallow field copy: dataclasses.asdict deep-copies every row and was half the fold's time.
            rows.extend({**{f.name: getattr(r, f.name) for f in _ROW_FIELDS},
                         "changes": json.dumps(r.changes, sort_keys=True, ensure_ascii=False)} for r in entries)
        if rows:
            conn.execute(self.history.insert(), rows)
        new = [_subject_row(k, s) for k, s in changed.items() if k not in stored]
        if new:
            conn.execute(self.subjects.insert(), new)
        renamed = [_subject_row(k, s, prefix="b_") for k, s in changed.items() if k in stored]
        if renamed:
            c = self.subjects.c
            conn.execute(
                self.subjects.update().where(c.entity_id == sa.bindparam("b_entity_id")).values(
                    entity=sa.bindparam("b_entity"), label=sa.bindparam("b_label"),
                    plan_id=sa.bindparam("b_plan_id"), metric=sa.bindparam("b_metric")),
                renamed,
            )

    def _prefetch(self, conn: Connection, ids: Iterable[UUID]) -> dict[UUID, Subject]:
        found: dict[UUID, Subject] = {}
        wanted = sorted(ids)
        c = self.subjects.c
        for i in range(0, len(wanted), 500):
            for r in conn.execute(sa.select(self.subjects).where(c.entity_id.in_(wanted[i : i + 500]))):
                found[r.entity_id] = Subject(r.entity, r.label, r.plan_id, r.metric)
        return found


def _subject_row(entity_id: UUID, s: Subject, prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}entity_id": entity_id, f"{prefix}entity": s.entity, f"{prefix}label": s.label,
            f"{prefix}plan_id": s.plan_id, f"{prefix}metric": s.metric}


LIVE = AuditProjection()
"""The live tables, for queries."""



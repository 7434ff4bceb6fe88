"""Request and response models: the API's wire format, and the first line of input validation.

Money and other decimals travel as strings ("1200.50"), times as RFC 3339 with an offset,
days as ISO dates. Every request model forbids unknown fields (no mass assignment); every
string is bounded and refuses NUL and lone surrogates (PostgreSQL cannot store them).
Validation failures carry a stable ``type`` (e.g. ``money.negative``) that ``api.errors``
turns into the problem's rule. Business rules stay in the domain: these models only make
sure that what reaches it is well formed.
"""

from __future__ import annotations

import re
from dataclasses import fields as dataclass_fields
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from types import UnionType
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin, get_type_hints
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from domain import values as v
from domain.decomposition import METHODS, SPREAD_METHODS
from domain.plan import DECOMPOSE_BY, REMOVE_MODES

# --- scalar types ------------------------------------------------------------------------

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    if "\x00" in value or _SURROGATE.search(value):
        raise PydanticCustomError("text.invalid_character", "must not contain a NUL character or a lone surrogate")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(clean_text)]
ShortText = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(clean_text)]
Email = Annotated[str, Field(max_length=254), AfterValidator(clean_text)]
Reason = Annotated[str, Field(max_length=1000), AfterValidator(clean_text)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")]
PeriodKey = Annotated[
    str, Field(min_length=4, max_length=8, description="2026, 2026-Q2, 2026-03 or 2026-W14 (ISO week)"),
    AfterValidator(clean_text),
]

_DECIMAL_RE: Final = re.compile(r"^\d{1,20}(\.\d{1,12})?$")


def _decimal(value: Any) -> Decimal:
    """A non-negative, finite decimal written as a string: the domain decides the places and ranges."""
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("decimal.type", 'must be a decimal string such as "1200.50", not a JSON number')
    if len(value) > 40:
        raise PydanticCustomError("decimal.too_long", "must be at most 40 characters")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise PydanticCustomError("decimal.not_a_number", 'must be a decimal string such as "1200.50"') from None
    if not amount.is_finite():
        raise PydanticCustomError("decimal.not_finite", "must be a finite number")
    if amount < 0:
        raise PydanticCustomError("decimal.negative", "must not be negative")
    if not _DECIMAL_RE.match(value):
        raise PydanticCustomError("decimal.format", 'must be plain digits with an optional fraction, such as "1200.50"')
    return amount


DecimalString = Annotated[
    Decimal,
    BeforeValidator(_decimal),
    PlainSerializer(lambda d: str(d), return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,20}(\.\d{1,12})?$", "examples": ["1200.50"]}),
]
"""A non-negative decimal as a string (money, counts, weights, shares)."""

DecimalOut = Annotated[
    Decimal,
    PlainSerializer(lambda d: str(d), return_type=str),
    WithJsonSchema({"type": "string", "examples": ["1200.50"]}),
]

_RFC3339: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("time.type", "must be an RFC 3339 string such as 2026-03-31T17:00:00+02:00")
    if not _RFC3339.match(value):
        if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", value):
            raise PydanticCustomError("time.naive", "must carry a timezone offset (Z or +02:00)")
        raise PydanticCustomError("time.format", "must be RFC 3339 with an offset, such as 2026-03-31T17:00:00+02:00")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
        if not 1900 <= parsed.year <= 2999:
            raise ValueError("year out of range")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise PydanticCustomError("time.invalid", "is not a real time (check the day, month, hour and offset)") from None


Instant = Annotated[
    datetime,
    BeforeValidator(_instant),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-03-31T17:00:00+02:00"]}),
]
"""A time as RFC 3339 with an offset; naive times are refused."""


def _day(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}$", value):
        raise PydanticCustomError("date.format", "must be an ISO date such as 2026-03-31")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("date.invalid", "is not a real date") from None
    if not 1900 <= day.year <= 2999:
        raise PydanticCustomError("date.range", "year must be between 1900 and 2999")
    return day


Day = Annotated[date, BeforeValidator(_day), WithJsonSchema({"type": "string", "format": "date", "examples": ["2026-06-30"]})]

Stage = Literal["lead", "qualified", "needs_analysis", "proposal", "negotiation", "won", "lost"]
OpenStage = Literal["lead", "qualified", "needs_analysis", "proposal", "negotiation"]
Metric = Literal["revenue", "deals_won", "new_deals", "activities", "win_rate", "average_order_value"]
ActivityKind = Literal["call", "visit", "meeting", "demo", "email"]
MemberRole = Literal["rep", "manager"]
DecomposeBy = Literal["period", "unit", "member", "product_line", "region", "segment"]
DecomposeMethod = Literal["equal", "weights", "history", "values"]
SpreadMethod = Literal["proportional", "equal", "weights", "values"]
RemoveMode = Literal["subtree", "respread"]

# The wire enums are the domain's lists, spelled out for the type checker: keep them equal.
assert get_args(Stage) == v.STAGES
assert get_args(OpenStage) == v.OPEN_STAGES
assert get_args(Metric) == v.METRICS
assert get_args(ActivityKind) == v.ACTIVITY_KINDS
assert get_args(MemberRole) == v.MEMBER_ROLES
assert get_args(DecomposeBy) == DECOMPOSE_BY
assert get_args(DecomposeMethod) == METHODS
assert get_args(SpreadMethod) == SPREAD_METHODS
assert get_args(RemoveMode) == REMOVE_MODES

MAX_PARTS: Final = 200


# --- requests ----------------------------------------------------------------------------


class Body(BaseModel):
    """Every command: unknown fields refused; ``effective_at`` back-dates it (business time)."""

    model_config = ConfigDict(extra="forbid")

    effective_at: Instant | None = Field(
        default=None, description="When it happened in the business (default: now); never in the future."
    )


class CreateBody(Body):
    id: UUID | None = Field(default=None, description="Client-chosen id (default: a new UUID).")


class AddUnit(CreateBody):
    name: Name
    parent_id: UUID | None = None


class RenameBody(Body):
    name: Name


class MoveUnit(Body):
    parent_id: UUID | None
    reason: Reason


class ReasonBody(Body):
    reason: Reason


class OptionalReasonBody(Body):
    reason: Reason | None = None


class AddMember(CreateBody):
    name: Name
    role: MemberRole
    unit_id: UUID
    email: Email = ""


class MoveMember(Body):
    unit_id: UUID
    reason: Reason | None = None


class AddProduct(CreateBody):
    name: Name
    product_line: Name
    list_price: DecimalString
    currency: Currency


class ChangeListPrice(Body):
    list_price: DecimalString


class AddAccount(CreateBody):
    name: Name
    segment: Name
    region: Name


class ReclassifyAccount(Body):
    segment: Name
    region: Name


class DraftPlan(CreateBody):
    name: Name
    span: PeriodKey = Field(description="A fiscal year (2026) or a quarter (2026-Q2)")
    currency: Currency
    unit_id: UUID


class ScopeIn(BaseModel):
    """Whose target: exactly one of unit_id or member_id, optionally narrowed."""

    model_config = ConfigDict(extra="forbid")

    unit_id: UUID | None = None
    member_id: UUID | None = None
    product_line: ShortText | None = None
    region: ShortText | None = None
    segment: ShortText | None = None


class SetTarget(Body):
    metric: Metric
    period: PeriodKey
    scope: ScopeIn
    committed: DecimalString
    stretch: DecimalString | None = None
    currency: Currency | None = None
    reason: Reason | None = None
    target_id: UUID | None = None


class DecomposeTarget(Body):
    """Split a target along one axis; a target may be decomposed once per axis (period; owner, by unit
    or by member; product line; region; segment), so a year can be split by quarter *and* by rep.

    Children lie within their parent: periods inside its period (a month splits into the ISO weeks
    that overlap it, each clipped to the month; ``equal`` then shares by days), units beneath its
    unit, members who belonged to its unit or beneath at the period's start, narrowings that narrow.
    """

    parent_id: UUID
    by: DecomposeBy
    parts: list[ShortText] = Field(min_length=1, max_length=MAX_PARTS)
    method: DecomposeMethod = "equal"
    weights: list[DecimalString] | None = Field(default=None, max_length=MAX_PARTS)
    history: list[DecimalString] | None = Field(default=None, max_length=MAX_PARTS)
    values: list[DecimalString] | None = Field(default=None, max_length=MAX_PARTS)
    residue_to: int = Field(default=0, ge=0, lt=MAX_PARTS, description="Index of the part that takes the rounding residue")
    reason: Reason | None = None


class SpreadIn(BaseModel):
    """How to re-spread one decomposition the revision touches (the others keep their proportions)."""

    model_config = ConfigDict(extra="forbid")

    target_id: UUID | None = Field(default=None, description="The decomposed target (default: the revised one)")
    by: DecomposeBy = Field(description="Which of its decompositions (unit and member name the same one)")
    method: SpreadMethod = "proportional"
    weights: dict[UUID, DecimalString] | None = Field(
        default=None, max_length=MAX_PARTS, description="Child target id → weight; the weights sum to 1")
    values: dict[UUID, DecimalString] | None = Field(
        default=None, max_length=MAX_PARTS, description="Child target id → committed value; they sum to the parent")
    residue_to: UUID | None = Field(
        default=None, description="The child that takes the rounding residue (default: the one that took it when "
                                  "the target was decomposed)")


Absorb = Annotated[str, Field(
    pattern=r"^(parent|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})$",
    description='Where a child\'s difference goes: "parent" (it changes with it, and so on up; each ancestor\'s '
                "other decompositions re-spread) or a sibling's target id (refused if it would go negative)",
    examples=["parent"],
)]


class ReviseTarget(Body):
    """Revise a target; everything that must move with it moves in the same event."""

    target_id: UUID
    committed: DecimalString | None = None
    stretch: DecimalString | None = None
    clear_stretch: bool = False
    absorb: Absorb | None = Field(default=None, description="Required when the target is a decomposition's child")
    spread: list[SpreadIn] = Field(default_factory=list, max_length=50,
                                   description="Explicit re-spreads; any decomposition not named goes proportionally")
    reason: Reason | None = None


class RemoveTarget(Body):
    """Remove a target and everything beneath it."""

    target_id: UUID
    mode: RemoveMode | None = Field(
        default=None, description="Required for a decomposition's child: subtree (the parent shrinks with it; the "
                                  "last child of a decomposition leaves its parent as it is) or respread (its "
                                  "siblings take its value, the parent keeps its sum)")
    method: Literal["proportional", "equal"] = Field(default="proportional", description="How respread shares it")
    residue_to: UUID | None = Field(default=None, description="The sibling that takes the rounding residue")
    reason: Reason | None = None


class LockPeriod(Body):
    """Lock a period of the plan: its figures are final. Later entries inside it are still accepted."""

    period: PeriodKey
    reason: Reason


class UnlockPeriod(Body):
    period: PeriodKey
    reason: Reason


class PublishPlan(Body):
    note: Reason = ""


class ClosePlan(Body):
    reason: Reason = ""


class CreateTask(CreateBody):
    title: Name
    assignee_id: UUID
    due: Day
    plan_id: UUID | None = None
    target_id: UUID | None = None


class ReassignTask(Body):
    assignee_id: UUID
    reason: Reason


class RescheduleTask(Body):
    due: Day
    reason: Reason


class ReportTaskProgress(Body):
    progress: int = Field(ge=0, le=100)
    note: Reason = ""


class CompleteTask(Body):
    outcome: Reason = ""


class OpenDeal(CreateBody):
    name: Name
    account_id: UUID | None = None
    owner_id: UUID
    product_id: UUID
    amount: DecimalString
    currency: Currency
    expected_close: Day
    stage: OpenStage = "lead"


class ChangeDealStage(Body):
    stage: Stage
    reason: Reason | None = None


class ChangeDealAmount(Body):
    amount: DecimalString
    reason: Reason | None = None


class ChangeDealExpectedClose(Body):
    expected_close: Day
    reason: Reason | None = None


class ReassignDeal(Body):
    owner_id: UUID
    reason: Reason


class WinDeal(Body):
    amount: DecimalString | None = Field(default=None, description="The amount as won (default: the deal's amount)")


class ReopenDeal(Body):
    reason: Reason
    stage: OpenStage = "negotiation"


class LogActivity(CreateBody):
    kind: ActivityKind
    member_id: UUID
    deal_id: UUID | None = None
    note: Reason = ""


# --- responses ---------------------------------------------------------------------------


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Paged(Out):
    """A page of a list: every list pages the same way (``limit``, ``cursor`` → ``next_cursor``)."""

    next_cursor: str | None = Field(description="Pass as `cursor` for the next page, unchanged (null: the last page)")


def _absent(value: Any) -> bool:
    return value is None


class CommandOut(Out):
    """What a command answers: the entity, its new version and the log position of its events."""

    id: UUID
    version: int
    position: int = Field(description="Log position of the command's last event: pass it as wait_for_position")
    # Details only some commands have: left out of the answer when they do not apply.
    target_id: UUID | None = Field(default=None, exclude_if=_absent, description="set_target: the new target")
    child_ids: list[UUID] | None = Field(default=None, exclude_if=_absent,
                                         description="decompose: the children, in the order of parts")
    plan_version: int | None = Field(default=None, exclude_if=_absent, description="publish: the version frozen")
    affected_ids: list[UUID] | None = Field(
        default=None, exclude_if=_absent,
        description="revise, remove-target: every other target the change moved (rolled up, absorbed, re-spread)")


class EntityOut(Out):
    id: UUID
    version: int
    last_effective_at: datetime


class UnitOut(EntityOut):
    name: str
    parent_id: UUID | None
    active: bool


class MemberOut(EntityOut):
    name: str
    role: str
    unit_id: UUID
    email: str
    active: bool


class ProductOut(EntityOut):
    name: str
    product_line: str
    list_price: DecimalOut
    currency: str


class AccountOut(EntityOut):
    name: str
    segment: str
    region: str


class ScopeOut(Out):
    unit_id: UUID | None
    member_id: UUID | None
    product_line: str | None
    region: str | None
    segment: str | None


class TargetOut(Out):
    target_id: UUID
    metric: str
    period: str
    start: date = Field(description="First day the target covers")
    end: date = Field(description="Day after the last it covers (a week clipped to its month covers part of it)")
    scope: ScopeOut
    committed: DecimalOut
    stretch: DecimalOut | None
    parent_id: UUID | None


class DecompositionOut(Out):
    parent_id: UUID
    by: str
    children: list[UUID]
    residue_to: UUID


class LockedPeriodOut(Out):
    period: str
    start: date
    end: date


class PlanOut(EntityOut):
    name: str
    span: str
    currency: str
    unit_id: UUID
    status: str
    published_version: int
    unpublished_changes: bool
    targets: list[TargetOut]
    decompositions: list[DecompositionOut]
    locked_periods: list[LockedPeriodOut]


class TaskOut(EntityOut):
    title: str
    assignee_id: UUID
    due: date
    plan_id: UUID | None
    target_id: UUID | None
    status: str
    progress: int
    outcome: str


class DealOut(EntityOut):
    name: str
    account_id: UUID | None
    owner_id: UUID
    product_id: UUID
    product_line: str
    region: str
    segment: str
    amount: DecimalOut
    currency: str
    expected_close: date
    stage: str
    allowed_next_stages: list[str]


class ActivityOut(EntityOut):
    kind: str
    member_id: UUID
    deal_id: UUID | None
    note: str


class MeOut(Out):
    role: str
    member_id: UUID | None
    token_id: str | None
    label: str


class RebuildFailureOut(Out):
    """The projection's last rebuild failed at its swap and was rolled back: the live tables still answer."""

    generation: int = Field(description="The generation that was being built")
    error: str
    failed_at: datetime


class ProjectionStatusOut(Out):
    name: str
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    status: str
    generation: int
    fold_version: int
    code_fold_version: int
    error: str | None
    error_position: int | None
    last_rebuild_failure: RebuildFailureOut | None = Field(
        default=None, description="Set while the last rebuild of this projection has failed (cleared by a good one)")


class ProjectionsOut(Out):
    head: int
    projections: list[ProjectionStatusOut]


class EventEnvelopeOut(Out):
    """What every event in the change feed carries; ``type`` says which ``data`` follows."""

    position: int = Field(description="The event's log position")
    entity: str
    entity_id: UUID
    version: int = Field(description="The entity's version after this event")
    actor: str
    effective_at: datetime
    recorded_at: datetime


class HealthOut(Out):
    status: str


class ReadyOut(Out):
    status: str
    database: str
    projections: list[ProjectionStatusOut]


class ProblemItem(Out):
    detail: str
    rule: str
    pointer: str | None = None
    parameter: str | None = None
    allowed: list[str] | None = None


class Problem(BaseModel):
    """An RFC 9457 problem: ``type`` names the domain rule, ``pointer`` the offending field."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    rule: str
    pointer: str | None = None
    parameter: str | None = None
    errors: list[ProblemItem] | None = None


# --- audit, plan versions, pipeline and tasks ------------------------------------------------------


AuditValue = str | int | bool | list[Any] | dict[str, Any] | None
"""A field's value as the event recorded it: decimals, ids, dates and times as strings."""


class AuditChangeOut(Out):
    """One field of one change: its value before (null: it did not exist or the event does not say) and after."""

    before: AuditValue
    after: AuditValue


class AuditRowOut(Out):
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
    changes: dict[str, AuditChangeOut] = Field(description="What the change did, by field")
    reason: str


class AuditOut(Paged):
    position: int = Field(description="The log position the audit history has reached")
    rows: list[AuditRowOut]


class VersionTargetOut(Out):
    target_id: UUID
    parent_id: UUID | None
    metric: str
    period: str
    unit_id: UUID | None
    member_id: UUID | None
    product_line: str | None
    region: str | None
    segment: str | None
    committed: DecimalOut
    stretch: DecimalOut | None


class PlanVersionOut(Out):
    plan_id: UUID
    version: int
    position: int = Field(description="Log position of its publication")
    recorded_at: datetime
    effective_at: datetime
    actor: str
    note: str


class PlanVersionsOut(Out):
    position: int
    versions: list[PlanVersionOut]


class VersionTreeOut(Out):
    position: int
    version: PlanVersionOut
    targets: list[VersionTargetOut]


class VersionChangeOut(Out):
    plan_id: UUID
    position: int
    seq: int
    recorded_at: datetime
    effective_at: datetime
    actor: str
    target_id: UUID
    metric: str
    period: str
    kind: str
    before_committed: DecimalOut | None
    after_committed: DecimalOut | None
    before_stretch: DecimalOut | None
    after_stretch: DecimalOut | None
    reason: str
    draft_of_version: int


class StageStayOut(Out):
    stage: str
    reason: str
    entered_at: datetime
    left_at: datetime | None
    days: DecimalOut


class PipelineDealOut(Out):
    deal_id: UUID
    name: str
    owner_id: UUID
    owner_name: str | None
    unit_id: UUID | None = Field(description="Where the deal counts: its owner's unit when it closed, or now")
    unit_name: str | None
    account_id: UUID | None
    account_name: str | None
    product_id: UUID
    product_name: str | None
    product_line: str
    region: str
    segment: str
    currency: str
    amount: DecimalOut
    stage: str
    status: str
    expected_close: date
    opened_at: datetime
    closed_at: datetime | None
    stage_entered_at: datetime
    last_stage_change_at: datetime | None
    days_in_stage: DecimalOut
    position: int
    changed_at: datetime
    stages: list[StageStayOut]


class PipelineOut(Paged):
    position: int
    at: datetime
    deals: list[PipelineDealOut]


class StageSummaryRowOut(Out):
    currency: str
    stage: str
    count: int
    amount: DecimalOut
    weighted_amount: DecimalOut
    average_days_in_stage: DecimalOut | None


class StageSummaryOut(Out):
    position: int
    at: datetime
    rows: list[StageSummaryRowOut]


class TaskViewOut(Out):
    task_id: UUID
    title: str
    assignee_id: UUID
    due: date
    plan_id: UUID | None
    target_id: UUID | None
    status: str
    progress: int
    created_at: datetime
    completed_at: datetime | None
    overdue: bool
    position: int


class TasksOut(Paged):
    position: int
    at: datetime
    tasks: list[TaskViewOut]


class MemberTaskSummaryOut(Out):
    member_id: UUID
    name: str
    unit_id: UUID | None
    open: int
    overdue: int
    done: int
    cancelled: int


class TaskSummaryOut(Out):
    position: int
    at: datetime
    members: list[MemberTaskSummaryOut]


# --- retrospectives: replay, baseline, attribution, revision reasons ------------------------------

ReportPeriod = Annotated[str, Field(pattern=r"^\d{4}-(\d{2}-\d{2}|W\d{2})$",
                                    description="A day (2026-03-20) or an ISO week (2026-W12)")]


class RevisionReasonOut(Out):
    plan_id: UUID
    target_id: UUID
    position: int
    effective_at: datetime
    recorded_at: datetime
    actor: str
    kind: str = Field(description="set | decomposed | revised | removed")
    before: DecimalOut | None
    after: DecimalOut | None
    before_stretch: DecimalOut | None
    after_stretch: DecimalOut | None
    reason: str


class RevisionReasonsOut(Out):
    position: int
    plan_id: UUID
    reasons: list[RevisionReasonOut]


AlertKind = Literal["target_behind", "target_at_risk", "coverage_low", "deal_stalled", "task_overdue"]


class AlertOut(Out):
    id: UUID
    kind: str
    subject_type: str
    subject_id: UUID
    period: str
    unit_id: UUID | None
    owner_id: UUID | None
    owner_ids: list[UUID]
    message: str
    details: dict[str, str]
    occurrence: int
    raised_at: datetime
    raised_position: int
    evaluated_at: datetime
    evaluated_position: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_position: int | None
    is_open: bool


class AlertRunOut(Out):
    at: datetime
    position: int
    raised: int
    resolved: int
    open: int


class AlertsOut(Paged):
    position: int = Field(description="The log position of the last evaluation (0: never evaluated)")
    last_run: AlertRunOut | None
    alerts: list[AlertOut]


class AlertCandidateOut(Out):
    id: UUID
    kind: str
    subject_type: str
    subject_id: UUID
    period: str
    unit_id: UUID | None
    owner_ids: list[UUID]
    message: str
    details: dict[str, str]


class AlertPreviewOut(Out):
    position: int
    at: datetime
    alerts: list[AlertCandidateOut]


class AddWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(clean_text)]
    secret: Annotated[str, Field(min_length=16, max_length=200), AfterValidator(clean_text)] = Field(
        description="Signs every delivery (HMAC-SHA256); never read back")
    active: bool = True


class ChangeWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool


class WebhookOut(Out):
    id: UUID
    url: str
    active: bool


class WebhooksOut(Paged):
    webhooks: list[WebhookOut]


class DeliveryOut(Out):
    id: UUID
    alert_id: UUID
    webhook_id: UUID
    event: str
    occurrence: int
    body: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str | None


class DeliveriesOut(Paged):
    deliveries: list[DeliveryOut]


# --- collections: what pickers, tables and trees list ------------------------------------------


class UnitRowOut(Out):
    unit_id: UUID
    name: str
    parent_id: UUID | None
    parent_name: str | None
    active: bool
    changed_at: datetime = Field(description="Effective time of the unit's latest change at the cut")


class UnitsOut(Paged):
    position: int = Field(description="The log position this page was read at")
    rows: list[UnitRowOut]


class MemberRefOut(Out):
    member_id: UUID
    name: str
    role: str
    active: bool


class UnitNodeOut(Out):
    unit_id: UUID
    name: str
    active: bool
    members: list[MemberRefOut] = Field(description="Only with members=true")
    children: list[UnitNodeOut]


class UnitTreeOut(Out):
    position: int
    roots: list[UnitNodeOut]


class MemberRowOut(Out):
    member_id: UUID
    name: str
    role: str
    unit_id: UUID
    unit_name: str | None
    active: bool
    changed_at: datetime


class MembersOut(Paged):
    position: int
    rows: list[MemberRowOut]


class ProductRowOut(Out):
    product_id: UUID
    name: str
    product_line: str
    list_price: DecimalOut
    currency: str
    changed_at: datetime


class ProductsOut(Paged):
    position: int
    rows: list[ProductRowOut]


class AccountRowOut(Out):
    account_id: UUID
    name: str
    segment: str
    region: str
    changed_at: datetime


class AccountsOut(Paged):
    position: int
    rows: list[AccountRowOut]


class PlanRowOut(Out):
    plan_id: UUID
    name: str
    span: str
    currency: str
    unit_id: UUID
    unit_name: str | None
    status: str
    published_version: int = Field(description="The latest published version (0: never published)")
    changed_at: datetime


class PlansOut(Paged):
    position: int
    rows: list[PlanRowOut]


class PublishedValueOut(Out):
    version: int
    committed: DecimalOut
    stretch: DecimalOut | None


class TargetNodeOut(Out):
    target_id: UUID
    parent_id: UUID | None
    depth: int = Field(description="0 for a top target; children come right after their parent")
    metric: str
    period: str
    period_start: date
    period_end: date = Field(description="Exclusive")
    unit_id: UUID | None
    unit_name: str | None
    member_id: UUID | None
    member_name: str | None
    product_line: str | None
    region: str | None
    segment: str | None
    committed: DecimalOut = Field(description="At the cut (unpublished changes included)")
    stretch: DecimalOut | None
    removed: bool
    changed_at: datetime
    versions: list[PublishedValueOut] = Field(description="Its values in each published version it was part of")


class PlanTargetsOut(Paged):
    position: int
    plan_id: UUID
    plan_name: str
    currency: str
    published_versions: list[int]
    rows: list[TargetNodeOut] = Field(description="In tree order: every parent before its children")


class ActivityRowOut(Out):
    activity_id: UUID
    kind: str
    member_id: UUID
    member_name: str | None
    unit_id: UUID | None = Field(description="The unit the member was in when it happened")
    unit_name: str | None
    deal_id: UUID | None
    deal_name: str | None
    account_id: UUID | None
    account_name: str | None
    effective_at: datetime
    recorded_at: datetime
    position: int


class ActivitiesOut(Paged):
    position: int
    rows: list[ActivityRowOut]


# --- the change feed: one schema per event type, derived from the event classes ------------------

_ENVELOPE_FIELDS: Final = frozenset({"originator_id", "originator_version", "timestamp", "actor", "effective_at",
                                     "originator_topic"})


def event_classes() -> dict[str, type[Any]]:
    """Every event type the aggregates declare, by its feed name (``Deal.Won``).

    The library gives each aggregate a base ``Event`` and a default ``Created`` it never
    uses when the aggregate declares its own creation event: neither is ever stored.
    """
    from domain.aggregate import SalesAggregate
    from domain.application import ENTITY_NAMES

    found: dict[str, type[Any]] = {}
    for aggregate in ENTITY_NAMES:
        nested = [c for c in vars(aggregate).values() if isinstance(c, type) and issubclass(c, SalesAggregate.Event)]
        creators = [c for c in nested if issubclass(c, SalesAggregate.Created)]
        for cls in nested:
            if cls.__name__ == "Event" or (cls.__name__ == "Created" and len(creators) > 1):
                continue
            found[cls.__qualname__] = cls
    return dict(sorted(found.items()))


def _wire_type(annotation: Any) -> Any:
    """An event field's type as the feed carries it (decimals as strings)."""
    origin = get_origin(annotation)
    if origin in (UnionType, Union):
        return Union[tuple(_wire_type(a) for a in get_args(annotation))]  # noqa: UP007 — built at run time
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        return list[_wire_type(item)]  # type: ignore[misc]
    if origin is dict:
        return dict[str, Any]
    if annotation is Decimal:
        return DecimalOut
    return annotation


def _data_model(name: str, cls: type[Any]) -> type[Out]:
    hints = get_type_hints(cls)
    fields: dict[str, Any] = {
        f.name: (_wire_type(hints[f.name]), ...) for f in dataclass_fields(cls) if f.name not in _ENVELOPE_FIELDS
    }
    model: type[Out] = create_model(f"{name.replace('.', '')}Data", __base__=Out,
                                    __doc__=f"The data of a {name} event.", **fields)
    return model


def _event_model(name: str, cls: type[Any]) -> type[EventEnvelopeOut]:
    model: type[EventEnvelopeOut] = create_model(
        f"{name.replace('.', '')}Event", __base__=EventEnvelopeOut, __doc__=f"A {name} event in the change feed.",
        type=(Literal[name], Field(description="The event's type: which data follows")),  # type: ignore[valid-type,arg-type]
        data=(_data_model(name, cls), ...),
    )
    return model


EVENT_MODELS: Final = {name: _event_model(name, cls) for name, cls in event_classes().items()}
"""One response schema per event type; a new event class gets its own without anyone listing it."""

EventOut = Annotated[Union[tuple(EVENT_MODELS.values())], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007


class EventsOut(Paged):
    events: list[EventOut]  # type: ignore[valid-type]
    head: int = Field(description="The log's head when this page was read")

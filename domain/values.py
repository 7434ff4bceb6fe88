"""Value objects and the checks every aggregate shares: money, periods, scopes, metrics,
deal stages, text and effective times.

Event payloads carry only primitives (str, int, Decimal, datetime, date, UUID, dicts and
lists of them): value objects are converted at the aggregate's edge so that stored events
never depend on these classes' shapes.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from uuid import UUID

from domain.errors import RuleViolation, ValidationError

# --- money -----------------------------------------------------------------------------

MONEY_PLACES: Final = 2
MONEY_MAX: Final = Decimal("1e15")
CURRENCY_RE: Final = re.compile(r"^[A-Z]{3}$")


def money(value: Any, field: str) -> Decimal:
    """A non-negative, finite amount with at most two decimal places."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise ValidationError("money.type", f"{field} must be a decimal string", field)
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValidationError("money.not_a_number", f"{field} is not a number: {value!r}", field) from None
    if not amount.is_finite():
        raise ValidationError("money.not_finite", f"{field} must be finite", field)
    if amount < 0:
        raise ValidationError("money.negative", f"{field} must not be negative", field)
    if amount >= MONEY_MAX:
        raise ValidationError("money.too_large", f"{field} must be below {MONEY_MAX:f}", field)
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -MONEY_PLACES and amount != amount.quantize(Decimal(1).scaleb(-MONEY_PLACES)):
        raise ValidationError(
            "money.too_precise", f"{field} has more than {MONEY_PLACES} decimal places", field
        )
    return amount.quantize(Decimal(1).scaleb(-MONEY_PLACES)) if exponent < -MONEY_PLACES else amount


def currency(value: str, field: str = "currency") -> str:
    if not isinstance(value, str) or not CURRENCY_RE.fullmatch(value):
        raise ValidationError("currency.format", f"{field} must be an ISO 4217 code like EUR", field)
    return value


# --- text ------------------------------------------------------------------------------

_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")


def text(value: Any, field: str, *, max_length: int = 200, required: bool = True) -> str:
    """Printable text: no NUL (PostgreSQL refuses it), no lone surrogates, bounded length."""
    if not isinstance(value, str):
        raise ValidationError("text.type", f"{field} must be a string", field)
    if "\x00" in value or _SURROGATE_RE.search(value):
        raise ValidationError("text.invalid_character", f"{field} contains a NUL or a lone surrogate", field)
    stripped: str = value.strip()
    if required and not stripped:
        raise ValidationError("text.empty", f"{field} must not be empty", field)
    if len(stripped) > max_length:
        raise ValidationError("text.too_long", f"{field} must be at most {max_length} characters", field)
    return stripped


def reason(value: str | None, field: str = "reason") -> str:
    """A non-empty why: the audit trail is made of these."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RuleViolation("reason.required", f"{field} is required for this change", field)
    return text(value, field, max_length=1000)


def optional_reason(value: str | None, field: str = "reason") -> str:
    return "" if value is None or not value.strip() else text(value, field, max_length=1000)


# --- time ------------------------------------------------------------------------------

CLOCK_SKEW: Final = timedelta(minutes=5)


def utc_now() -> datetime:
    return datetime.now(UTC)


def effective_time(value: datetime | None, now: datetime, field: str = "effective_at") -> datetime:
    """When it happened in the business: defaults to now, may be back-dated, never in the future."""
    if value is None:
        return now
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError("time.naive", f"{field} must carry a timezone offset", field)
    value = value.astimezone(UTC)
    if value > now + CLOCK_SKEW:
        raise RuleViolation("time.in_future", f"{field} {value.isoformat()} is in the future", field)
    return value


# --- periods ---------------------------------------------------------------------------

PERIOD_KINDS: Final = ("year", "quarter", "month", "week")
_PERIOD_RE: Final = re.compile(r"^(\d{4})(?:-(Q[1-4]|W\d{2}|\d{2}))?$")


@dataclass(frozen=True, order=True)
class Period:
    """A calendar span named by its key: ``2026``, ``2026-Q2``, ``2026-03`` or ``2026-W14`` (ISO)."""

    start: date
    end: date  # exclusive
    kind: str
    key: str

    @classmethod
    def parse(cls, key: str, field: str = "period") -> Period:
        # fullmatch: "$" alone would let "2026-Q1\n" through as a second name for 2026-Q1.
        match = _PERIOD_RE.fullmatch(key) if isinstance(key, str) else None
        if not match:
            raise ValidationError(
                "period.format", f"{field} must look like 2026, 2026-Q2, 2026-03 or 2026-W14", field
            )
        year = int(match.group(1))
        part = match.group(2)
        if year < 1900 or year > 2999:
            raise ValidationError("period.year_range", f"{field} year must be between 1900 and 2999", field)
        if part is None:
            return cls(date(year, 1, 1), date(year + 1, 1, 1), "year", key)
        if part.startswith("Q"):
            q = int(part[1])
            start = date(year, 3 * q - 2, 1)
            return cls(start, _add_months(start, 3), "quarter", key)
        if part.startswith("W"):
            week = int(part[1:])
            weeks_in_year = date(year, 12, 28).isocalendar()[1]
            if not 1 <= week <= weeks_in_year:
                raise ValidationError("period.week_range", f"{field}: {year} has {weeks_in_year} ISO weeks", field)
            start = date.fromisocalendar(year, week, 1)
            return cls(start, start + timedelta(days=7), "week", key)
        month = int(part)
        if not 1 <= month <= 12:
            raise ValidationError("period.month_range", f"{field} month must be 01..12", field)
        start = date(year, month, 1)
        return cls(start, _add_months(start, 1), "month", key)

    def contains(self, other: Period) -> bool:
        return self.start <= other.start and other.end <= self.end

    def contains_date(self, day: date) -> bool:
        return self.start <= day < self.end

    def children(self, kind: str) -> list[Period]:
        """The sub-periods of ``kind`` that tile this period (weeks: those starting in it)."""
        if kind not in PERIOD_KINDS or PERIOD_KINDS.index(kind) <= PERIOD_KINDS.index(self.kind):
            raise RuleViolation(
                "decomposition.period_kind", f"a {self.kind} cannot be split into {kind}s", "by"
            )
        result: list[Period] = []
        if kind == "week":
            day = self.start + timedelta(days=(7 - self.start.weekday()) % 7)
            while day < self.end:
                iso = day.isocalendar()
                result.append(Period.parse(f"{iso[0]}-W{iso[1]:02d}"))
                day += timedelta(days=7)
            return result
        step = 3 if kind == "quarter" else 1
        day = self.start
        while day < self.end:
            key = f"{day.year}-Q{(day.month + 2) // 3}" if kind == "quarter" else f"{day.year}-{day.month:02d}"
            result.append(Period.parse(key))
            day = _add_months(day, step)
        return result

    @property
    def start_at(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        return datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC)

    def elapsed_share(self, at: datetime) -> Decimal:
        """The share of the period elapsed at ``at`` (0..1): linear pacing."""
        total = (self.end_at - self.start_at).total_seconds()
        done = min(max((at - self.start_at).total_seconds(), 0.0), total)
        return Decimal(str(round(done / total, 6)))


def _add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year = day.year + month0 // 12
    month = month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


# --- metrics and scopes ----------------------------------------------------------------

ADDITIVE_METRICS: Final = ("revenue", "deals_won", "new_deals", "activities")
RATIO_METRICS: Final = ("win_rate", "average_order_value")
METRICS: Final = ADDITIVE_METRICS + RATIO_METRICS
MONEY_METRICS: Final = ("revenue", "average_order_value")


def metric(value: str, field: str = "metric") -> str:
    if value not in METRICS:
        raise ValidationError(
            "metric.unknown", f"{field} must be one of {', '.join(METRICS)}", field, allowed=list(METRICS)
        )
    return value


@dataclass(frozen=True)
class Scope:
    """Whose target: a unit or a member, optionally narrowed to a product line, region, segment."""

    unit_id: UUID | None = None
    member_id: UUID | None = None
    product_line: str | None = None
    region: str | None = None
    segment: str | None = None

    def __post_init__(self) -> None:
        if (self.unit_id is None) == (self.member_id is None):
            raise ValidationError("scope.owner", "a scope names exactly one of unit_id or member_id", "scope")

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "member_id": self.member_id,
            "product_line": self.product_line,
            "region": self.region,
            "segment": self.segment,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scope:
        return cls(**{k: data.get(k) for k in ("unit_id", "member_id", "product_line", "region", "segment")})

    def key(self) -> tuple[str, ...]:
        return tuple("" if v is None else str(v) for v in self.as_dict().values())


# --- deal stages -----------------------------------------------------------------------

OPEN_STAGES: Final = ("lead", "qualified", "needs_analysis", "proposal", "negotiation")
CLOSED_STAGES: Final = ("won", "lost")
STAGES: Final = OPEN_STAGES + CLOSED_STAGES
DEFAULT_STAGE_PROBABILITIES: Final = {
    "lead": Decimal("0.10"),
    "qualified": Decimal("0.20"),
    "needs_analysis": Decimal("0.40"),
    "proposal": Decimal("0.60"),
    "negotiation": Decimal("0.80"),
    "won": Decimal("1"),
    "lost": Decimal("0"),
}


def stage(value: str, field: str = "stage") -> str:
    if value not in STAGES:
        raise ValidationError("stage.unknown", f"{field} must be one of {', '.join(STAGES)}", field, allowed=list(STAGES))
    return value


def allowed_next_stages(current: str) -> list[str]:
    """Open deals may move to any other stage (backwards with a reason); closed deals only reopen."""
    if current in CLOSED_STAGES:
        return []
    return [s for s in STAGES if s != current]


ACTIVITY_KINDS: Final = ("call", "visit", "meeting", "demo", "email")
MEMBER_ROLES: Final = ("rep", "manager")

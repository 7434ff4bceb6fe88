"""The arithmetic of every figure: exact, with one stated rounding applied once, at the end.

Definitions (DOMAIN.md), for one target (or a roll-up) with committed value C in a window
[start, end), measured at the instant ``at``:

- **actual**: revenue = won amount (the plan's currency); deals won = count of won deals;
  new deals = count of deals opened; activities = count logged; win rate = won ÷ (won + lost);
  average order value = won amount ÷ deals won (the plan's currency); 0 when nothing counts.
- **elapsed share** e = (at − start) ÷ (end − start), clamped to [0, 1], exact to the microsecond
  (a Fraction: 44 days of a 91-day quarter is exactly 44/91).
- **expected to date** = C × e (ratio metrics: C); **attainment** = actual ÷ C;
  **pace** = actual ÷ (C × e) (ratio metrics: actual ÷ C once the window has begun);
  **gap** = C − actual.
- **weighted pipeline** = Σ open amount × stage probability (deals won: Σ probability),
  over open deals expected to close in the window; **forecast** = actual + weighted pipeline;
  **coverage** = weighted pipeline ÷ gap (only while there is a gap).
- **pace status**: ahead ≥ ``ahead``, on track ≥ ``on_track``, at risk ≥ ``at_risk``, else behind,
  compared on the exact pace; not started before the window begins; no target when C = 0.

Rounding, ROUND_HALF_EVEN, once: money to cents; counts exact (a fractional count — expected
to date, weighted pipeline, forecast — to 2 places); ratios (attainment, pace, coverage, win
rate) to 4 places.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Final

from domain import values as v
from projections.measure.facts import ACTIVITY, LOST, OPEN, OPENED, WON, Tally

__all__ = [
    "Figures", "MeasureConfig", "actual_of", "divide", "elapsed_share", "exact", "figures", "money", "pace_status",
    "quantity", "ratio", "reads", "rounded", "weighted_of",
]

RATIO_PLACES: Final = Decimal("0.0001")
MONEY_PLACES: Final = Decimal("0.01")
Exact = Fraction


@dataclass(frozen=True)
class MeasureConfig:
    """Pace thresholds (pace = actual ÷ expected to date) and each open stage's win probability."""

    ahead: Decimal = Decimal("1.10")
    on_track: Decimal = Decimal("0.95")
    at_risk: Decimal = Decimal("0.80")
    stage_probabilities: Mapping[str, Decimal] = field(default_factory=lambda: dict(v.DEFAULT_STAGE_PROBABILITIES))


def _quantize(value: Exact, places: Decimal) -> Decimal:
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(places, rounding=ROUND_HALF_EVEN) \
        if value.denominator != 1 else Decimal(value.numerator).quantize(places)


def money(value: Exact) -> Decimal:
    return _quantize(value, MONEY_PLACES)


def ratio(value: Exact | None) -> Decimal | None:
    return None if value is None else _quantize(value, RATIO_PLACES)


def quantity(value: Exact) -> Decimal:
    """A count: whole when it is whole, else to 2 places."""
    if value.denominator == 1:
        return Decimal(value.numerator)
    return _quantize(value, MONEY_PLACES)


def rounded(metric: str, value: Exact) -> Decimal:
    """A value of ``metric`` in its unit, rounded as stated above."""
    if metric in v.MONEY_METRICS:
        return money(value)
    if metric == "win_rate":
        return _quantize(value, RATIO_PLACES)
    return quantity(value)


def divide(numerator: Exact, denominator: Exact) -> Exact | None:
    return None if denominator == 0 else numerator / denominator


def exact(value: Decimal | int) -> Exact:
    return Fraction(value)


def elapsed_share(start: datetime, end: datetime, at: datetime) -> Exact:
    total = end - start
    done = min(max(at - start, timedelta(0)), total)
    return Fraction(_micros(done), _micros(total))


def _micros(span: timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds


def actual_of(metric: str, tally: Tally) -> Exact:
    won = tally.of(WON)
    if metric == "revenue":
        return Fraction(won.cents, 100)
    if metric == "deals_won":
        return Fraction(won.count)
    if metric == "new_deals":
        return Fraction(tally.of("opened").count)
    if metric == "activities":
        return Fraction(tally.of("activity").count)
    if metric == "win_rate":
        closed = won.count + tally.of(LOST).count
        return Fraction(won.count, closed) if closed else Fraction(0)
    if metric == "average_order_value":
        return Fraction(won.cents, 100 * won.in_currency) if won.in_currency else Fraction(0)
    raise ValueError(f"unknown metric {metric}")


def weighted_of(metric: str, tally: Tally, probabilities: Mapping[str, Decimal]) -> Exact | None:
    """The weighted open pipeline of the metrics that have one (revenue, deals won); None otherwise."""
    if metric not in ("revenue", "deals_won"):
        return None
    total = Fraction(0)
    for (kind, stage), bucket in tally.buckets.items():
        if kind != OPEN:
            continue
        p = Fraction(probabilities.get(stage, Decimal(0)))
        total += p * (Fraction(bucket.cents, 100) if metric == "revenue" else bucket.count)
    return total


_READS: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    "revenue": {WON: ("cents",), OPEN: ("cents",)},
    "deals_won": {WON: ("count",), OPEN: ("count",)},
    "new_deals": {OPENED: ("count",)},
    "activities": {ACTIVITY: ("count",)},
    "win_rate": {WON: ("count",), LOST: ("count",)},
    "average_order_value": {WON: ("in_currency", "cents")},
}


def reads(metric: str, tally: Tally) -> frozenset[tuple[str, str, int]]:
    """What of a tally ``metric`` reads (a deal's amount is nothing to its new-deal count): two tallies with the
    same reads give the metric the same actual and forecast."""
    found: dict[tuple[str, str], int] = {}
    for (kind, detail), bucket in tally.buckets.items():
        for name in _READS[metric].get(kind, ()):
            # Open deals are weighted by stage: their detail matters; other kinds only in sum.
            key = (kind if kind != OPEN else f"{kind}:{detail}", name)
            found[key] = found.get(key, 0) + getattr(bucket, name)
    return frozenset((kind, name, value) for (kind, name), value in found.items() if value)


def pace_status(pace: Exact | None, config: MeasureConfig) -> str:
    if pace is None:
        return "not_started"
    if pace >= Fraction(config.ahead):
        return "ahead"
    if pace >= Fraction(config.on_track):
        return "on_track"
    if pace >= Fraction(config.at_risk):
        return "at_risk"
    return "behind"


@dataclass(frozen=True)
class Figures:
    """One target's (or roll-up's) standing, rounded for display; ``pace_exact`` keeps the unrounded pace."""

    committed: Decimal
    stretch: Decimal | None
    actual: Decimal
    attainment: Decimal | None
    stretch_attainment: Decimal | None
    expected_to_date: Decimal
    pace: Decimal | None
    pace_status: str
    gap: Decimal
    weighted_pipeline: Decimal | None
    forecast: Decimal | None
    coverage: Decimal | None


def figures(metric: str, committed: Decimal, stretch: Decimal | None, tally: Tally, start: datetime,
            end: datetime, at: datetime, config: MeasureConfig) -> Figures:
    """The standing of ``committed`` (and ``stretch``) against ``tally`` in [start, end) at ``at``."""
    target = exact(committed)
    actual = actual_of(metric, tally)
    weighted = weighted_of(metric, tally, config.stage_probabilities)
    if metric in v.RATIO_METRICS:
        expected = target
        pace = divide(actual, target) if start <= at else None
    else:
        share = elapsed_share(start, end, at)
        expected = target * share
        pace = divide(actual, expected) if share > 0 else None
    gap = target - actual
    forecast = None if weighted is None else actual + weighted
    return Figures(
        committed=committed, stretch=stretch, actual=rounded(metric, actual),
        attainment=ratio(divide(actual, target)),
        stretch_attainment=ratio(divide(actual, exact(stretch))) if stretch else None,
        expected_to_date=rounded(metric, expected), pace=ratio(pace),
        pace_status=pace_status(pace, config) if committed else "no_target",
        gap=rounded(metric, gap), weighted_pipeline=None if weighted is None else rounded(metric, weighted),
        forecast=None if forecast is None else rounded(metric, forecast),
        coverage=ratio(divide(weighted, gap)) if weighted is not None and gap > 0 else None,
    )

"""Splitting a target into children that sum exactly to it.

Pure arithmetic, no aggregates: the plan calls it and records the resulting values, so
replaying a decomposition never recomputes it.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Final

from domain.errors import RuleViolation, ValidationError

METHODS: Final = ("equal", "weights", "history", "values")


def split(
    total: Decimal,
    *,
    parts: int,
    method: str,
    places: int,
    weights: list[Decimal] | None = None,
    history: list[Decimal] | None = None,
    values: list[Decimal] | None = None,
    residue_to: int = 0,
) -> list[Decimal]:
    """Shares of ``total`` for ``parts`` children; the rounding residue goes to ``residue_to``.

    ``places`` is 2 for money and 0 for counts: a decomposition never invents cents or half deals.
    """
    # Decimal's default 28 digits would round large products and sums (a 1e12 total split by
    # equal history gave .24/.22, not .23/.23): work with enough digits to floor exactly.
    with localcontext(prec=100):
        return _split(total, parts=parts, method=method, places=places, weights=weights, history=history,
                      values=values, residue_to=residue_to)


def _split(
    total: Decimal,
    *,
    parts: int,
    method: str,
    places: int,
    weights: list[Decimal] | None,
    history: list[Decimal] | None,
    values: list[Decimal] | None,
    residue_to: int,
) -> list[Decimal]:
    if parts < 1:
        raise ValidationError("decomposition.no_parts", "a decomposition needs at least one part", "parts")
    if not 0 <= residue_to < parts:
        raise ValidationError("decomposition.residue_to", "residue_to must name one of the parts", "residue_to")
    quantum = Decimal(1).scaleb(-places)
    if method == "values":
        given = _exactly(values, parts, "values")
        # Finiteness first: ordering a NaN raises decimal.InvalidOperation instead of a domain error.
        for i, value in enumerate(given):
            if not value.is_finite() or value < 0:
                raise ValidationError(
                    "decomposition.value", f"values/{i} must be non-negative with {places} places", f"values/{i}"
                )
        if sum(given) != total:
            raise RuleViolation(
                "decomposition.sum_mismatch",
                f"the children sum to {sum(given)}, not to the parent's {total}",
                "values",
            )
        for i, value in enumerate(given):
            if value != value.quantize(quantum):
                raise ValidationError(
                    "decomposition.value", f"values/{i} must be non-negative with {places} places", f"values/{i}"
                )
        return given
    if method == "equal":
        raw = [total / parts] * parts
    elif method == "weights":
        given = _exactly(weights, parts, "weights")
        if any(not w.is_finite() or w < 0 for w in given):
            raise ValidationError("decomposition.weight_negative", "weights must be finite and non-negative", "weights")
        if sum(given) != 1:
            raise RuleViolation(
                "decomposition.weights_sum", f"weights sum to {sum(given)}, not to exactly 1", "weights"
            )
        raw = [total * w for w in given]
    elif method == "history":
        given = _exactly(history, parts, "history")
        if any(not h.is_finite() or h < 0 for h in given):
            raise ValidationError("decomposition.history_negative", "history actuals must be non-negative", "history")
        base = sum(given)
        if base == 0:
            raise RuleViolation(
                "decomposition.history_empty", "last year's actuals are all zero: nothing to weight by", "history"
            )
        raw = [total * h / base for h in given]
    else:
        raise ValidationError(
            "decomposition.method", f"method must be one of {', '.join(METHODS)}", "method", allowed=list(METHODS)
        )
    shares = [r.quantize(quantum, rounding=ROUND_DOWN) for r in raw]
    shares[residue_to] += total - sum(shares)
    return shares


def _exactly(values: list[Decimal] | None, parts: int, field: str) -> list[Decimal]:
    if values is None or len(values) != parts:
        raise ValidationError(
            f"decomposition.{field}_count", f"{field} must have one entry per part ({parts})", field
        )
    try:
        return [Decimal(v) for v in values]
    except (ArithmeticError, TypeError, ValueError):
        raise ValidationError(f"decomposition.{field}_not_numbers", f"{field} must be decimal numbers", field) from None


SPREAD_METHODS: Final = ("proportional", "equal", "weights", "values")


def respread(
    total: Decimal,
    current: list[Decimal],
    *,
    method: str,
    places: int,
    residue_to: int,
    weights: list[Decimal] | None = None,
    values: list[Decimal] | None = None,
    days: list[int] | None = None,
) -> list[Decimal]:
    """New shares of ``total`` for children that hold ``current``: what a revision does beneath a target.

    ``proportional`` keeps each child's share of the current sum (equal shares when the
    children all hold zero); ``equal`` splits evenly, or by ``days`` when the children span
    unequal windows (clipped weeks); ``weights`` and ``values`` are as for ``split``.
    """
    parts = len(current)
    if method == "proportional":
        if sum(current) > 0:
            return split(total, parts=parts, method="history", places=places, history=current, residue_to=residue_to)
        method = "equal"
    if method == "equal":
        if days is not None and len(set(days)) > 1:
            return split(total, parts=parts, method="history", places=places,
                         history=[Decimal(d) for d in days], residue_to=residue_to)
        return split(total, parts=parts, method="equal", places=places, residue_to=residue_to)
    if method in ("weights", "values"):
        return split(total, parts=parts, method=method, places=places, weights=weights, values=values,
                     residue_to=residue_to)
    raise ValidationError(
        "spread.method", f"method must be one of {', '.join(SPREAD_METHODS)}", "method", allowed=list(SPREAD_METHODS)
    )


def split_upside(
    excess: Decimal, basis: list[Decimal], fallback: list[Decimal], *, places: int, residue_to: int,
    days: list[int] | None = None,
) -> list[Decimal]:
    """Shares of a parent's upside (stretch − committed) in proportion to ``basis``, else to
    ``fallback``, else evenly (by ``days`` for clipped weeks): never negative, so a child's
    stretch never falls below its committed value."""
    for weights in (basis, fallback):
        if sum(weights) > 0:
            return split(excess, parts=len(basis), method="history", places=places, history=weights,
                         residue_to=residue_to)
    return respread(excess, [Decimal(0)] * len(basis), method="equal", places=places, residue_to=residue_to,
                    days=days)

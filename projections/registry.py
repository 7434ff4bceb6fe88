"""Every projection salesplan runs, by name."""

from __future__ import annotations

from projections.clock import LogClock
from projections.engine import Projection
from projections.progress import ProgressProjection


def all_projections() -> list[Projection]:
    """Fresh instances of every projection, on their live tables."""
    return [
        LogClock(),
        ProgressProjection(),
    ]

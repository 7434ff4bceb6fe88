"""Every projection salesplan runs, by name."""

from __future__ import annotations

from projections.audit import AuditProjection
from projections.clock import LogClock
from projections.engine import Projection
from projections.pipeline import PipelineProjection
from projections.progress import ProgressProjection
from projections.revisions import RevisionReasonsProjection
from projections.versions import PlanVersionsProjection


def all_projections() -> list[Projection]:
    """Fresh instances of every projection, on their live tables."""
    return [
        LogClock(),
        ProgressProjection(),
        PipelineProjection(),
        AuditProjection(), PlanVersionsProjection(),
        RevisionReasonsProjection(),
    ]

"""Every projection salesplan runs, by name."""

from __future__ import annotations

from projections.engine import Projection
from projections.folds.audit import AuditProjection
from projections.folds.catalogue import CatalogueProjection
from projections.folds.clock import LogClock
from projections.folds.pipeline import PipelineProjection
from projections.folds.progress import ProgressProjection
from projections.folds.revisions import RevisionReasonsProjection
from projections.folds.versions import PlanVersionsProjection


def all_projections() -> list[Projection]:
    """Fresh instances of every projection, on their live tables."""
    return [
        LogClock(),
        ProgressProjection(),
        PipelineProjection(),
        AuditProjection(), PlanVersionsProjection(),
        RevisionReasonsProjection(),
        CatalogueProjection(),
    ]

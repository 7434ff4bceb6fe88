"""Every projection salesplan runs, by name, and how a rebuild of several shares the machine's cores."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queues
from collections.abc import Callable, Sequence
from typing import Any

from projections.engine import PoisonEvent, Projection
from projections.folds.audit import AuditProjection
from projections.folds.catalogue import CatalogueProjection
from projections.folds.clock import LogClock
from projections.folds.pipeline import PipelineProjection
from projections.folds.progress import ProgressProjection
from projections.folds.revisions import RevisionReasonsProjection
from projections.folds.versions import PlanVersionsProjection

# What rebuilding each projection costs, relatively (measured): the heaviest folds and
# writes go to different processes. A projection not named here weighs 1.
REBUILD_WEIGHTS: dict[str, float] = {
    "audit": 4.0, "pipeline": 3.0, "progress": 3.0, "log_clock": 1.0, "plan_version": 0.3, "revision_reasons": 0.3,
}


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


def partition(names: Sequence[str], processes: int) -> list[list[str]]:
    """Split projections into at most ``processes`` groups of about equal weight (heaviest first, to the lightest)."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(processes, len(names))))]
    loads = [0.0] * len(groups)
    for name in sorted(names, key=lambda n: -REBUILD_WEIGHTS.get(n, 1.0)):
        i = loads.index(min(loads))
        groups[i].append(name)
        loads[i] += REBUILD_WEIGHTS.get(name, 1.0)
    return [g for g in groups if g]


Progress = Callable[[str, int, int], None]


def rebuild(database_url: str, names: Sequence[str], *, processes: int | None = None, lock_timeout_ms: int = 5000,
            batch_size: int = 500, progress: Progress | None = None) -> dict[str, int]:
    """Rebuild projections blue/green, in parallel processes (default: one per core on PostgreSQL).

    Each process rebuilds its group reading and decoding the log once for the whole group
    (``ProjectionEngine.rebuild_many``), so the cores share the folding and the writing, not
    the same reads. Returns the position each projection was switched in at; a poison event
    stops its projection's rebuild (the live tables keep answering) and is raised once the
    other groups have finished. On SQLite one process is the default: a fold runs inside its
    write transaction, and SQLite has one writer at a time, so a second process mostly waits.
    """
    default = 1 if database_url.startswith("sqlite") else os.cpu_count() or 1
    groups = partition(names, processes or default)
    if len(groups) == 1:
        return _rebuild_group(database_url, lock_timeout_ms, batch_size, groups[0], progress)
    ctx = mp.get_context("spawn")
    messages: Any = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(database_url, lock_timeout_ms, batch_size, group, messages),
                           name=f"salesplan-rebuild-{'+'.join(group)}") for group in groups]
    for worker in workers:
        worker.start()
    switched: dict[str, int] = {}
    failures: list[tuple[str, int, str]] = []
    finished = 0
    while finished < len(workers):
        try:
            message = messages.get(timeout=1.0)
        except queues.Empty:
            if any(w.exitcode not in (None, 0) for w in workers) and not any(w.is_alive() for w in workers):
                break  # a worker died without a word (killed): nothing more will come
            continue
        kind = message[0]
        if kind == "progress" and progress is not None:
            progress(*message[1:])
        elif kind == "done":
            switched.update(message[1])
            finished += 1
        elif kind == "poison":
            failures.append(message[1:])
            finished += 1
    for worker in workers:
        worker.join()
    if failures:
        name, position, error = failures[0]
        raise PoisonEvent(name, position, RuntimeError(error))
    missing = [n for n in names if n not in switched]
    if missing:
        raise RuntimeError(f"the rebuild of {', '.join(missing)} stopped without a report (exit codes "
                           f"{[w.exitcode for w in workers]})")
    return switched


def _rebuild_group(database_url: str, lock_timeout_ms: int, batch_size: int, names: Sequence[str],
                   progress: Progress | None) -> dict[str, int]:
    from domain.application import SalesPlanning
    from domain.persistence import open_database
    from projections.engine import ProjectionEngine

    app = SalesPlanning(open_database(database_url, lock_timeout_ms=lock_timeout_ms))
    engine = ProjectionEngine(app, [p for p in all_projections() if p.name in names], batch_size=batch_size)
    engine.setup()
    return engine.rebuild_many(list(names), progress)


def _worker(database_url: str, lock_timeout_ms: int, batch_size: int, names: Sequence[str], messages: Any) -> None:
    try:
        switched = _rebuild_group(database_url, lock_timeout_ms, batch_size, names,
                                  lambda name, done, total: messages.put(("progress", name, done, total)))
    except PoisonEvent as error:
        messages.put(("poison", error.name, error.position, str(error)))
        return
    messages.put(("done", switched))

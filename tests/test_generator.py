"""The benchmark's history generator, run small: it keeps every domain rule and the projections follow it."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from api.generator import GenerateError, generate
from domain.application import SalesPlanning
from domain.persistence import close_database, open_database
from projections.engine import ProjectionEngine
from projections.history import Cut
from projections.queries.progress import progress
from projections.registry import all_projections


def stored(app: SalesPlanning) -> list[tuple[int, Any]]:
    return [(n.id, app.mapper.to_domain_event(n)) for n in app.recorder.select_notifications(start=1, limit=10**7)]


def test_a_generated_history_keeps_the_domain_rules_and_the_projections_catch_up(app: SalesPlanning) -> None:
    seen: list[tuple[int, int]] = []
    report = generate(app, events=3000, seed=1, progress=lambda done, total: seen.append((done, total)))

    events = stored(app)
    assert len(events) == report.events >= 3000
    assert seen[-1] == (report.events, 3000) and len(seen) > 5  # written in several batches
    assert sum(report.event_types.values()) == report.events

    # Every entity's changes take effect in order, all in the past, all timezone-aware.
    now = app.clock()
    last: dict[Any, Any] = {}
    for _position, event in events:
        assert event.effective_at.tzinfo is not None and event.effective_at <= now
        assert event.effective_at >= last.get(event.originator_id, event.effective_at), event
        last[event.originator_id] = event.effective_at

    # Late entries: some events reach the log after others that happened well after them.
    latest = events[0][1].effective_at
    late = 0
    for _position, event in events:
        late += event.effective_at < latest - timedelta(days=7)
        latest = max(latest, event.effective_at)
    assert late > 0 and report.late_entries > 0

    kinds = Counter(type(event).__qualname__ for _p, event in events)
    for kind in ("Unit.Added", "Member.Added", "Member.Moved", "Product.Added", "Account.Added", "Plan.Drafted",
                 "Plan.TargetSet", "Plan.TargetDecomposed", "Plan.Published", "Plan.TargetRevised", "Deal.Opened",
                 "Deal.StageChanged", "Deal.AmountChanged", "Deal.ExpectedCloseChanged", "Deal.Reassigned",
                 "Deal.Won", "Deal.Lost", "Deal.Reopened", "Activity.Logged", "Task.Created",
                 "Task.ProgressReported", "Task.Completed"):
        assert kinds[kind] > 0, kind
    assert kinds == report.event_types
    # Plans are revised and re-published: versions beyond the baseline.
    assert max(e.version for _p, e in events if type(e).__qualname__ == "Plan.Published") >= 2

    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    for status in engine.status():
        assert (status.status, status.lag_events, status.error) == ("live", 0, None), status
        assert status.position == events[-1][0]
    with app.database.engine.connect() as conn:
        rows = progress(conn, cut=Cut(engine.head()), now=now).rows
    assert rows and any(row.actual > 0 for row in rows if row.metric == "revenue")


def test_a_seed_is_generated_once_per_store(app: SalesPlanning) -> None:
    generate(app, events=300, seed=4)
    head = app.recorder.max_notification_id()
    with pytest.raises(GenerateError, match="seed 4"):
        generate(app, events=300, seed=4)
    assert app.recorder.max_notification_id() == head
    generate(app, events=300, seed=5)  # another seed adds another organisation's history
    assert (app.recorder.max_notification_id() or 0) > (head or 0)


def test_one_seed_gives_one_history(tmp_path: Path) -> None:
    def history(name: str) -> list[tuple[Any, ...]]:
        url = f"sqlite:///{tmp_path / name}"
        try:
            app = SalesPlanning(open_database(url))
            generate(app, events=800, seed=9)
            return [(e.originator_id, e.originator_version, type(e).__qualname__, e.effective_at)
                    for _p, e in stored(app)]
        finally:
            close_database(url)

    assert history("one.db") == history("two.db")

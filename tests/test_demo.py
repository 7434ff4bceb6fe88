"""The demo quarter: what its summary says is what the log holds, it is written once, it never
reaches past the clock, and the seed alone decides it.

The full demo (~1,900 commands) runs on SQLite only; the commands themselves are covered on
both backends by the domain suites, and a small demo (10 deals) runs on both to prove the
one-transaction write. The determinism check plays a 20-deal quarter twice.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from api.demo import DemoSummary, demo_quarter, write_demo
from domain.application import SalesPlanning
from domain.errors import ValidationError
from domain.persistence import Database, close_database, open_database
from domain.plan import Plan
from domain.values import Period

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def stored_events(app: SalesPlanning) -> list[Any]:
    events: list[Any] = []
    start = 1
    while batch := app.recorder.select_notifications(start=start, limit=500):
        events.extend(app.mapper.to_domain_event(n) for n in batch)
        start = batch[-1].id + 1
    return events


def kind(event: Any) -> str:
    return type(event).__qualname__


@sqlite_only
def test_the_demo_writes_a_realistic_quarter_once(database: Database) -> None:
    app = SalesPlanning(database, clock=lambda: NOW)
    summary = write_demo(app, seed=7, quarter="2026-Q1")
    events = stored_events(app)
    counted = Counter(kind(e) for e in events)

    # The summary counts exactly what the log holds.
    assert not summary.already_present
    assert summary.events == len(events) == app.recorder.max_notification_id()
    assert (summary.units, summary.members, summary.products, summary.accounts, summary.plans, summary.deals,
            summary.tasks, summary.activities) == (
        counted["Unit.Added"], counted["Member.Added"], counted["Product.Added"], counted["Account.Added"],
        counted["Plan.Drafted"], counted["Deal.Opened"], counted["Task.Created"], counted["Activity.Logged"],
    )
    final_stage: dict[UUID, str] = {}
    for e in events:
        if kind(e) in ("Deal.Won", "Deal.Lost", "Deal.Reopened"):
            final_stage[e.originator_id] = kind(e)
    assert summary.won == sum(1 for s in final_stage.values() if s == "Deal.Won")
    assert summary.lost == sum(1 for s in final_stage.values() if s == "Deal.Lost")

    # A realistic quarter: ten units, about twenty reps with their managers, a few hundred deals.
    assert summary.units == 10 and summary.products == 6
    reps = [e for e in events if kind(e) == "Member.Added" and e.role == "rep"]
    assert 18 <= len(reps) <= 22 and summary.members - len(reps) == 10
    assert 200 <= summary.deals <= 300 and summary.won > 0 and summary.lost > 0
    assert summary.activities >= summary.deals and summary.tasks >= len(reps)

    # The plan: published v1, revised with reasons, published v2; every decomposition sums exactly.
    plan_id = next(e.originator_id for e in events if kind(e) == "Plan.Drafted")
    plan = app.get(Plan, plan_id)
    assert (plan.status, plan.published_version, summary.plan_version) == ("published", 2, 2)
    assert summary.targets == len(plan.targets)
    parents = {t["parent_id"] for t in plan.targets.values()} - {None}
    for parent in parents:
        children = [t for t in plan.targets.values() if t["parent_id"] == parent]
        assert sum(c["committed"] for c in children) == plan.targets[parent]["committed"]
    rep_ids = {e.originator_id for e in reps}
    per_rep = Counter(t["scope"]["member_id"] for t in plan.targets.values() if t["scope"]["member_id"])
    assert per_rep == dict.fromkeys(rep_ids, 4)  # the rep's quarter and its three months
    revisions = [e for e in events if kind(e) == "Plan.TargetRevised"]
    assert revisions and all(e.reason for e in revisions)
    assert [e.version for e in events if kind(e) == "Plan.Published"] == [1, 2]

    # The pipeline moved the way pipelines move: backwards with reasons, slips, losses with reasons.
    assert all(e.reason for e in events if kind(e) in ("Deal.Lost", "Deal.Reopened", "Member.Moved"))
    assert any(e.reason for e in events if kind(e) == "Deal.StageChanged")
    assert counted["Deal.ExpectedCloseChanged"] > 0 and counted["Member.Moved"] == 1

    # Back-dated inside the quarter, never past the clock, in order for every entity.
    q1 = Period.parse("2026-Q1")
    assert all(q1.start_at <= e.effective_at < q1.end_at for e in events)
    last: dict[UUID, datetime] = {}
    for e in events:
        assert e.effective_at >= last.get(e.originator_id, e.effective_at)
        last[e.originator_id] = e.effective_at

    text = summary.format()
    assert "2026-Q1" in text and f"{summary.deals}" in text and "v2" in text

    # A second run finds the demo company and writes nothing.
    again = write_demo(app, seed=7, quarter="2026-Q1")
    assert again.already_present and again.events == 0 and again.company_id == summary.company_id
    assert app.recorder.max_notification_id() == summary.events
    assert "nothing written" in again.format()


def test_a_future_quarter_plays_the_current_one_up_to_now_and_the_seed_decides_everything(tmp_path: Path) -> None:
    clock = datetime(2026, 5, 10, 15, 30, tzinfo=timezone.utc)
    runs: list[tuple[DemoSummary, list[tuple[str, UUID, int, datetime, str]]]] = []
    for name in ("first", "second"):
        url = f"sqlite:///{tmp_path / name}.db"
        try:
            app = SalesPlanning(open_database(url), clock=lambda: clock)
            summary = write_demo(app, seed=11, quarter="2027-Q1", deals=20)
            events = stored_events(app)
        finally:
            close_database(url)
        runs.append((summary, [(kind(e), e.originator_id, e.originator_version, e.effective_at, e.actor)
                               for e in events]))

    (summary, trail), (other_summary, other_trail) = runs
    assert summary.quarter == "2026-Q2"
    start = datetime(2026, 4, 1, tzinfo=timezone.utc)
    assert (summary.start, summary.end) == (start, clock)
    assert all(start <= when <= clock for _, _, _, when, _ in trail)
    assert summary.deals == 20 and summary.plan_version == 2
    # Same seed, same clock: the same entities, changed in the same order, at the same times, by the same people.
    assert other_summary == summary
    assert other_trail == trail


def test_an_interrupted_demo_leaves_nothing_and_the_next_run_writes_it_whole(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = SalesPlanning(database, clock=lambda: NOW)

    def power_cut(self: Any) -> None:
        raise ConnectionAbortedError("power cut after the organisation was written")

    with monkeypatch.context() as patch:
        patch.setattr("api.demo._Demo.catalogue", power_cut)
        with pytest.raises(ConnectionAbortedError):
            write_demo(app, seed=3, quarter="2026-Q1", deals=10)
    # Everything before the cut was in the same transaction: nothing is left to skip over.
    assert app.recorder.max_notification_id() is None

    summary = write_demo(app, seed=3, quarter="2026-Q1", deals=10)
    assert summary.deals == 10 and summary.activities > 0
    assert summary.events == len(stored_events(app))
    again = write_demo(app, seed=3, quarter="2026-Q1", deals=10)
    assert again.already_present and len(stored_events(app)) == summary.events


def test_the_demo_quarter_is_a_quarter_that_has_begun() -> None:
    now = datetime(2026, 5, 10, tzinfo=timezone.utc)
    assert demo_quarter("2026-Q1", now).key == "2026-Q1"
    assert demo_quarter("2026-Q2", now).key == "2026-Q2"
    assert demo_quarter("2026-Q3", now).key == "2026-Q2"
    with pytest.raises(ValidationError) as info:
        demo_quarter("2026-03", now)
    assert (info.value.rule, info.value.field) == ("demo.quarter", "quarter")

"""The projection engine's guarantees: exactly once, holes skipped, poison stops visibly, blue/green rebuild."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.application import SalesPlanning
from domain.deal import Activity
from domain.persistence import Database, open_database
from projections.engine import FAILED, LIVE, Envelope, PositionMoved, Projection, ProjectionEngine, tracking_table
from projections.folds.progress import ProgressProjection
from projections.registry import all_projections

START = datetime(2025, 3, 1, tzinfo=UTC)


class Applications(Projection):
    """Counts every application of every event: a double apply shows up as a duplicate row."""

    name = "test_applications"
    poison_note: ClassVar[str | None] = None

    def define_tables(self) -> None:
        self.applied = self.table(
            "test_applications",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            # Unique, like every real projection's keys: a doubled event must collide, not just be counted.
            sa.Column("position", sa.BigInteger, nullable=False, unique=True),
        )

    def handle(self, conn: Connection, batch: Sequence[Envelope]) -> None:
        for envelope in batch:
            event = envelope.event
            if isinstance(event, Activity.Logged) and event.note == type(self).poison_note:
                raise ValueError(f"cannot fold {event.note!r}")
        conn.execute(self.applied.insert(), [{"position": e.position} for e in batch])


@pytest.fixture(autouse=True)
def _no_poison() -> Any:
    Applications.poison_note = None
    yield
    Applications.poison_note = None


def _people(app: SalesPlanning) -> Any:
    unit = app.add_unit(name="East", actor="admin", effective_at=START).id
    return app.add_member(name="Ann", role="rep", unit_id=unit, actor="admin", effective_at=START).id


def _log(app: SalesPlanning, member: Any, n: int, note: str = "call") -> None:
    for i in range(n):
        app.log_activity(kind="call", member_id=member, note=note, actor="ann",
                         effective_at=START + timedelta(minutes=i))


def _applied(database: Database) -> list[int]:
    with database.engine.connect() as conn:
        return list(conn.execute(sa.text("select position from test_applications order by id")).scalars())


def _second_connection(database_url: str) -> Database:
    """Another pool on the same database, as a second worker process would have."""
    return open_database(database_url + ("&" if "?" in database_url else "?") + "application_name=worker2"
                         if database_url.startswith("postgresql") else database_url)


def test_two_workers_of_one_projection_never_both_apply_an_event(app: SalesPlanning, database_url: str) -> None:
    member = _people(app)
    first = ProjectionEngine(app, [Applications()], batch_size=7)
    first.setup()
    second = ProjectionEngine(SalesPlanning(_second_connection(database_url)), [Applications()], batch_size=5)
    stop = threading.Event()
    workers = [threading.Thread(target=e.run_forever, args=(stop, 0.001)) for e in (first, second)]
    for w in workers:
        w.start()
    try:
        _log(app, member, 120)
        assert first.wait_for(first.head(), timeout=60)
    finally:
        stop.set()
        for w in workers:
            w.join()
    applied = _applied(app.database)
    events = [n.id for n in app.recorder.select_notifications(start=1, limit=10_000)]
    assert sorted(applied) == events  # every event once: none lost, none doubled
    assert applied == sorted(applied)  # and in log order


def test_a_worker_whose_position_moved_underneath_it_rolls_its_batch_back(app: SalesPlanning) -> None:
    member = _people(app)
    _log(app, member, 3)
    engine = ProjectionEngine(app, [Applications()])
    engine.setup()
    projection = engine.projections["test_applications"]
    stale_batch, last = engine._read(projection, 0, 100)
    engine.catch_up()  # another worker got there first
    with pytest.raises(PositionMoved):
        engine._commit(projection, "test_applications", 0, stale_batch, last)
    assert len(_applied(app.database)) == last


def test_holes_in_the_log_are_skipped_not_waited_for(app: SalesPlanning) -> None:
    member = _people(app)
    # A write that rolls back after its insert: on PostgreSQL it burns a notification id forever.
    with pytest.raises(RuntimeError), app.database.datastore.transaction(commit=True):
        app.log_activity(kind="call", member_id=member, actor="ann", effective_at=START)
        raise RuntimeError("rolled back after the insert")
    _log(app, member, 2)
    engine = ProjectionEngine(app, [Applications(), *all_projections()])
    engine.setup()
    engine.catch_up()
    assert all(s.position == s.head and s.lag_events == 0 for s in engine.status())
    assert _applied(app.database) == [n.id for n in app.recorder.select_notifications(start=1, limit=100)]


def test_a_poison_event_stops_its_projection_visibly_and_is_never_skipped(app: SalesPlanning) -> None:
    member = _people(app)
    _log(app, member, 3)
    _log(app, member, 1, note="poison")
    _log(app, member, 3)
    Applications.poison_note = "poison"
    engine = ProjectionEngine(app, [Applications(), ProgressProjection()], batch_size=100)
    engine.setup()
    engine.catch_up()
    poison = next(n.id for n in app.recorder.select_notifications(start=1, limit=100)
                  if app.mapper.to_domain_event(n).__dict__.get("note") == "poison")
    status = {s.name: s for s in engine.status()}
    failed = status["test_applications"]
    assert failed.status == FAILED
    assert failed.position == poison - 1 and failed.error_position == poison
    assert failed.error is not None and "cannot fold 'poison'" in failed.error
    assert failed.lag_events == 4
    assert _applied(app.database) == list(range(1, poison))  # the good events before it were kept
    assert status["progress"].status == LIVE and status["progress"].lag_events == 0  # the others carry on
    assert engine.run_once("test_applications") == 0  # a failed projection stays stopped…
    assert engine.position("test_applications") == poison - 1
    Applications.poison_note = None  # …until the fold is fixed and the projection retried
    engine.retry("test_applications")
    engine.catch_up()
    assert _applied(app.database) == [n.id for n in app.recorder.select_notifications(start=1, limit=100)]


def _dump(database: Database, projection: Projection) -> dict[str, list[tuple[Any, ...]]]:
    with database.engine.connect() as conn:
        return {
            base: sorted(tuple(str(v) for v in row) for row in conn.execute(sa.text(f'select * from "{base}"')))
            for base in projection.base_names()
        }


def test_rebuild_replays_into_new_tables_while_the_old_ones_answer_then_switches(app: SalesPlanning) -> None:
    from tests.history_generator import generate_history

    generate_history(app, seed=4, commands=120)
    engine = ProjectionEngine(app, all_projections(), batch_size=50)
    engine.setup()
    engine.catch_up()  # incrementally, as live processing does
    progress = engine.projections["progress"]
    before = _dump(app.database, progress)
    seen_during: list[int] = []

    def still_answering(done: int, total: int) -> None:
        # The service keeps reading the old tables meanwhile.
        with app.database.engine.connect() as conn:
            seen_during.append(int(conn.execute(sa.text("select count(*) from progress_deals")).scalar_one()))

    position = engine.rebuild("progress", progress=still_answering)
    assert position == engine.head()
    assert seen_during and all(n == len(before["progress_deals"]) for n in seen_during)
    assert _dump(app.database, progress) == before  # a rebuild gives exactly the live rows
    with app.database.engine.connect() as conn:
        row = conn.execute(sa.select(tracking_table).where(tracking_table.c.name == "progress")).one()
        leftovers = conn.execute(sa.select(tracking_table.c.name).where(tracking_table.c.name.like("progress__g%")))
        assert row.generation == 2 and row.status == LIVE and list(leftovers) == []
    # Events appended after the switch land in the new tables.
    member = _people(app)
    _log(app, member, 2)
    engine.catch_up()
    assert engine.position("progress") == engine.head()
    assert len(_dump(app.database, progress)["progress_activities"]) == len(before["progress_activities"]) + 2


def test_an_upgrade_rebuilds_the_projections_an_older_fold_wrote_before_anything_reads_them(
        app: SalesPlanning) -> None:
    from tests.history_generator import generate_history
    from tests.test_kill import _dump

    generate_history(app, seed=5, commands=60)
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    engine.catch_up()
    expected = _dump(app, engine)
    # The tables as an older salesplan left them: its fold version, and a column it did not keep yet.
    with app.database.engine.begin() as conn:
        conn.execute(tracking_table.update().where(tracking_table.c.name == "progress").values(fold_version=1))
        conn.execute(sa.text("ALTER TABLE progress_deals DROP COLUMN stage_entered_at"))
    assert engine.stale() == ["progress"]

    upgraded = ProjectionEngine(app, all_projections())
    upgraded.setup()  # what every process does when it starts

    assert upgraded.stale() == []
    assert {s.name: (s.status, s.fold_version) for s in upgraded.status()}["progress"] == (
        LIVE, ProgressProjection.fold_version)
    assert _dump(app, upgraded) == expected

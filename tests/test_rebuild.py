"""A rebuild writes exactly what live processing wrote, for every projection, on both backends.

Live processing folds the log in small batches, closing each entity's previous history row
as its next one arrives; a rebuild replays it in rebuild mode (rows in without ``next_*``,
linked at the end by one set-based statement, secondary indexes built once the tables are
full, the log read once for several projections, in several processes). The stored values
are compared as the driver returns them — not through the projections' column types — so a
difference in a single byte shows.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex

from domain.application import SalesPlanning
from domain.persistence import Database, FastJSONTranscoder, register_transcodings
from projections import engine as engine_module
from projections import history as history_module
from projections import registry
from projections.engine import LIVE, ProjectionEngine, tracking_table
from projections.history import RebuildState
from projections.registry import all_projections
from tests.history_generator import generate_history
from tests.test_stored_events import load_corpus

NAMES = [p.name for p in all_projections()]


def dump(database: Database, names: list[str] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the projections, as the driver returns it, in a stable order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with database.engine.connect() as conn:
        for projection in all_projections():
            if names is not None and projection.name not in names:
                continue
            for base in projection.base_names():
                rows = conn.exec_driver_sql(f'SELECT * FROM "{base}"').all()
                tables[base] = sorted((tuple(r) for r in rows), key=repr)
    return tables


def indexes(database: Database) -> dict[str, list[list[str]]]:
    """Each table's indexes by their columns (their names carry the generation that built them)."""
    inspector = sa.inspect(database.engine)
    return {base: sorted([str(c) for c in i["column_names"]] for i in inspector.get_indexes(base))
            for p in all_projections() for base in p.base_names()}


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebuild batches and rebuild memory small enough that a short history crosses many batches and
    entities are forgotten and read back."""
    monkeypatch.setattr(engine_module, "REBUILD_BATCH", 17)
    monkeypatch.setattr(RebuildState, "MAX_ENTITIES", 4)


def _live(app: SalesPlanning) -> tuple[ProjectionEngine, dict[str, list[tuple[Any, ...]]]]:
    engine = ProjectionEngine(app, all_projections(), batch_size=7)
    engine.setup()
    engine.catch_up()
    return engine, dump(app.database)


def test_every_projection_rebuilds_to_the_rows_live_processing_wrote(app: SalesPlanning, small_batches: None) -> None:
    generate_history(app, seed=11, commands=150)
    engine, live = _live(app)
    live_indexes = indexes(app.database)
    assert sum(len(rows) for rows in live.values()) > 800  # a history worth comparing

    # One process, the log read once for all of them.
    switched = engine.rebuild_many(NAMES)
    assert set(switched) == set(NAMES) and all(p == engine.head() for p in switched.values())
    assert dump(app.database) == live
    assert indexes(app.database) == live_indexes  # built once the tables were full, but all there

    # Each alone.
    for name in NAMES:
        engine.rebuild(name)
    assert dump(app.database) == live

    with app.database.engine.connect() as conn:
        rows = conn.execute(sa.select(tracking_table)).all()
    assert {r.name for r in rows} == set(NAMES)  # no generation left behind
    assert all(r.status == LIVE and r.generation == 3 and r.position == engine.head() for r in rows)


def test_rows_written_through_the_driver_are_the_bytes_sqlalchemy_writes(app: SalesPlanning,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    generate_history(app, seed=16, commands=120)
    with monkeypatch.context() as m:
        # Live processing the way it used to write: every INSERT through SQLAlchemy's executemany.
        m.setattr(engine_module, "_plain", lambda _insert: False)
        m.setattr(history_module, "insert_rows", lambda conn, table, rows: conn.execute(table.insert(), rows))
        engine, through_sqlalchemy = _live(app)
    engine.rebuild_many(NAMES)  # through the driver
    assert dump(app.database) == through_sqlalchemy


def test_a_rebuild_in_parallel_processes_writes_the_same_rows(app: SalesPlanning, database_url: str) -> None:
    generate_history(app, seed=12, commands=80)
    engine, live = _live(app)
    seen: list[tuple[str, int, int]] = []
    switched = registry.rebuild(database_url, NAMES, processes=2, progress=lambda *p: seen.append(p))
    assert set(switched) == set(NAMES)
    assert dump(app.database) == live
    assert {name for name, _done, _total in seen} == set(NAMES)
    # Events appended after the switch are folded into the new tables by live processing.
    generate_history(app, seed=13, commands=20)
    engine.catch_up()
    after = dump(app.database)
    engine.rebuild_many(NAMES)
    assert dump(app.database) == after


def test_events_stored_before_this_change_rebuild_as_they_process(app: SalesPlanning) -> None:
    app.recorder.insert_events(load_corpus("events-v1.json"))
    engine, live = _live(app)
    assert live["audit_history"] and live["progress_deals"]
    engine.rebuild_many(NAMES)
    assert dump(app.database) == live


def test_a_poison_event_stops_the_rebuild_and_the_live_tables_stay(app: SalesPlanning,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    generate_history(app, seed=14, commands=40)
    engine, live = _live(app)
    head = engine.head()
    progress = engine.projections["progress"]

    def failing(self: Any, conn: Any, batch: Any) -> None:
        if any(e.position == head for e in batch):
            raise ValueError("cannot fold the last event")
        original(self, conn, batch)

    original = type(progress).handle
    monkeypatch.setattr(type(progress), "handle", failing)
    with pytest.raises(engine_module.PoisonEvent) as raised:
        engine.rebuild_many(["progress"])
    assert raised.value.position == head
    monkeypatch.undo()
    assert dump(app.database) == live  # the service kept answering from the live tables
    with app.database.engine.connect() as conn:
        build = conn.execute(sa.select(tracking_table).where(tracking_table.c.name.like("progress__g%"))).one()
    # The events before it were folded, one by one; it was not.
    assert build.status == "failed" and 0 < build.position < head and build.error_position == head


# --- the decoder the engine and the repository read events with --------------------------------------------


def _with_transcodings(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    register_transcodings(transcoder)
    return transcoder


def _library() -> JSONTranscoder:
    return _with_transcodings(JSONTranscoder())


def test_the_fast_decoder_decodes_every_stored_event_as_the_library_does(app: SalesPlanning) -> None:
    fast = app.mapper.transcoder
    assert isinstance(fast, FastJSONTranscoder)
    library = _library()
    generate_history(app, seed=15, commands=150)
    stored = [*load_corpus("events-v1.json"),
              *app.recorder.select_notifications(start=1, limit=100_000)]
    assert len(stored) > 200
    for event in stored:
        assert fast.decode(event.state) == library.decode(event.state), event.topic


def test_the_fast_decoder_agrees_on_the_corners_json_allows() -> None:
    fast, library = _with_transcodings(FastJSONTranscoder()), _library()
    uid = "7f9c1e9a5b8d4c629d3e2f1a0b6c4d5e"
    documents = [
        {"a": [{"_type_": "uuid_hex", "_data_": uid}, [{"_type_": "decimal_str", "_data_": "1.10"}]]},
        {"_type_": "date_iso", "_data_": "2026-03-01"},
        {"_type_": "x", "other": 1},  # two keys, not a wrapper
        {"_type_": "uuid_hex", "_data_": uid, "extra": True},  # three keys: left as it is
        {"big": 2**70, "neg": -(2**70), "float": 0.1, "text": "ünïcode \u2028 \\ \""},
    ]
    for document in documents:
        data = json.dumps(document, ensure_ascii=False).encode()
        assert fast.decode(data) == library.decode(data)
    assert fast.decode(b'{"n": NaN}')["n"] != fast.decode(b'{"n": NaN}')["n"]  # NaN, as json reads it
    assert fast.decode(json.dumps({"id": {"_type_": "uuid_hex", "_data_": uid}}).encode()) == {"id": UUID(uid)}

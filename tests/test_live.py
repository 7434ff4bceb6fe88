"""Live processing reads each batch of the log once for all the projections, and decodes each event once."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from domain.application import SalesPlanning
from projections.engine import FAILED, LIVE, PoisonEvent, ProjectionEngine
from projections.registry import all_projections
from tests.history_generator import generate_history
from tests.test_rebuild import dump


def test_one_read_and_one_decoding_per_batch_serve_every_projection(app: SalesPlanning,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    generate_history(app, seed=31, commands=120)
    engine = ProjectionEngine(app, all_projections(), batch_size=40)
    engine.setup()
    reads: list[int] = []
    decoded: list[Any] = []
    read_log, decode = engine._read_log, app.mapper.to_domain_event

    def counting_read(after: int, limit: int) -> Any:
        reads.append(after)
        return read_log(after, limit)

    def counting_decode(stored: Any) -> Any:
        decoded.append((stored.originator_id, stored.originator_version))
        return decode(stored)

    monkeypatch.setattr(engine, "_read_log", counting_read)
    monkeypatch.setattr(app.mapper, "to_domain_event", counting_decode)
    stop = threading.Event()
    worker = threading.Thread(target=engine.run_forever, args=(stop, 0.01))
    worker.start()
    try:
        assert engine.wait_for(engine.head(), timeout=60)
    finally:
        stop.set()
        engine.wake.set()
        worker.join()
    head = engine.head()
    events = len(app.recorder.select_notifications(start=1, limit=100_000))
    batches = [r for r in reads if r < head]  # reads at the head find nothing new
    assert len(batches) == len(set(batches)) == math.ceil(events / 40)  # each batch read once, for all six
    assert len(decoded) == len(set(decoded)) == events  # and every event decoded once
    assert all(s.position == head and s.status == LIVE for s in engine.status())
    live = dump(app.database)
    engine.rebuild_many(list(engine.projections))
    assert dump(app.database) == live


def test_a_poison_event_stops_only_its_projection_when_they_share_reads(app: SalesPlanning,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    generate_history(app, seed=32, commands=40)
    engine = ProjectionEngine(app, all_projections(), batch_size=1000)
    engine.setup()
    head = engine.head()
    audit = engine.projections["audit"]
    original = type(audit).handle

    def failing(self: Any, conn: Any, batch: Any) -> None:
        if any(e.position == head for e in batch):
            raise ValueError("cannot fold the last event")
        original(self, conn, batch)

    monkeypatch.setattr(type(audit), "handle", failing)
    with pytest.raises(PoisonEvent) as raised:
        engine.run_together(list(engine.projections))
    assert raised.value.name == "audit" and raised.value.position == head
    statuses = {s.name: s for s in engine.status()}
    assert statuses["audit"].status == FAILED and statuses["audit"].error_position == head
    assert all(s.position == head and s.status == LIVE for n, s in statuses.items() if n != "audit")

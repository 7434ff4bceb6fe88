"""Kill the projection worker mid-stream, again and again: nothing is lost or doubled.

The worker is the real `salesplan project` process, killed with SIGKILL while it works
through a backlog in small batches. After it finally catches up, its tables must equal a
rebuild from zero (a doubled event would also break the history tables' primary keys and
stop the projection, which the status check would show).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import sqlalchemy as sa

from domain.application import SalesPlanning
from projections.engine import LIVE, ProjectionEngine
from projections.registry import all_projections
from tests.history_generator import generate_history


def _worker(database_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SALESPLAN_DATABASE_URL": database_url, "SALESPLAN_PROJECTION_BATCH_SIZE": "20",
           "SALESPLAN_PROJECTION_POLL_SECONDS": "0.05"}
    return subprocess.Popen([sys.executable, "-c", "from api.cli import main; main()", "project"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stderr(worker: subprocess.Popen[bytes]) -> str:
    """What the worker said, once it has stopped (reading a live process's pipe would wait for ever)."""
    if worker.poll() is None:
        worker.kill()
    _, err = worker.communicate(timeout=30)
    return err.decode(errors="replace")


def _positions(engine: ProjectionEngine) -> dict[str, int]:
    return {s.name: s.position for s in engine.status()}


def _dump(app: SalesPlanning, engine: ProjectionEngine) -> dict[str, Any]:
    with app.database.engine.connect() as conn:
        return {
            base: sorted(tuple(str(v) for v in row) for row in conn.execute(sa.text(f'select * from "{base}"')))
            for projection in engine.projections.values() for base in projection.base_names()
        }


def test_killing_the_worker_mid_batch_loses_and_doubles_nothing(app: SalesPlanning, database_url: str) -> None:
    engine = ProjectionEngine(app, all_projections())
    engine.setup()
    generate_history(app, seed=21, commands=500)
    rnd = random.Random(8)
    kills = 0
    for round_ in range(4):
        before = _positions(engine)
        worker = _worker(database_url)
        try:
            deadline = time.monotonic() + 60
            while _positions(engine) == before and time.monotonic() < deadline and worker.poll() is None:
                time.sleep(0.02)
            assert worker.poll() is None, _stderr(worker)
            time.sleep(rnd.uniform(0.01, 0.15))
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        kills += 1
        generate_history(app, seed=100 + round_, commands=40)  # new events keep arriving between crashes
    worker = _worker(database_url)
    try:
        assert engine.wait_for(engine.head(), timeout=120), _stderr(worker)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert kills == 4
    assert all(s.status == LIVE and s.position == s.head for s in engine.status())
    live = _dump(app, engine)
    for name in engine.projections:
        engine.rebuild(name)
    assert _dump(app, engine) == live

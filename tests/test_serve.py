"""`salesplan serve` with several worker processes, on the embedded SQLite default with inline projections.

The workers answer commands concurrently; the projections run in one process only (the one
that started the workers), so every command is projected once, reads wait for their writes,
and the live rows equal a rebuild from zero.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from api.tokens import create_token
from domain.application import SalesPlanning
from domain.persistence import close_database, open_database
from projections.engine import LIVE, ProjectionEngine
from projections.registry import all_projections
from tests.test_rebuild import dump


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_workers_on_sqlite_with_inline_projections_apply_every_command_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'salesplan.db'}"
    port = _free_port()
    env = {**os.environ, "SALESPLAN_DATABASE_URL": url, "SALESPLAN_INLINE_PROJECTIONS": "true"}
    server = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        database = open_database(url)
        _id, token = create_token(database, role="admin", label="test")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            unit = client.post("/units", json={"name": "East"}).json()["id"]
            member = client.post("/members", json={"name": "Ann", "role": "rep", "unit_id": unit}).json()["id"]

            def log(i: int) -> int:
                r = client.post("/activities", json={"kind": "call", "member_id": member, "note": f"call {i}"},
                                headers={"Idempotency-Key": f"call-{i}"})
                assert r.status_code == 201, r.text
                return int(r.json()["position"])

            with ThreadPoolExecutor(8) as pool:
                positions = list(pool.map(log, range(80)))
            again = client.post("/activities", json={"kind": "call", "member_id": member, "note": "call 3"},
                                headers={"Idempotency-Key": "call-3"})
            assert again.json()["position"] == positions[3]  # a retry, through whichever worker, appends nothing
            # Read-your-writes through the workers: the projections (in the parent) reach the last position.
            r = client.get("/progress", params={"wait_for_position": max(positions)})
            assert r.status_code == 200, r.text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    app = SalesPlanning(database)
    engine = ProjectionEngine(app, all_projections())
    head = engine.head()
    assert len(set(positions)) == 80 and max(positions) <= head
    statuses = engine.status()
    assert all(s.status == LIVE and s.position == head for s in statuses), statuses
    live = dump(database)
    assert len(live["progress_activities"]) == 80
    engine.rebuild_many(list(engine.projections))
    assert dump(database) == live
    close_database(url)

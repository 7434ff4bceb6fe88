"""The running service as operators see it: offline docs, CORS, Prometheus metrics, and the processes
that act on the projections (alerts and webhooks) running inline in `serve` and in `project`.

A metrics exposition must pass `promtool check metrics` (Debian's prometheus package; CI installs
it) and parse with prometheus_client's own parser; the figures are checked against what the test
did: N requests, N events appended, every projection at the head.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from standardwebhooks.webhooks import Webhook as StandardWebhook

from domain.persistence import Database, open_database
from projections.processes import alerts, webhooks
from projections.processes.transactions import write_transaction
from tests.api_helpers import Api, api_fixture, create_task, running_api  # noqa: F401 — the `api` fixture


@pytest.fixture
def sqlite_db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'worker.db'}"


SECRET = "whsec_" + base64.b64encode(b"salesplan-test-signing-key-32by").decode()
ORIGIN = "https://plans.example.com"


# --- docs without internet ------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_every_script_and_style_from_the_app_itself(api: Api, page: str) -> None:
    html = api.client.get(page)  # no token: the docs are public
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    urls = re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"', html.text)
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts and all(u.startswith("/docs/assets/") for u in urls), urls
    assert "http://" not in html.text and "https://" not in html.text and "//cdn" not in html.text
    for url in urls:
        asset = api.client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] in {"text/javascript", "text/css", "image/png"}
        assert len(asset.content) > 1000
    if page == "/docs":
        assert '"validatorUrl": null' in html.text  # the online validator badge would call out


def test_an_unknown_docs_asset_is_a_404_problem(api: Api) -> None:
    nope = api.client.get("/docs/assets/nope.js")
    assert nope.status_code == 404 and nope.headers["content-type"] == "application/problem+json"


# --- CORS -----------------------------------------------------------------------------------------------


def test_without_allowed_origins_there_is_no_cross_origin_access(api: Api) -> None:
    preflight = api.client.options("/units", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    answer = api.client.get("/me", headers={**api.headers("admin"), "Origin": ORIGIN})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


@pytest.fixture
def cors_api(database_url: str) -> Iterator[Api]:
    with running_api(database_url, cors_allowed_origins=[ORIGIN, "http://localhost:5173"]) as running:
        yield running


def test_an_allowed_origin_is_answered_without_a_token_and_sees_the_headers_it_needs(cors_api: Api) -> None:
    api = cors_api
    preflight = api.client.options("/plans/x/revise", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, if-match, idempotency-key"})
    assert preflight.status_code == 200  # no token asked for a preflight
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "if-match", "idempotency-key"} <= allowed

    created = api.request("admin", "POST", "/units", json={"name": "Pop-up", "parent_id": str(api.world.east)},
                          headers={"Origin": ORIGIN})
    assert created.status_code == 201 and created.headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip().lower() for h in created.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "location", "salesplan-position"} <= exposed
    assert created.headers["etag"] and created.headers["location"]
    refused = api.client.get("/me", headers={"Origin": ORIGIN})  # no token: 401, still readable by the page
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN

    stranger = api.client.options("/units", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers


def test_allowed_origins_are_read_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.settings import Settings

    monkeypatch.setenv("SALESPLAN_CORS_ALLOWED_ORIGINS", f" {ORIGIN}, http://localhost:5173 ,")
    assert Settings().cors_allowed_origins == [ORIGIN, "http://localhost:5173"]
    monkeypatch.setenv("SALESPLAN_CORS_ALLOWED_ORIGINS", f'["{ORIGIN}"]')
    assert Settings().cors_allowed_origins == [ORIGIN]
    monkeypatch.delenv("SALESPLAN_CORS_ALLOWED_ORIGINS")
    assert Settings().cors_allowed_origins == []


# --- metrics ----------------------------------------------------------------------------------------------


def promtool_check(exposition: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (.ci/run installs Debian's prometheus package)")
        pytest.skip("promtool is not installed (apt-get install prometheus); CI=true makes this fatal")
    done = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def samples(exposition: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(exposition) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    matching = [s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0]


def test_the_api_metrics(api: Api) -> None:
    for _ in range(3):
        api.ok("admin", "/units", {"name": f"Pop-up {uuid4().hex[:6]}", "parent_id": str(api.world.east)})
    assert api.post("viewer", "/units", {"name": "nope"}).status_code == 403
    assert api.client.get(f"/deals/{uuid4()}").status_code == 401  # refused before routing
    assert api.get("admin", f"/deals/{uuid4()}").status_code == 404
    assert api.get("admin", "/no/such/path").status_code == 404
    api.services.wait_for(api.head())
    head = api.head()

    response = api.get("viewer", "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    promtool_check(text)
    found = samples(text)
    names = {s.name for s in found}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info",
            "python_gc_collections_total"} <= names
    assert value(found, "salesplan_build_info", version=api.client.app.version) == 1  # type: ignore[attr-defined]
    requests = "salesplan_http_requests_total"
    assert value(found, requests, method="POST", route="/units", status="201") == 3
    assert value(found, requests, method="POST", route="/units", status="403") == 1
    assert value(found, requests, method="GET", route="/deals/{deal_id}", status="401") == 1
    assert value(found, requests, method="GET", route="/deals/{deal_id}", status="404") == 1
    assert value(found, requests, method="GET", route="unmatched", status="404") == 1
    assert value(found, "salesplan_http_request_duration_seconds_count", method="POST", route="/units") == 4
    assert value(found, "salesplan_http_request_duration_seconds_count", method="GET", route="/deals/{deal_id}") == 2
    assert value(found, "salesplan_events_appended_total") == 3  # one event per unit added over HTTP
    assert value(found, "salesplan_event_log_head_position") == head
    assert value(found, "salesplan_database_up") == 1
    for projection in api.services.engine.projections:
        # The engine started at 0 in this process: it has processed every position up to the head.
        assert value(found, "salesplan_projection_events_total", projection=projection) == head
        assert value(found, "salesplan_projection_position", projection=projection) == head
        assert value(found, "salesplan_projection_lag_events", projection=projection) == 0
        assert value(found, "salesplan_projection_batch_duration_seconds_count", projection=projection) >= 1
    assert value(found, "salesplan_webhook_outbox_pending") == 0
    assert {"salesplan_db_pool_in_use", "salesplan_db_pool_overflow", "salesplan_db_pool_size"} <= names


def test_metrics_show_the_outbox_and_a_poison_event(api: Api) -> None:
    database = api.services.database
    hook = webhooks.add_webhook(database, url="https://hooks.example.com/alerts", secret=SECRET)
    at = datetime.now(UTC) - timedelta(minutes=10)
    with write_transaction(database, "alerts") as conn:
        for _ in range(2):
            webhooks.enqueue(conn, alert_id=uuid4(), occurrence=1, event="alert.raised", alert={"id": "x"}, at=at)
    webhooks.deliver_pending(database, now=datetime.now(UTC), send=lambda url, body, headers: 503)
    with write_transaction(database, "alerts") as conn:
        webhooks.enqueue(conn, alert_id=uuid4(), occurrence=1, event="alert.raised", alert={"id": "y"}, at=at)
    assert hook.active
    # A projection stopped by a poison event.
    with database.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE salesplan_projections SET status = 'failed' WHERE name = 'audit'")
    text = api.get("admin", "/metrics").text
    promtool_check(text)
    found = samples(text)
    assert value(found, "salesplan_webhook_outbox_pending") == 3
    assert value(found, "salesplan_webhook_outbox_failing") == 2
    assert value(found, "salesplan_webhook_outbox_oldest_pending_seconds") >= 600
    assert value(found, "salesplan_projection_failed", projection="audit") == 1
    assert value(found, "salesplan_projection_failed", projection="progress") == 0


# --- alerts and webhooks, inline and in the worker --------------------------------------------------------


class Receiver:
    """A webhook endpoint on a free loopback port that verifies every request with the Standard Webhooks library."""

    def __init__(self) -> None:
        self.verified: list[dict[str, Any]] = []
        self.refused: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    outer.verified.append(StandardWebhook(SECRET).verify(body, dict(self.headers.items())))
                    self.send_response(204)
                except Exception as error:
                    outer.refused.append(str(error))
                    self.send_response(400)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        # Bound but not listening: connections are refused until up() — a receiver that is down.
        self.server = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.server_bind()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/salesplan"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def up(self) -> None:
        self.server.server_activate()
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def loopback_webhook(database: Database, url: str) -> UUID:
    """Register the test's own receiver (written directly: endpoints on loopback are not for users to add)."""
    webhooks.setup(database)
    hook = uuid4()
    with write_transaction(database, "alerts") as conn:
        conn.execute(webhooks.webhooks_table.insert().values(id=hook, url=url, secret=SECRET, active=True))
    return hook


def eventually(check: Callable[[], bool], seconds: float = 120.0, log: Path | None = None) -> None:
    """Wait for ``check``; the bound is generous: a loaded two-core machine is slow, never wrong."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s" + (f":\n{log.read_text()}" if log else "")
        time.sleep(0.1)


def pending(database: Database) -> list[webhooks.Delivery]:
    with database.engine.connect() as conn:
        return webhooks.list_deliveries(conn, pending_only=True)


FAST = {"alert_delivery_seconds": 0.1, "alert_evaluation_seconds": 0.5, "webhook_retry_base_seconds": 0.2,
        "webhook_retry_max_seconds": 0.5, "webhook_timeout_seconds": 5.0}


def test_serve_evaluates_alerts_and_delivers_webhooks_inline_through_an_outage(database_url: str,
                                                                               receiver: Receiver) -> None:
    with running_api(database_url, **FAST) as api:
        database = api.services.database
        loopback_webhook(database, receiver.url)
        # Ann's task was due yesterday: overdue, one alert; its webhook finds the receiver down.
        task = api.planning.create_task(title="Send the Globex proposal", assignee_id=api.world.ann,
                                        due=date.today() - timedelta(days=1), actor="setup").id
        api.services.engine.wake.set()
        eventually(lambda: any(d.attempts >= 2 for d in pending(database)))
        (waiting,) = pending(database)
        assert "ConnectError" in (waiting.last_error or "") and waiting.event == "alert.raised"
        receiver.up()
        eventually(lambda: not pending(database) and bool(receiver.verified))
        alerts_now = api.get("admin", "/alerts").json()["alerts"]
        assert [(a["kind"], a["subject_id"]) for a in alerts_now] == [("task_overdue", str(task))]
        (delivery,) = receiver.verified  # once, verified by the receiver's own library
        assert (delivery["type"], delivery["data"]["subject_id"]) == ("alert.raised", str(task))
        assert receiver.refused == []
        text = api.get("admin", "/metrics").text
    found = samples(text)
    assert value(found, "salesplan_webhook_attempts_total", outcome="delivered") == 1
    assert value(found, "salesplan_webhook_attempts_total", outcome="failed") >= 2
    assert value(found, "salesplan_alert_evaluation_duration_seconds_count") >= 1


def test_the_worker_runs_projections_alerts_and_webhooks_and_serves_its_metrics(database_url: str, tmp_path: Path,
                                                                                receiver: Receiver) -> None:
    from domain.application import SalesPlanning

    database = open_database(database_url)
    app = SalesPlanning(database)
    unit = app.add_unit(name="ACME", actor="setup").id
    rep = app.add_member(name="Ann", role="rep", unit_id=unit, actor="setup").id
    app.create_task(title="Send the Globex proposal", assignee_id=rep, due=date.today() - timedelta(days=3),
                    actor="setup")
    alerts.setup(database)
    loopback_webhook(database, receiver.url)
    receiver.up()
    head = app.recorder.max_notification_id()

    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESPLAN_")}
    env |= {"SALESPLAN_DATABASE_URL": database_url, "SALESPLAN_WORKER_METRICS_PORT": "0",
            **{f"SALESPLAN_{k.upper()}": str(v) for k, v in FAST.items()}}
    log = tmp_path / "project.log"
    with log.open("w") as out:
        worker = subprocess.Popen([sys.executable, "-c", "from api.cli import main; main()", "project"], env=env,
                                  cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: "metrics on http://127.0.0.1:" in log.read_text() or worker.poll() is not None, log=log)
        port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text())
        assert port is not None, log.read_text()
        url = f"http://127.0.0.1:{port.group(1)}/metrics"
        eventually(lambda: bool(receiver.verified), log=log)
        eventually(lambda: "salesplan_webhook_attempts_total{outcome=\"delivered\"} 1.0" in httpx.get(url).text, log=log)
        text = httpx.get(url).text
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert "stopped" in log.read_text()
    (delivery,) = receiver.verified
    assert (delivery["type"], delivery["data"]["kind"]) == ("alert.raised", "task_overdue")
    promtool_check(text)
    found = samples(text)
    assert "salesplan_http_requests_total" not in {s.name for s in found}  # a worker serves no API
    assert {"process_cpu_seconds_total", "python_info"} <= {s.name for s in found}
    for projection in ("progress", "pipeline", "audit"):
        assert value(found, "salesplan_projection_events_total", projection=projection) == head
        assert value(found, "salesplan_projection_lag_events", projection=projection) == 0
    assert value(found, "salesplan_alerts_open") == 1
    assert value(found, "salesplan_webhook_outbox_pending") == 0


def test_a_worker_whose_metrics_port_is_taken_still_projects(sqlite_db_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALESPLAN_")}
        env |= {"SALESPLAN_DATABASE_URL": sqlite_db_url, "SALESPLAN_WORKER_METRICS_PORT": str(taken.getsockname()[1])}
        log = tmp_path / "project.log"
        with log.open("w") as out:
            worker = subprocess.Popen([sys.executable, "-c", "from api.cli import main; main()", "project"], env=env,
                                      cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            eventually(lambda: "projecting log_clock" in log.read_text() or worker.poll() is not None, log=log)
            assert "cannot serve metrics on 127.0.0.1" in log.read_text() and worker.poll() is None
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def test_alerts_wait_for_the_projections_they_read_to_catch_up(database: Database) -> None:
    from api.metrics import MeasuredEngine, Metrics
    from api.processes import ProcessRunner
    from api.settings import Settings
    from domain.application import SalesPlanning
    from projections.registry import all_projections

    app = SalesPlanning(database)
    unit = app.add_unit(name="ACME", actor="setup").id
    rep = app.add_member(name="Ann", role="rep", unit_id=unit, actor="setup").id
    for n in range(6):
        app.create_task(title=f"Call back #{n}", assignee_id=rep, due=date.today() - timedelta(days=2), actor="setup")
    metrics = Metrics(http=False)
    engine = MeasuredEngine(app, all_projections(), batch_size=2, metrics=metrics)  # 8 events: 4 batches behind
    engine.setup()
    alerts.setup(database)
    settings = Settings(database_url=database.url, pace_at_risk="0.7")
    runner = ProcessRunner(engine, settings, metrics)
    assert runner.evaluate() is None  # 8 positions behind, more than one batch of 2
    engine.run_once("progress")
    engine.run_once("pipeline")
    assert runner.evaluate() is None  # still 6 behind
    engine.catch_up()
    raised = runner.evaluate()
    assert raised is not None and sorted(a.kind for a in raised) == ["task_overdue"] * 6
    with database.engine.connect() as conn:
        assert alerts.last_run(conn) is not None
    assert settings.alert_config().measure.at_risk == Decimal("0.7")  # the settings are what alerts judge by
    with database.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE salesplan_projections SET status = 'failed' WHERE name = 'pipeline'")
    assert runner.evaluate() is None  # a stopped projection is stale: no evaluation on it

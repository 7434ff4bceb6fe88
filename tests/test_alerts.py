"""Deviation alerts on the retrospective quarter (tests/retro_quarter.py), answers worked out by hand.

The mid-March review runs at 16 March 00:00: 74 of Q1's 90 days are gone (share 0.822222).

    East revenue 30,000: won 16,000 (d1 10,000 on 3 Feb while Ann was in East, d3 6,000);
        expected 24,666.66, pace 0.6486 < 0.80 → behind (owner: Mia, East's manager).
        Open pipeline in East: d4, 3,000 in lead × 0.1 = 300; gap 14,000 → coverage 0.0214 < 0.5 → low.
    Ann revenue 12,000: won 10,000; expected 9,866.66, pace 1.0135 → fine.
        No open deal of Ann's: coverage 0 of the 2,000 gap → low (owner Ann; her unit is West now).
    Cid deals won 2: d5 won; expected 1.64, pace 0.6081 → behind. d6 in proposal × 0.6 covers 0.60 of 1 → fine.
    Company new deals 10: d1 d2 d3 d4 d5 opened in Q1 (d6 in December); pace 5 / 8.22 = 0.6081 → behind;
        Company has no manager: nobody owns it.
    The draft plan's West target raises nothing.
    Stalled ≥ 14 days: d6 in proposal since 15 Jan (59.625 days: 59.62, rounded half to even
        like every day count in the pipeline), d4 in lead since 1 Feb (42.625: 42.62).
    Overdue: t1 (Ann, due 10 March). t4 was rescheduled to 25 March; t3 is due 20 March.

The run of 25 March 00:00 (share 0.922222), after the second half was recorded:
    still behind: East revenue (pace 0.5783), Cid (0.5422), Company (6 new deals / 9.22 = 0.6506);
    still low coverage: East (d4 now qualified: 600 / 14,000 = 0.0429), Ann (d7 in lead: 500 / 2,000 = 0.25);
    d6 still stalled; d4 moved on 18 March (resolved); t1 done on 20 March (resolved); t3 overdue (new).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from uuid import UUID, uuid4

import pytest

from domain.application import SalesPlanning
from domain.errors import NotFound, RuleViolation, ValidationError
from projections.measure.arithmetic import MeasureConfig
from projections.processes.alerts import (
    Alert,
    AlertConfig,
    alert_id,
    evaluate_alerts,
    last_run,
    list_alerts,
    raise_alerts,
    setup,
)
from projections.processes.alerts import acknowledge as acknowledge_alert
from projections.processes.webhooks import (
    add_webhook,
    backoff,
    deliver_pending,
    http_send,
    list_deliveries,
    list_webhooks,
    set_webhook_active,
)
from tests.retro_quarter import RetroQuarter, catch_up

MID_MARCH = datetime(2026, 3, 16, tzinfo=UTC)
LATE_MARCH = datetime(2026, 3, 25, tzinfo=UTC)
CONFIG = AlertConfig(coverage_below=Decimal("0.5"))
SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture
def quarter(app: SalesPlanning) -> RetroQuarter:
    quarter = RetroQuarter(app)
    catch_up(app)
    setup(app.database)
    setup(app.database)  # idempotent
    return quarter


def by_key(alerts: list[Alert]) -> dict[tuple[str, UUID], Alert]:
    return {(a.kind, a.subject_id): a for a in alerts}


def test_the_mid_march_review_and_the_week_after(app: SalesPlanning, quarter: RetroQuarter) -> None:
    q = quarter
    db = app.database
    hook = add_webhook(db, url="http://127.0.0.1:9/hook", secret=SECRET)
    add_webhook(db, url="http://127.0.0.1:9/paused", secret=SECRET, active=False)

    first = by_key(raise_alerts(db, at=MID_MARCH, config=CONFIG))
    assert set(first) == {
        ("target_behind", q.east_revenue), ("target_behind", q.cid_won), ("target_behind", q.company_new),
        ("coverage_low", q.east_revenue), ("coverage_low", q.ann_revenue),
        ("deal_stalled", q.d6), ("deal_stalled", q.d4), ("task_overdue", q.t1),
    }
    east = first[("target_behind", q.east_revenue)]
    assert east.id == alert_id("target_behind", "target", q.east_revenue, "2026-Q1")
    assert (east.owner_id, east.owner_ids, east.unit_id) == (q.mia, (q.mia,), q.east)
    # 16 March: 31 + 28 + 15 = 74 of Q1's 90 days; 30,000 × 74/90 = 24,666.666… → 24,666.67.
    assert east.details["actual"] == "16000.00" and east.details["expected_to_date"] == "24666.67"
    assert east.details["pace"] == "0.6486"
    assert "behind pace" in east.message and "East" in east.message
    assert first[("coverage_low", q.east_revenue)].details["coverage"] == "0.0214"
    ann_cover = first[("coverage_low", q.ann_revenue)]
    assert (ann_cover.owner_id, ann_cover.unit_id, ann_cover.details["coverage"]) == (q.ann, q.west, "0.0000")
    assert first[("target_behind", q.cid_won)].details["pace"] == "0.6081"
    company = first[("target_behind", q.company_new)]
    assert (company.owner_id, company.owner_ids, company.unit_id) == (None, (), q.company)
    assert first[("deal_stalled", q.d6)].details["days_in_stage"] == "59.62"
    assert (first[("deal_stalled", q.d4)].owner_id, first[("deal_stalled", q.d4)].details["days_in_stage"]) == (
        q.bob, "42.62")
    assert (first[("task_overdue", q.t1)].owner_id, first[("task_overdue", q.t1)].details["days_overdue"]) == (q.ann, "6")
    mid_position = app.recorder.max_notification_id()
    assert all(a.raised_at == MID_MARCH and a.raised_position == mid_position and a.occurrence == 1
               for a in first.values())

    # Evaluating again at the same time changes nothing and duplicates nothing.
    again = raise_alerts(db, at=MID_MARCH, config=CONFIG)
    assert sorted(a.id for a in again) == sorted(a.id for a in first.values())
    with db.engine.connect() as conn:
        assert len(list_alerts(conn, open_only=False)) == 8
        assert len(list_deliveries(conn)) == 8  # one per alert raised, for the one active endpoint
        assert {d.webhook_id for d in list_deliveries(conn)} == {hook.id}
        assert {a.subject_id for a in list_alerts(conn, owner_id=q.ann)} == {q.ann_revenue, q.t1}
        assert {a.subject_id for a in list_alerts(conn, unit_id=q.east)} == {q.east_revenue, q.d4}
        assert len(list_alerts(conn, unit_id=q.company)) == 8
        assert {a.subject_id for a in list_alerts(conn, kind="deal_stalled")} == {q.d4, q.d6}

    # Mia has seen East's; Bob may not acknowledge Ann's; an admin takes the one nobody owns.
    acknowledged = acknowledge_alert(db, east.id, q.mia, at=MID_MARCH + timedelta(hours=9))
    assert (acknowledged.acknowledged_at, acknowledged.acknowledged_by) == (MID_MARCH + timedelta(hours=9), str(q.mia))
    with pytest.raises(RuleViolation) as refused:
        acknowledge_alert(db, ann_cover.id, q.bob, at=MID_MARCH)
    assert refused.value.rule == "alert.not_owner"
    with pytest.raises(RuleViolation):
        acknowledge_alert(db, company.id, q.mia, at=MID_MARCH)
    assert acknowledge_alert(db, company.id, None, at=MID_MARCH, admin=True).acknowledged_by == "admin"
    with pytest.raises(NotFound):
        acknowledge_alert(db, uuid4(), q.mia, at=MID_MARCH, admin=True)

    q.second_half()
    head = catch_up(app)
    second = by_key(raise_alerts(db, at=LATE_MARCH, config=CONFIG))
    assert set(second) == {
        ("target_behind", q.east_revenue), ("target_behind", q.cid_won), ("target_behind", q.company_new),
        ("target_at_risk", q.ann_revenue), ("coverage_low", q.east_revenue), ("coverage_low", q.ann_revenue),
        ("deal_stalled", q.d6), ("task_overdue", q.t3),
    }
    # Ann on 25 March: 83 of 90 days, 12,000 × 83/90 = 11,066.67 expected; 10,000 won is a pace of 0.9036,
    # at risk (0.80 ≤ pace < 0.95): a warning, owned by Ann, in the unit she is in now.
    at_risk = second[("target_at_risk", q.ann_revenue)]
    assert (at_risk.details["pace"], at_risk.details["pace_status"], at_risk.details["severity"]) == (
        "0.9036", "at_risk", "warning")
    assert (at_risk.owner_id, at_risk.unit_id, at_risk.details["expected_to_date"]) == (q.ann, q.west, "11066.67")
    east = second[("target_behind", q.east_revenue)]
    assert (east.details["pace"], east.raised_at, east.evaluated_at, east.evaluated_position) == (
        "0.5783", MID_MARCH, LATE_MARCH, head)
    assert east.acknowledged_by == str(q.mia)  # still the same alert: the acknowledgement stands
    assert second[("coverage_low", q.east_revenue)].details["coverage"] == "0.0429"
    assert second[("coverage_low", q.ann_revenue)].details["coverage"] == "0.2500"
    assert second[("target_behind", q.company_new)].details["pace"] == "0.6506"
    assert (second[("task_overdue", q.t3)].owner_id, second[("task_overdue", q.t3)].raised_at) == (q.cid, LATE_MARCH)
    with db.engine.connect() as conn:
        resolved = {a.subject_id: a for a in list_alerts(conn, open_only=False) if not a.is_open}
        assert set(resolved) == {q.d4, q.t1}
        assert all(a.resolved_at == LATE_MARCH and a.resolved_position == head for a in resolved.values())
        # What was open on the 20th, as the runs recorded it: the first run's eight.
        assert len(list_alerts(conn, open_at=datetime(2026, 3, 20, tzinfo=UTC))) == 8
        run = last_run(conn)
        assert run is not None and (run.at, run.position, run.raised, run.resolved, run.open) == (
            LATE_MARCH, head, 2, 2, 8)
        events = sorted(d.event for d in list_deliveries(conn) if d.created_at == LATE_MARCH)
        assert events == ["alert.raised", "alert.raised", "alert.resolved", "alert.resolved"]

    # Lenient pace thresholds (on track from 0.5) resolve the four pace alerts; back to the usual ones, they
    # are raised anew. The thresholds are the server's: the same ones /progress judges pace by.
    lenient = AlertConfig(coverage_below=Decimal("0.5"),
                          measure=MeasureConfig(on_track=Decimal("0.5"), at_risk=Decimal("0.4")))
    assert len(raise_alerts(db, at=LATE_MARCH, config=lenient)) == 4
    reraised = by_key(raise_alerts(db, at=LATE_MARCH, config=CONFIG))[("target_behind", q.east_revenue)]
    assert (reraised.occurrence, reraised.raised_at, reraised.acknowledged_at, reraised.resolved_at) == (
        2, LATE_MARCH, None, None)

    # Runs move forward in time.
    with pytest.raises(RuleViolation) as backwards:
        raise_alerts(db, at=MID_MARCH, config=CONFIG)
    assert backwards.value.rule == "alerts.at_before_last_run"


def test_evaluation_is_a_query_at_any_cut(app: SalesPlanning, quarter: RetroQuarter) -> None:
    position = app.recorder.max_notification_id() or 0
    with app.database.engine.connect() as conn:
        # At 1 March, as known now: d6 in proposal 45 days, d4 in lead 27; no task overdue yet.
        early = evaluate_alerts(conn, at=datetime(2026, 3, 1, tzinfo=UTC), position=position, config=CONFIG)
        assert [(c.kind, c.subject_id) for c in early if c.subject_type != "target"] == [
            ("deal_stalled", quarter.d6), ("deal_stalled", quarter.d4)]
        # A grace of a week keeps t1 (6 days late) quiet; a long stall threshold keeps the deals quiet.
        quiet = evaluate_alerts(conn, at=MID_MARCH, position=position,
                                config=AlertConfig(overdue_grace_days=7, stalled_after_days=60))
        assert [c.kind for c in quiet if c.subject_type != "target"] == []
        # Nothing was stored.
    setup(app.database)
    with app.database.engine.connect() as conn:
        assert list_alerts(conn, open_only=False) == []


def standard_signature(headers: Mapping[str, str], body: bytes) -> str:
    """The Standard Webhooks signature: base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}"."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()).decode()


class Receiver:
    """A fake endpoint: checks every signature, fails while told to."""

    def __init__(self) -> None:
        self.failing = True
        self.received: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        assert headers["webhook-signature"] == standard_signature(headers, body)
        if self.failing:
            return 503
        self.received.append((url, body, dict(headers)))
        return 204


def test_deliveries_survive_a_receiver_that_is_down_and_back_off(app: SalesPlanning, quarter: RetroQuarter) -> None:
    db = app.database
    hook = add_webhook(db, url="https://hooks.example.com/salesplan", secret=SECRET)
    raise_alerts(db, at=MID_MARCH, config=CONFIG)
    receiver = Receiver()

    down = deliver_pending(db, now=MID_MARCH, send=receiver, jitter=lambda delay: delay)
    assert (len(down.delivered), len(down.failed)) == (0, 8)
    with db.engine.connect() as conn:
        pending = list_deliveries(conn, pending_only=True)
    assert {(d.attempts, d.next_attempt_at, d.last_error) for d in pending} == {
        (1, MID_MARCH + timedelta(seconds=30), "HTTP 503")}
    assert deliver_pending(db, now=MID_MARCH + timedelta(seconds=29), send=receiver).failed == []  # not due yet

    receiver.failing = False
    up = deliver_pending(db, now=MID_MARCH + timedelta(seconds=30), send=receiver)
    assert (len(up.delivered), len(up.failed)) == (8, 0)
    assert {url for url, _, _ in receiver.received} == {hook.url}
    assert all(b'"type":"alert.raised"' in body and h["Content-Type"] == "application/json"
               for _, body, h in receiver.received)
    assert len({h["webhook-id"] for _, _, h in receiver.received}) == 8
    with db.engine.connect() as conn:
        assert list_deliveries(conn, pending_only=True) == []
        assert {(d.attempts, d.delivered_at) for d in list_deliveries(conn)} == {(2, MID_MARCH + timedelta(seconds=30))}
    assert deliver_pending(db, now=MID_MARCH + timedelta(days=1), send=receiver).delivered == []  # sent once

    # A paused endpoint keeps its queue; a receiver down for good is retried ever less often, never dropped.
    q = quarter
    q.second_half()
    catch_up(app)
    # t3 raised, Ann's revenue at risk raised, d4 and t1 resolved: four deliveries.
    raise_alerts(db, at=LATE_MARCH, config=CONFIG)
    set_webhook_active(db, hook.id, False)
    paused = deliver_pending(db, now=LATE_MARCH, send=receiver)
    assert (paused.delivered, paused.failed) == ([], [])
    set_webhook_active(db, hook.id, True)
    receiver.failing = True
    now = LATE_MARCH
    waits = []
    for _ in range(9):
        assert len(deliver_pending(db, now=now, send=receiver, jitter=lambda delay: delay).failed) == 4
        with db.engine.connect() as conn:
            pending = list_deliveries(conn, pending_only=True)
        assert len({d.next_attempt_at for d in pending}) == 1
        waits.append((pending[0].next_attempt_at - now).total_seconds())
        now = pending[0].next_attempt_at
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]  # doubling, capped at an hour
    assert {(d.attempts, d.last_error) for d in pending} == {(9, "HTTP 503")}
    with db.engine.connect() as conn:
        assert [h.active for h in list_webhooks(conn)] == [True]
    assert [backoff(n, timedelta(seconds=30), timedelta(hours=1)).total_seconds() for n in range(1, 10)] == [
        30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_a_real_receiver_that_refuses_connections_then_comes_up(app: SalesPlanning, quarter: RetroQuarter) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    # Bound but not listening: connections are refused until server_activate().
    server = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.server_bind()
    port = server.server_address[1]
    db = app.database
    add_webhook(db, url=f"http://127.0.0.1:{port}/alerts", secret=SECRET)
    raise_alerts(db, at=MID_MARCH, config=CONFIG)

    down = deliver_pending(db, now=MID_MARCH, send=http_send)
    assert len(down.failed) == 8 and down.delivered == []
    with db.engine.connect() as conn:
        assert all("ConnectError" in (d.last_error or "") for d in list_deliveries(conn))

    server.server_activate()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        up = deliver_pending(db, now=MID_MARCH + timedelta(seconds=30), send=http_send)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert len(up.delivered) == 8 and up.failed == []
    assert len(received) == 8
    for headers, body in received:
        assert headers["webhook-signature"] == standard_signature(headers, body)
        assert b'"type":"alert.raised"' in body


def test_webhook_endpoints_are_checked(app: SalesPlanning, quarter: RetroQuarter) -> None:
    with pytest.raises(ValidationError):
        add_webhook(app.database, url="ftp://example.com/x", secret=SECRET)
    with pytest.raises(ValidationError):
        add_webhook(app.database, url="https://example.com/x", secret="short")
    with pytest.raises(NotFound):
        set_webhook_active(app.database, uuid4(), True)

"""Webhook deliveries in the Standard Webhooks format, retried with jittered backoff, never lost.

The signature is checked three ways: against the test vector the Standard Webhooks project
publishes, by hand from the spec (base64 HMAC-SHA256 of "{id}.{timestamp}.{body}"), and by a
receiver using the project's own library, which also refuses a replayed (stale) request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from uuid import UUID, uuid4

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from domain.errors import ValidationError
from domain.persistence import Database
from projections.processes import webhooks
from projections.processes.transactions import write_transaction
from projections.processes.webhooks import (
    Response,
    add_webhook,
    backoff,
    deliver_pending,
    enqueue,
    equal_jitter,
    http_send,
    list_deliveries,
    list_webhooks,
    outbox_stats,
    signed_headers,
)

SECRET = "s3cret-s3cret-s3cret"
NOW = datetime(2026, 3, 16, 9, 30, tzinfo=UTC)
ALERT = {"id": "a1", "kind": "task_overdue", "message": "task Run 40 demos was due on 2026-03-10: 6 days overdue"}


@pytest.fixture
def db(database: Database) -> Database:
    webhooks.setup(database)
    return database


def queue(db: Database, count: int = 1, at: datetime = NOW, event: str = "alert.raised") -> list[UUID]:
    """Queue ``count`` deliveries (one alert each) for every active endpoint, as the alert process does."""
    alert_ids = [uuid4() for _ in range(count)]
    with write_transaction(db, "alerts") as conn:
        for alert_id in alert_ids:
            enqueue(conn, alert_id=alert_id, occurrence=1, event=event, alert={**ALERT, "id": str(alert_id)}, at=at)
    return alert_ids


def by_hand(secret_key: bytes, headers: Mapping[str, str], body: bytes) -> str:
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key, signed, hashlib.sha256).digest()).decode()


def test_the_published_test_vector() -> None:
    # From the Standard Webhooks libraries' tests: secret, message id, timestamp, payload, signature.
    headers = signed_headers("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                             datetime.fromtimestamp(1614265330, UTC), b'{"test": 2432232314}')
    assert headers == {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                       "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}


def test_a_plain_secret_is_the_key_itself_and_the_timestamp_is_signed() -> None:
    body = b'{"type":"alert.raised"}'
    headers = signed_headers(SECRET, "d-1", NOW, body)
    assert headers["webhook-timestamp"] == str(int(NOW.timestamp())) == "1773653400"
    assert headers["webhook-signature"] == by_hand(SECRET.encode(), headers, body)
    later = signed_headers(SECRET, "d-1", NOW + timedelta(seconds=1), body)
    assert later["webhook-signature"] != headers["webhook-signature"]  # same body, another attempt: another signature


def test_a_receiver_using_the_standard_library_accepts_fresh_requests_and_refuses_replays() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    receiver = StandardWebhook(secret)
    body = b'{"type":"alert.raised","data":{}}'
    fresh = signed_headers(secret, "d-2", datetime.now(UTC), body)
    assert receiver.verify(body, fresh) == {"type": "alert.raised", "data": {}}
    replayed = signed_headers(secret, "d-2", datetime.now(UTC) - timedelta(minutes=10), body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        receiver.verify(body, replayed)
    forged = {**replayed, "webhook-timestamp": fresh["webhook-timestamp"]}  # a fresh timestamp on the old signature
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        receiver.verify(body, forged)
    # A plain (non-whsec) secret: the receiver passes its bytes.
    plain = signed_headers(SECRET, "d-3", datetime.now(UTC), body)
    assert StandardWebhook(SECRET.encode()).verify(body, plain)["type"] == "alert.raised"


def test_secrets_in_the_standard_form_must_decode(db: Database) -> None:
    with pytest.raises(ValidationError, match="whsec_"):
        add_webhook(db, url="https://hooks.example.com/a", secret="whsec_not*base64*at*all!!")
    with pytest.raises(ValidationError, match="24 to 64 bytes"):
        add_webhook(db, url="https://hooks.example.com/a", secret="whsec_" + base64.b64encode(b"short").decode() + "AAAA")
    add_webhook(db, url="https://hooks.example.com/a", secret="whsec_" + base64.b64encode(b"k" * 24).decode())


def test_a_delivery_is_a_standard_webhook(db: Database) -> None:
    add_webhook(db, url="https://hooks.example.com/salesplan", secret=SECRET)
    (alert,) = queue(db)
    sent: list[tuple[bytes, dict[str, str]]] = []

    def receiver(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        sent.append((body, dict(headers)))
        return 204

    assert len(deliver_pending(db, now=NOW + timedelta(minutes=1), send=receiver).delivered) == 1
    ((body, headers),) = sent
    assert json.loads(body) == {"type": "alert.raised", "timestamp": "2026-03-16T09:30:00+00:00",
                                "data": {**ALERT, "id": str(alert)}}
    with db.engine.connect() as conn:
        (delivery,) = list_deliveries(conn)
    assert headers["webhook-id"] == str(delivery.id)
    assert headers["webhook-timestamp"] == str(int((NOW + timedelta(minutes=1)).timestamp()))  # the attempt's time
    assert headers["webhook-signature"] == by_hand(SECRET.encode(), headers, body)
    assert headers["Content-Type"] == "application/json"


def test_retries_back_off_with_jitter_and_honour_retry_after(db: Database) -> None:
    add_webhook(db, url="https://hooks.example.com/salesplan", secret=SECRET)
    queue(db, 2)

    def down(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        return 503

    # Jitter scales the capped exponential wait; at 0.75: 30 s × 0.75 = 22.5 s after the first failure.
    deliver_pending(db, now=NOW, send=down, jitter=lambda delay: delay * 0.75)
    with db.engine.connect() as conn:
        assert {d.next_attempt_at for d in list_deliveries(conn)} == {NOW + timedelta(seconds=22.5)}
    # The second failure: 60 s × 0.75 = 45 s; a receiver's Retry-After of 120 s is longer, so it wins.
    second = NOW + timedelta(seconds=22.5)

    def busy(url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        return Response(503, retry_after=timedelta(seconds=120))

    deliver_pending(db, now=second, send=busy, jitter=lambda delay: delay * 0.75)
    with db.engine.connect() as conn:
        assert {(d.attempts, d.next_attempt_at) for d in list_deliveries(conn)} == {(2, second + timedelta(seconds=120))}


def test_the_default_jitter_spreads_retries_between_half_and_all_of_the_backoff() -> None:
    delay = backoff(3, timedelta(seconds=30), timedelta(hours=1))  # 30 × 2² = 120 s
    assert delay == timedelta(seconds=120)
    waits = [equal_jitter(delay) for _ in range(200)]
    assert all(timedelta(seconds=60) <= w <= timedelta(seconds=120) for w in waits)
    assert len(set(waits)) > 150  # spread out, not one instant for every delivery that failed together


def test_410_gone_pauses_the_endpoint_and_keeps_its_queue(db: Database) -> None:
    hook = add_webhook(db, url="https://hooks.example.com/gone", secret=SECRET)
    queue(db, 3)
    calls: list[str] = []

    def gone(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        calls.append(url)
        return 410

    run = deliver_pending(db, now=NOW, send=gone)
    assert (len(calls), len(run.failed), run.delivered) == (1, 1, [])  # the other two were not sent
    with db.engine.connect() as conn:
        assert [h.active for h in list_webhooks(conn)] == [False]
        assert len(list_deliveries(conn, pending_only=True)) == 3  # nothing dropped
    webhooks.set_webhook_active(db, hook.id, True)

    def back(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        return 200

    assert len(deliver_pending(db, now=NOW + timedelta(hours=2), send=back).delivered) == 3


def test_the_outbox_counts_what_waits_and_what_fails(db: Database) -> None:
    add_webhook(db, url="https://hooks.example.com/a", secret=SECRET)
    with db.engine.connect() as conn:
        assert outbox_stats(conn) == webhooks.OutboxStats(0, 0, None)
    queue(db, 2, at=NOW)
    queue(db, 1, at=NOW + timedelta(minutes=5))
    with db.engine.connect() as conn:
        assert outbox_stats(conn) == webhooks.OutboxStats(3, 0, NOW)
    outcomes = iter([200, 500, 500])

    def mixed(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        return next(outcomes)

    deliver_pending(db, now=NOW + timedelta(minutes=6), send=mixed)
    with db.engine.connect() as conn:
        stats = outbox_stats(conn)
    assert (stats.pending, stats.failing) == (2, 2)


class Endpoint:
    """A real HTTP receiver on a free loopback port, answering with ``status`` (and ``location``)."""

    def __init__(self, status: int = 204, location: str | None = None) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((self.path, dict(self.headers.items()), body))
                self.send_response(status if self.path == "/hook" else 204)
                if location:
                    self.send_header("Location", location)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_the_real_sender_posts_signed_bytes_and_follows_no_redirect() -> None:
    with Endpoint(status=302, location="/elsewhere") as moved:
        body = b'{"type":"alert.raised"}'
        headers = {"Content-Type": "application/json", **signed_headers(SECRET, "d-9", datetime.now(UTC), body)}
        answer = http_send(moved.url + "/hook", body, headers, timeout=5)
        assert answer.status == 302
        assert [path for path, _, _ in moved.received] == ["/hook"]  # /elsewhere never asked
        ((_, got, sent),) = moved.received
        assert sent == body and got["webhook-signature"] == headers["webhook-signature"]


def test_retry_after_is_read_in_seconds_and_as_a_date() -> None:
    assert webhooks._retry_after("120") == timedelta(seconds=120)
    assert webhooks._retry_after("9" * 40) == timedelta(days=7)
    assert webhooks._retry_after(None) is None and webhooks._retry_after("soon") is None
    in_a_minute = datetime.now(UTC) + timedelta(minutes=1)
    parsed = webhooks._retry_after(in_a_minute.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert parsed is not None and timedelta(seconds=55) <= parsed <= timedelta(seconds=60)

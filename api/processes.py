"""The processes that act on the projections — deviation alerts and webhook deliveries — on one schedule.

``run_processes`` is the one loop both ``salesplan serve`` (inline, the embedded default) and
``salesplan project`` run in a thread: every ``alert_delivery_seconds`` it sends the webhook
deliveries that are due, and every ``alert_evaluation_seconds`` it evaluates the alerts first
(the first round evaluates at once). Alerts depend on the passage of time as well as on events,
hence a clock and not a subscription. An evaluation waits while the projections it reads are
more than one batch behind the log (a worker catching up a long history would otherwise raise
and resolve alerts that were never true) or stopped on a poison event.

What the evaluation judges by is ``Settings.alert_config`` (the thresholds /progress uses too).
A failed round is logged and tried again next round: deliveries stay queued, nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from api.metrics import Metrics
from api.settings import Settings
from domain.persistence import Database
from projections.engine import FAILED, ProjectionEngine
from projections.processes import alerts, webhooks

log = logging.getLogger("salesplan.processes")


def deliver(database: Database, settings: Settings, now: datetime) -> webhooks.DeliveryRun:
    """Send the webhook deliveries due at ``now``, with the configured timeout and retry schedule."""
    def send(url: str, body: bytes, headers: Mapping[str, str]) -> webhooks.Response:
        return webhooks.http_send(url, body, headers, timeout=settings.webhook_timeout_seconds)

    return webhooks.deliver_pending(database, now=now, send=send,
                                    base_delay=timedelta(seconds=settings.webhook_retry_base_seconds),
                                    max_delay=timedelta(seconds=settings.webhook_retry_max_seconds))


@dataclass
class ProcessRunner:
    """One round at a time of the alert evaluation and the webhook deliveries (``run`` loops over rounds)."""

    engine: ProjectionEngine
    settings: Settings
    metrics: Metrics | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    next_evaluation: float = 0.0  # monotonic seconds; 0: evaluate in the first round

    @property
    def database(self) -> Database:
        return self.engine.database

    def caught_up(self) -> bool:
        """Whether the projections alerts read are live and within one batch of the log's head."""
        head = self.engine.head()
        statuses = {s.name: s for s in self.engine.status() if s.name in alerts.READS}
        if len(statuses) < len(alerts.READS) or any(s.status == FAILED for s in statuses.values()):
            return False
        return all(head - s.position <= self.engine.batch_size for s in statuses.values())

    def evaluate(self) -> list[alerts.Alert] | None:
        """Evaluate the alerts now, if the projections they read are caught up; None when it had to wait."""
        if not self.caught_up():
            log.info("alert evaluation waits: the projections it reads are catching up or stopped")
            return None
        started = time.perf_counter()
        try:
            raised = alerts.raise_alerts(self.database, at=self.clock(), config=self.settings.alert_config())
        except Exception:
            if self.metrics:
                self.metrics.alert_run_errors.inc()
            raise
        if self.metrics:
            self.metrics.alert_runs.observe(time.perf_counter() - started)
            self.metrics.alerts_open.set(len(raised))
        log.info("alerts evaluated: %d open", len(raised))
        return raised

    def tick(self) -> None:
        """One round: evaluate the alerts when due, then deliver whatever is due."""
        if time.monotonic() >= self.next_evaluation and self.evaluate() is not None:
            self.next_evaluation = time.monotonic() + self.settings.alert_evaluation_seconds
        run = deliver(self.database, self.settings, self.clock())
        if self.metrics:
            self.metrics.webhook_attempts.labels("delivered").inc(len(run.delivered))
            self.metrics.webhook_attempts.labels("failed").inc(len(run.failed))
        if run.delivered or run.failed:
            log.info("webhooks: %d delivered, %d failed (retried later)", len(run.delivered), len(run.failed))

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.alert_delivery_seconds):
            try:
                self.tick()
            except Exception:  # retried next round; deliveries stay queued
                log.exception("alert and webhook round failed; retrying next round")


def run_processes(engine: ProjectionEngine, settings: Settings, stop: threading.Event,
                  metrics: Metrics | None = None) -> None:
    """Evaluate alerts and deliver webhooks on the configured schedule until ``stop`` is set."""
    ProcessRunner(engine, settings, metrics).run(stop)

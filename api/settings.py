"""One settings object, read from the environment (prefix ``SALESPLAN_``) when the process starts."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.values import DEFAULT_STAGE_PROBABILITIES
from projections.measure.arithmetic import MeasureConfig
from projections.processes.alerts import AlertConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SALESPLAN_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///salesplan.db",
        description="One database for events and projections: a SQLite file (default) or postgresql+psycopg2://…",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    # Run the projection workers inside the API process (the embedded default); production
    # runs `salesplan project` as separate processes and sets this to false.
    inline_projections: bool = True
    # Development only: accept requests without a bearer token, acting as an admin.
    insecure_no_auth: bool = False
    max_body_bytes: int = 1_000_000
    lock_timeout_ms: int = 5000
    projection_batch_size: int = 500
    projection_poll_seconds: float = 0.2
    read_wait_max_seconds: float = 10.0
    # The projection worker evaluates deviation alerts this often, and delivers webhooks this often.
    alert_evaluation_seconds: float = 300.0
    alert_delivery_seconds: float = 5.0
    # Pace thresholds: attainment / expected-to-date.
    pace_ahead: Decimal = Decimal("1.10")
    pace_on_track: Decimal = Decimal("0.95")
    pace_at_risk: Decimal = Decimal("0.80")
    stage_probabilities: dict[str, Decimal] = Field(default_factory=lambda: dict(DEFAULT_STAGE_PROBABILITIES))

    def measure_config(self) -> MeasureConfig:
        """The pace thresholds and stage probabilities every read and every alert evaluation uses."""
        return MeasureConfig(ahead=self.pace_ahead, on_track=self.pace_on_track, at_risk=self.pace_at_risk,
                             stage_probabilities=dict(self.stage_probabilities))

    def alert_config(self) -> AlertConfig:
        """What the alert evaluations judge by: the same thresholds as /progress."""
        return AlertConfig(measure=self.measure_config())

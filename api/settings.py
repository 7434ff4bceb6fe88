"""One settings object, read from the environment (prefix ``SALESPLAN_``) when the process starts."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.values import DEFAULT_STAGE_PROBABILITIES

if TYPE_CHECKING:  # imported where used: every command reads the settings, few need the read side
    from projections.measure.arithmetic import MeasureConfig
    from projections.processes.alerts import AlertConfig

ENV_PREFIX = "SALESPLAN_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = Field(
        default="sqlite:///salesplan.db",
        description="One database for events and projections: a SQLite file (default) or postgresql+psycopg2://…",
        repr=False,  # it may carry a password: shown only through api.redaction.mask_url
    )
    host: str = Field(default="127.0.0.1", description="Interface `salesplan serve` binds")
    port: int = Field(default=8000, description="Port `salesplan serve` listens on")
    # Production runs `salesplan project` as separate processes and sets this to false.
    inline_projections: bool = Field(
        default=True, description="`salesplan serve` also runs the projections, alerts and webhook deliveries")
    workers: int = Field(default=0, description="API worker processes of `salesplan serve` (0: one per core); with "
                                                "several, the inline projections run in the serving process only")
    directory_max_age_seconds: float = Field(
        default=0.05, description="How stale what authorization caches (a verified token, a member's unit, the unit "
                                  "tree) may be after another process changed it; this process's changes apply at once")
    insecure_no_auth: bool = Field(
        default=False, description="Development only: requests without a bearer token act as an admin")
    max_body_bytes: int = Field(default=1_000_000, description="Largest request body accepted (413 beyond)")
    lock_timeout_ms: int = Field(default=5000, description="A writer waiting longer for the event store's lock fails (503)")
    projection_batch_size: int = Field(default=500, description="Events per projection transaction")
    projection_poll_seconds: float = Field(default=0.2, description="How often idle projections look for new events")
    read_wait_max_seconds: float = Field(default=10.0, description="Longest wait of a read for `wait_for_position`")
    # Alerts depend on the passage of time: they are evaluated periodically, deliveries sent more often.
    alert_evaluation_seconds: float = Field(default=300.0, description="How often deviation alerts are evaluated")
    alert_delivery_seconds: float = Field(default=5.0, description="How often due webhook deliveries are sent")
    # Pace thresholds: attainment / expected-to-date.
    pace_ahead: Decimal = Field(default=Decimal("1.10"), description="Pace at or above which a target is ahead")
    pace_on_track: Decimal = Field(default=Decimal("0.95"), description="Pace at or above which a target is on track")
    pace_at_risk: Decimal = Field(default=Decimal("0.80"), description="Pace at or above which a target is at risk")
    stage_probabilities: dict[str, Decimal] = Field(
        default_factory=lambda: dict(DEFAULT_STAGE_PROBABILITIES),
        description="Win probability of each open stage, as JSON (weighted pipeline)")

    # --- operations -------------------------------------------------------------------------
    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (comma-separated, e.g. https://app.example.com); "
                    "default none: no cross-origin access",
    )
    worker_metrics: bool = Field(default=True, description="`salesplan project` serves its own Prometheus metrics")
    worker_metrics_host: str = Field(default="127.0.0.1", description="Interface of the worker's metrics endpoint")
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535,
                                     description="Port of the worker's metrics endpoint (0: any free port, logged)")
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, description="How long one webhook attempt may take")
    webhook_retry_base_seconds: float = Field(default=30.0, gt=0,
                                              description="Wait after a webhook's first failed attempt (then doubled)")
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0,
                                             description="Longest wait between two attempts of a webhook")

    def measure_config(self) -> MeasureConfig:
        """The pace thresholds and stage probabilities every read and every alert evaluation uses."""
        from projections.measure.arithmetic import MeasureConfig

        return MeasureConfig(ahead=self.pace_ahead, on_track=self.pace_on_track, at_risk=self.pace_at_risk,
                             stage_probabilities=dict(self.stage_probabilities))

    def alert_config(self) -> AlertConfig:
        """What the alert evaluations judge by: the same thresholds as /progress."""
        from projections.processes.alerts import AlertConfig

        return AlertConfig(measure=self.measure_config())

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return value


def env_name(field: str) -> str:
    """The environment variable that sets the setting ``field``."""
    return ENV_PREFIX + field.upper()

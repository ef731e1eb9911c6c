"""notify's one settings object (environment variables, prefix-free)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from common.settings import DatabaseSettings, ServiceSettings
from notify.deliveries import RetryPolicy


class NotifySettings(ServiceSettings, DatabaseSettings):
    notify_group_id: str = Field(
        default="facestream-notify",
        description="notify's own consumer group on images.results (a prefix of schemas/access.py).",
    )
    notify_host: str = "127.0.0.1"
    notify_port: int = Field(default=6070, description="/metrics, /healthz, /readyz of notify.")
    webhook_allow_private: bool = Field(
        default=True,
        description="Deliver to private and loopback addresses (self-hosted receivers). Link-local and "
        "cloud metadata addresses are refused whatever this says.",
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Per-request timeout.")
    webhook_max_attempts: int = Field(default=8, ge=1, le=100, description="Attempts, then given up.")
    webhook_retry_base_s: float = Field(
        default=5.0, gt=0, description="Backoff: attempt n is retried after base * 2^(n-1) seconds."
    )
    webhook_retry_max_s: float = Field(default=900.0, gt=0, description="Longest wait between attempts.")
    webhook_max_age_s: float = Field(
        default=3600.0, gt=0, description="A delivery not delivered this long after it was made is given up."
    )
    webhook_concurrency: int = Field(
        default=64, ge=1, description="Requests in flight, all webhooks together."
    )
    webhook_per_hook_concurrency: int = Field(
        default=4,
        ge=1,
        description="Requests in flight to one webhook: a slow receiver holds at most this many,"
        " never the others' slots.",
    )
    webhook_poll_s: float = Field(default=0.25, gt=0, description="How often due deliveries are looked for.")
    notify_drain_s: float = Field(
        default=10.0, ge=0, description="At shutdown, how long requests in flight may take to finish."
    )

    @model_validator(mode="after")
    def _backoff_fits(self) -> Self:
        if self.webhook_retry_max_s < self.webhook_retry_base_s:
            raise ValueError("WEBHOOK_RETRY_MAX_S must be at least WEBHOOK_RETRY_BASE_S")
        return self

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.webhook_max_attempts,
            base_delay_s=self.webhook_retry_base_s,
            max_delay_s=self.webhook_retry_max_s,
            max_age_s=self.webhook_max_age_s,
        )

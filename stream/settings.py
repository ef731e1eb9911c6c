"""The stream service's one settings object."""

from __future__ import annotations

from pydantic import Field

from common.settings import DatabaseSettings, ServiceSettings


class StreamSettings(ServiceSettings, DatabaseSettings):
    stream_app_id: str = Field(default="facestream-stream", description="Faust app id = consumer group.")
    recognizer_group_id: str = Field(
        default="facestream-recognizers",
        description="The recognizers' consumer group (RECOGNIZER_GROUP_ID there too), whose lag is exported.",
    )
    stream_web_host: str = "127.0.0.1"
    stream_web_port: int = Field(default=6066, description="/metrics, /healthz, /readyz of the Faust worker.")
    retry_max_attempts: int = Field(
        default=4, ge=1, description="Tries per image before it is dead-lettered."
    )
    retry_base_delay_s: float = Field(default=1.0, ge=0, description="Backoff: base * 2^(attempt-1).")
    retry_max_delay_s: float = Field(default=60.0, ge=0)
    image_bytes_retention_days: float = Field(
        default=30, gt=0, description="Stored image bytes (for re-runs) are dropped after this long."
    )
    keep_image_bytes: bool = Field(default=True, description="Store submitted bytes so images can be re-run.")
    handler_max_attempts: int = Field(
        default=5,
        ge=1,
        description="Tries of an effect failing with an unexpected error, then the event is dead-lettered.",
    )
    stream_drain_s: float = Field(
        default=5.0, ge=0, description="At shutdown, how long the event in progress may take to finish."
    )
    retry_poll_s: float = Field(default=0.25, gt=0, description="How often due retries are looked for.")
    reconcile_interval_s: float = Field(default=30.0, gt=0, description="How often the reconciler runs.")
    reconcile_after_s: float = Field(
        default=120.0, gt=0, description="An image pending this long (recognizers past it) is re-dispatched."
    )

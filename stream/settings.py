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

"""The ingest service's one settings object."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from common.auth import AuthSettings
from common.settings import DatabaseSettings, ServiceSettings


class IngestSettings(ServiceSettings, DatabaseSettings, AuthSettings):
    """Everything ingest needs. The database is used only to verify API keys."""

    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8000
    images_root: Path | None = Field(
        default=None,
        description="Folder the legacy path-based endpoints may read from; unset disables them (403).",
    )
    max_image_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        description="Largest image accepted. Images travel inside the event, base64-encoded, "
        "so this must stay well below the topics' max.message.bytes (16 MiB).",
    )
    max_batch_files: int = Field(default=100, ge=1)
    max_pixels: int = Field(
        default=50_000_000, ge=1, description="Declared pixel count above which an upload is refused."
    )
    kafka_delivery_timeout_ms: int = Field(
        default=15_000, ge=1_000, description="How long an upload waits for the broker's ack before 503."
    )
    max_json_bytes: int = Field(
        default=1024 * 1024, ge=1, description="Largest JSON body of the legacy endpoints."
    )

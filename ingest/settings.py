"""The ingest service's one settings object."""

from __future__ import annotations

from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from common.auth import AuthSettings
from common.docs import DocsSettings
from common.settings import DatabaseSettings, ServiceSettings

MIB = 1024 * 1024


class IngestSettings(ServiceSettings, DatabaseSettings, AuthSettings, DocsSettings):
    """Everything ingest needs. The database verifies API keys and receives each accepted
    image's ``pending`` row (see :mod:`ingest.pending`)."""

    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8000
    results_base_url: str = Field(
        default="http://127.0.0.1:8001",
        description="Public base URL of the results API (scheme, host, port, optional path prefix); "
        "each accepted image's result_url is <this>/v1/images/<id>.",
    )
    images_root: Path | None = Field(
        default=None,
        description="Folder the legacy path-based endpoints may read from; unset disables them (403).",
    )
    max_image_bytes: int = Field(
        default=10 * MIB,
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
    max_request_bytes: int = Field(
        default=128 * MIB,
        ge=1,
        description="Largest upload request (multipart/form-data, every file of a batch together), counted "
        "as it arrives (chunked too): 413 past it. Uploaded files over 1 MiB are spooled to /tmp while the "
        "request is read, and the pod's /tmp is an emptyDir of 512 MiB (deploy/k8s/base/ingest.yaml): "
        "keep this at a quarter of it or less, so that four requests at the limit fit at once.",
    )
    max_json_bytes: int = Field(
        default=1 * MIB,
        ge=1,
        description="Largest body of any other kind (the legacy endpoints' JSON); held in memory, "
        "never spooled.",
    )
    db_pool_max_size: int = Field(
        default=8, ge=1, description="Connections to PostgreSQL (API keys and pending rows)."
    )
    pending_write_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long recording an accepted batch's pending rows may wait for PostgreSQL "
        "before the rows go to the in-memory backlog (the upload is answered 202 either way).",
    )
    pending_backlog_max: int = Field(
        default=10_000,
        ge=1,
        description="Most pending rows kept in memory while PostgreSQL is unreachable; beyond it the "
        "oldest are dropped (the projector still creates them from the events) and counted.",
    )

    @model_validator(mode="after")
    def _an_image_fits_in_a_request(self) -> Self:
        if self.max_request_bytes <= self.max_image_bytes:
            raise ValueError(
                f"MAX_REQUEST_BYTES ({self.max_request_bytes}) must be larger than MAX_IMAGE_BYTES "
                f"({self.max_image_bytes}): one image of the largest size must fit in an upload"
            )
        return self

    @field_validator("results_base_url")
    @classmethod
    def _absolute_http_url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(
                f"RESULTS_BASE_URL must be an absolute http(s) URL without query or fragment, not {v!r}"
            )
        return v.strip().rstrip("/")

"""Settings of the results API (``python -m api``), from the environment or ``.env``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.auth import AuthSettings
from common.settings import DatabaseSettings, ServiceSettings

MIB = 1024 * 1024


class ApiSettings(ServiceSettings, DatabaseSettings, AuthSettings):
    """Everything the API needs; invalid values fail at start-up, not on the first request."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    api_host: str = Field(default="127.0.0.1", description="Interface to listen on (0.0.0.0 in containers).")
    api_port: int = Field(default=8001, ge=1, le=65535)
    db_pool_max_size: int = Field(default=10, ge=1)
    enroll_max_bytes: int = Field(
        default=10 * MIB, ge=1, description="Largest enrollment photo accepted; larger ones get 413."
    )
    kafka_delivery_timeout_ms: int = Field(
        default=15_000,
        ge=1_000,
        description="How long a request waits for the broker to acknowledge an event before it answers 503.",
    )
    enroll_num_jitters: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Jittered copies averaged into an enrolled face's encoding: about 10x the encoding "
        "time, paid once per enrolled face, for a steadier gallery (docs/MATCHING.md).",
    )
    rerun_max: int = Field(default=10_000, ge=1, description="Most images one bulk re-run may resubmit.")
    catch_up_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="After a database outage, how long an unknown image id answers 503 (rows written "
        "during the outage may still be on their way) instead of 404.",
    )

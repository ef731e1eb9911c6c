"""Settings of the results API (``python -m api``), from the environment or ``.env``."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.auth import AuthSettings
from common.docs import DocsSettings
from common.settings import DatabaseSettings, ServiceSettings
from recognizer.gallery import AGGREGATIONS, DEFAULT_AGGREGATION, DEFAULT_TOLERANCE

MIB = 1024 * 1024


class ApiSettings(ServiceSettings, DatabaseSettings, AuthSettings, DocsSettings):
    """Everything the API needs; invalid values fail at start-up, not on the first request."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    api_host: str = Field(default="127.0.0.1", description="Interface to listen on (0.0.0.0 in containers).")
    api_port: int = Field(default=8001, ge=1, le=65535)
    db_pool_max_size: int = Field(default=10, ge=1)
    enroll_max_bytes: int = Field(
        default=10 * MIB, ge=1, description="Largest enrollment photo accepted; larger ones get 413."
    )
    max_request_bytes: int = Field(
        default=16 * MIB,
        ge=1,
        description="Largest upload request (multipart/form-data: an enrollment photo), counted as it "
        "arrives (chunked too): 413 past it. Uploaded files over 1 MiB are spooled to /tmp while the "
        "request is read, and the pod's /tmp is an emptyDir of 256 MiB (deploy/k8s/base/api.yaml): "
        "sixteen requests at the limit fit at once.",
    )
    max_json_bytes: int = Field(
        default=1 * MIB,
        ge=1,
        description="Largest body of any other kind (JSON); held in memory, never spooled.",
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
    scan_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="How long enrollment, /v1/verify and /v1/detect wait for a recognizer to scan a photo "
        "(faces.scan) before they answer 503; a request not taken by then is skipped by the recognizers.",
    )
    dead_letter_replay_deadline_s: float = Field(
        default=60.0,
        gt=0,
        description="How long one dead-letter replay call reads before it stops (the next call continues).",
    )
    catch_up_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="After a database outage, how long an unknown image id answers 503 (rows written "
        "during the outage may still be on their way) instead of 404.",
    )

    review_window: int = Field(
        default=2000,
        ge=1,
        le=20_000,
        description="The most unknown faces the review page groups at once (the newest); grouping "
        "costs the pairs of them (api/review.py).",
    )
    review_cluster_threshold: float = Field(
        default=0.5, gt=0, lt=2, description="Two unknown faces closer than this are linked in one group."
    )
    review_enroll_max: int = Field(
        default=5, ge=1, le=50, description="Most faces of a named group enrolled (those nearest its centre)."
    )
    review_radius: float = Field(
        default=0.6,
        gt=0,
        lt=2,
        description="An unknown face this close to a named group has its image matched again (the "
        "recognizers' rule then decides).",
    )

    # Verification and detection (api/routes/verify.py). The two MATCH_* variables are the
    # recognizers' own (recognizer/settings.py), read under the same names so that one
    # value configures both: /v1/verify decides as recognition does.
    match_tolerance: float = Field(
        default=DEFAULT_TOLERANCE,
        gt=0,
        lt=2,
        description="The recognizers' tolerance: /v1/verify answers same_person when the distance is "
        "at most this. Set it for the API and the recognizers alike.",
    )
    match_aggregation: str = Field(
        default=DEFAULT_AGGREGATION,
        description=f"How /v1/verify aggregates a person's enrolled faces into one distance, as the "
        f"recognizers do ({', '.join(AGGREGATIONS)}). Set it for the API and the recognizers alike.",
    )
    verify_max_bytes: int = Field(
        default=10 * MIB,
        ge=1,
        description="Largest photo /v1/verify and /v1/detect accept (each photo); larger ones get 413. "
        "Two photos together must also fit in MAX_REQUEST_BYTES.",
    )
    verify_rate_per_minute: int = Field(
        default=30,
        ge=1,
        description="Calls of /v1/verify and /v1/detect (together) a key may make a minute, on top of "
        "its own rate: each costs a recognizer process about a second per photo, taken from recognition "
        "and shared with enrollment. The bootstrap admin key is not limited.",
    )

    @field_validator("match_aggregation")
    @classmethod
    def _known_aggregation(cls, v: str) -> str:
        if v not in AGGREGATIONS:
            raise ValueError(f"MATCH_AGGREGATION must be one of {', '.join(AGGREGATIONS)}")
        return v

    @model_validator(mode="after")
    def _a_photo_fits_in_a_request(self) -> Self:
        if self.max_request_bytes <= self.enroll_max_bytes:
            raise ValueError(
                f"MAX_REQUEST_BYTES ({self.max_request_bytes}) must be larger than ENROLL_MAX_BYTES "
                f"({self.enroll_max_bytes}): a photo of the largest size must fit in an upload"
            )
        if self.max_request_bytes <= self.verify_max_bytes:
            raise ValueError(
                f"MAX_REQUEST_BYTES ({self.max_request_bytes}) must be larger than VERIFY_MAX_BYTES "
                f"({self.verify_max_bytes}): a photo of the largest size must fit in an upload"
            )
        return self

    # Webhooks (api/routes/webhooks.py; notify/ delivers them and has the same setting).
    webhook_allow_private: bool = Field(
        default=True,
        description="Accept webhook URLs on private and loopback addresses (self-hosted receivers). "
        "Link-local and cloud metadata addresses are refused whatever this says.",
    )

"""The webhook contract: event names and the JSON body each delivery carries.

A body is sent as it was made, byte for byte, on every attempt of its delivery (the
signature ``X-Facestream-Signature: sha256=<hex HMAC-SHA256 of the body>`` covers those
bytes). Fields may be added; none is removed or changes meaning.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from schemas.events import FailureReason


class WebhookEvent(StrEnum):
    FACE_IDENTIFIED = "face.identified"  # an enrolled person was seen: one per named face
    FACE_UNKNOWN = "face.unknown"  # one per face no enrolled person matched
    IMAGE_FAILED = "image.failed"  # the image will not be recognized (ImageFailed)


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True)


class PersonRef(_Body):
    id: str
    name: str | None


class BoxBody(_Body):
    top: int
    right: int
    bottom: int
    left: int


class FaceBody(_Body):
    index: int
    box: BoxBody
    distance: float | None


class WebhookBody(_Body):
    """What a receiver gets. ``face`` for the face events; ``reason`` and ``detail`` for
    ``image.failed``; ``person`` only for ``face.identified``."""

    event: WebhookEvent
    delivery_id: str
    webhook_id: str
    image_id: str
    run: int
    camera: str | None
    person: PersonRef | None = None
    face: FaceBody | None = None
    reason: FailureReason | None = None
    detail: str | None = None
    occurred_at: datetime

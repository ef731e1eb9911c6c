"""The pure part of webhooks: which deliveries a result makes, their bodies and
signatures, and when an attempt is tried again. No I/O here (notify.consumer and
notify.sender carry it out).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from pydantic import BaseModel

from schemas.events import FaceMatch, FacesRecognized, ImageFailed
from schemas.webhooks import BoxBody, FaceBody, PersonRef, WebhookBody, WebhookEvent

#: Delivery ids are uuid5 of this namespace and (webhook, image, run, event, face index):
#: a result read twice makes the same ids, so it is stored once.
DELIVERY_NAMESPACE = uuid.UUID("6f1c2a57-0d3e-4c1b-9a55-5e0b7f3a9c21")
SIGNATURE_PREFIX = "sha256="


@dataclass(frozen=True)
class Webhook:
    """A webhook as notify reads it. Empty ``cameras``/``people``: any."""

    id: str
    url: str
    events: frozenset[str]
    cameras: frozenset[str]
    people: frozenset[str]
    secret: str


@dataclass(frozen=True)
class Delivery:
    """One body to send to one webhook; ``body`` is sent byte for byte on every attempt."""

    id: str
    webhook_id: str
    event: WebhookEvent
    image_id: str
    run: int
    face_index: int | None
    body: bytes


def delivery_id(webhook_id: str, image_id: str, run: int, event: str, face_index: int | None) -> str:
    key = f"{webhook_id}:{image_id}:{run}:{event}:{'' if face_index is None else face_index}"
    return str(uuid.uuid5(DELIVERY_NAMESPACE, key))


def sign(secret: str, body: bytes) -> str:
    """``X-Facestream-Signature``: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """What a receiver does (constant-time comparison)."""
    return hmac.compare_digest(sign(secret, body), signature)


def _wants(hook: Webhook, event: WebhookEvent, camera: str | None, person_id: str | None) -> bool:
    """The filters: the event is subscribed; the camera is listed (or none is); the person
    is listed (or none is: with a people filter only events naming one of them match)."""
    if event.value not in hook.events:
        return False
    if hook.cameras and camera not in hook.cameras:
        return False
    return not hook.people or (person_id is not None and person_id in hook.people)


def _dump(body: BaseModel) -> bytes:
    return orjson.dumps(body.model_dump(mode="json"))


def _face(face: FaceMatch) -> FaceBody:
    box = BoxBody(top=face.box.top, right=face.box.right, bottom=face.box.bottom, left=face.box.left)
    return FaceBody(index=face.index, box=box, distance=face.distance)


def plan(
    result: FacesRecognized | ImageFailed,
    webhooks: Iterable[Webhook],
    *,
    camera: str | None,
    names: Mapping[str, str],
    erased: Collection[str] = (),
) -> list[Delivery]:
    """The deliveries one result makes: for a :class:`FacesRecognized`, one per face and
    webhook that wants it (``face.identified`` for a named face, ``face.unknown`` otherwise);
    for an :class:`ImageFailed`, one ``image.failed`` per webhook that wants it.

    ``names``: person id -> name from the read model (results carry ids only); a person
    missing there is named null. A person in ``erased`` is not named at all: their face is
    sent as ``face.unknown``.
    """
    hooks = list(webhooks)
    out: list[Delivery] = []
    if isinstance(result, ImageFailed):
        for hook in hooks:
            if not _wants(hook, WebhookEvent.IMAGE_FAILED, camera, None):
                continue
            did = delivery_id(hook.id, result.image_id, result.run, WebhookEvent.IMAGE_FAILED, None)
            body = WebhookBody(
                event=WebhookEvent.IMAGE_FAILED,
                delivery_id=did,
                webhook_id=hook.id,
                image_id=result.image_id,
                run=result.run,
                camera=camera,
                reason=result.reason,
                detail=result.detail,
                occurred_at=result.failed_at,
            )
            out.append(
                Delivery(
                    did, hook.id, WebhookEvent.IMAGE_FAILED, result.image_id, result.run, None, _dump(body)
                )
            )
        return out
    for face in result.faces:
        person_id = face.person_id if face.person_id not in erased else None
        event = WebhookEvent.FACE_IDENTIFIED if person_id else WebhookEvent.FACE_UNKNOWN
        person = PersonRef(id=person_id, name=names.get(person_id)) if person_id else None
        for hook in hooks:
            if not _wants(hook, event, camera, person_id):
                continue
            did = delivery_id(hook.id, result.image_id, result.run, event, face.index)
            body = WebhookBody(
                event=event,
                delivery_id=did,
                webhook_id=hook.id,
                image_id=result.image_id,
                run=result.run,
                camera=camera,
                person=person,
                face=_face(face),
                occurred_at=result.recognized_at,
            )
            out.append(Delivery(did, hook.id, event, result.image_id, result.run, face.index, _dump(body)))
    return out


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt n (1-based) that failed is tried again after
    ``base * 2^(n-1)`` seconds (at most ``max_delay``); after ``max_attempts`` attempts, or
    once the delivery is older than ``max_age``, it is given up (recorded as failed)."""

    max_attempts: int = 8
    base_delay_s: float = 5.0
    max_delay_s: float = 900.0
    max_age_s: float = 3600.0

    def delay(self, attempts: int) -> float:
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempts - 1)))

    def next_attempt(self, attempts: int, created_at: datetime, now: datetime) -> datetime | None:
        """When to try again after ``attempts`` failed attempts, or None: give up."""
        if attempts >= self.max_attempts:
            return None
        due = now + timedelta(seconds=self.delay(attempts))
        if due - created_at > timedelta(seconds=self.max_age_s):
            return None
        return due


def succeeded(status: int) -> bool:
    """Only a 2xx answer delivers (redirects are not followed: a 3xx is a failed attempt)."""
    return 200 <= status < 300

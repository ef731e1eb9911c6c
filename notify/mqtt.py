"""The pure part of MQTT: the broker URL, the topics, the messages one result makes and
Home Assistant's discovery configs. No I/O here (notify.mqtt_link holds the connection,
notify.mqtt_consumer feeds it from images.results).

Topics, under ``MQTT_TOPIC_PREFIX`` (``facestream``):

=====================================  ========  =============================================
topic                                  retained  what
=====================================  ========  =============================================
``{prefix}/status``                    yes       ``online``; ``offline`` (the Last Will)
``{prefix}/cameras/{camera}/recognized``  no     one JSON per recognized image of the camera
``{prefix}/cameras/{camera}/person``   yes       the last person seen there (name), or
                                                 ``unknown`` when only unknown faces were
``{prefix}/cameras/{camera}/attributes``  yes    JSON about that sighting (id, image, distance)
``{prefix}/cameras/{camera}/failed``   no        one JSON per image that will not be recognized
``{prefix}/people/{person_id}/seen``   no        one JSON per sighting of the person
``{discovery}/sensor/facestream_{camera}/config``  yes  Home Assistant's discovery config
=====================================  ========  =============================================

``{camera}`` is the image's camera made a safe topic level (:func:`camera_slug`). People
are named only from the read model, never from the results topic; an erased person is
an unknown face (never named, never given a ``people/`` topic).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from schemas.events import Box, FaceMatch, FacesRecognized, ImageFailed

#: The camera level of images submitted without a camera.
UNKNOWN_CAMERA = "unknown_camera"
#: A camera's state when the last image had faces but none of an enrolled person.
UNKNOWN_PERSON = "unknown"
#: The availability payloads of ``{prefix}/status`` (Home Assistant's defaults).
ONLINE, OFFLINE = "online", "offline"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: Anything else in a camera name becomes "_" in topics and Home Assistant ids.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class MqttUrlError(ValueError):
    """``MQTT_URL`` is not ``mqtt://[user:password@]host[:port]`` (or ``mqtts://``)."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in (from ``MQTT_URL``); ``tls`` for ``mqtts://``."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_url(url: str) -> BrokerAddress:
    """``mqtt://[user:password@]host[:port]`` (1883) or ``mqtts://...`` (TLS, 8883);
    user and password percent-encoded. Raises :class:`MqttUrlError` saying what is wrong
    (never quoting the password)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS:
        raise MqttUrlError(f"the scheme must be mqtt:// or mqtts://, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise MqttUrlError("no host: expected mqtt://[user:password@]host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttUrlError("only mqtt://[user:password@]host[:port]: no path, query or fragment")
    try:
        port = DEFAULT_PORTS[parts.scheme] if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise MqttUrlError("the port must be a number from 1 to 65535")
    if parts.password is not None and not parts.username:
        raise MqttUrlError("a password without a user name")
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def check_prefix(prefix: str) -> str:
    """A topic prefix: one or more levels, without wildcards, empty levels or a leading ``$``."""
    levels = prefix.split("/")
    if not prefix or any(not level for level in levels):
        raise ValueError(f"{prefix!r} has an empty topic level (no leading, trailing or double '/')")
    if any(c in prefix for c in "+#\0"):
        raise ValueError(f"{prefix!r} contains a wildcard ('+', '#') or NUL")
    if prefix.startswith("$"):
        raise ValueError(f"{prefix!r} starts with '$' (topics of the broker itself)")
    return prefix


def camera_slug(camera: str | None) -> str:
    """The topic level (and Home Assistant id) of a camera: ASCII letters, digits, ``_``
    and ``-``; accents dropped, anything else made ``_``; no camera: ``unknown_camera``.
    Two names that differ only in those characters (``front door``, ``front/door``) share
    their topics."""
    if camera is None:
        return UNKNOWN_CAMERA
    ascii_name = unicodedata.normalize("NFKD", camera).encode("ascii", "ignore").decode()
    slug = _UNSAFE.sub("_", ascii_name).strip("_")
    return slug or UNKNOWN_CAMERA


@dataclass(frozen=True)
class Topics:
    prefix: str = "facestream"
    discovery_prefix: str = "homeassistant"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def home_assistant_status(self) -> str:
        """Where Home Assistant says ``online`` when it (re)starts: discovery is sent again."""
        return f"{self.discovery_prefix}/status"

    def camera(self, slug: str, leaf: str) -> str:
        return f"{self.prefix}/cameras/{slug}/{leaf}"

    def seen(self, person_id: str) -> str:
        return f"{self.prefix}/people/{person_id}/seen"

    def discovery(self, slug: str) -> str:
        return f"{self.discovery_prefix}/sensor/facestream_{slug}/config"


#: What a :class:`Publication` is, for metrics and logs.
KINDS = ("status", "discovery", "recognized", "seen", "attributes", "person", "failed")


@dataclass(frozen=True)
class Publication:
    """One MQTT message to publish (QoS 1); ``kind`` is one of :data:`KINDS`."""

    kind: str
    topic: str
    payload: bytes
    retain: bool = False


def _json(value: Mapping[str, Any]) -> bytes:
    return orjson.dumps(value)


def _box(box: Box) -> dict[str, int]:
    return {"top": box.top, "right": box.right, "bottom": box.bottom, "left": box.left}


def _at(moment: datetime) -> str:
    return moment.isoformat()


def status(topics: Topics, online: bool) -> Publication:
    """notify's availability (retained): ``online`` once connected; the broker publishes
    ``offline`` (the Last Will) if the connection is lost, notify itself when it stops."""
    return Publication("status", topics.status, (ONLINE if online else OFFLINE).encode(), retain=True)


def discovery_config(topics: Topics, camera: str | None) -> Publication:
    """Home Assistant's MQTT discovery config (retained) of the camera's sensor: its state is
    the name of the last person seen, its attributes that sighting."""
    slug = camera_slug(camera)
    config = {
        "name": "Last person seen",
        "unique_id": f"facestream_{slug}_last_person",
        # Home Assistant 2025.10 and later read default_entity_id (object_id stops working in
        # 2026.4); older ones read object_id. An entity id is lower case, without hyphens.
        "default_entity_id": f"sensor.facestream_{slug.lower().replace('-', '_')}_last_person",
        "object_id": f"facestream_{slug}_last_person",
        "state_topic": topics.camera(slug, "person"),
        "json_attributes_topic": topics.camera(slug, "attributes"),
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "icon": "mdi:face-recognition",
        "device": {
            "identifiers": [f"facestream_{slug}"],
            "name": camera or "Unknown camera",
            "manufacturer": "facestream",
            "model": "Camera",
        },
        "origin": {"name": "facestream"},
    }
    return Publication("discovery", topics.discovery(slug), _json(config), retain=True)


@dataclass(frozen=True)
class _Sighting:
    """A named face: its person (never an erased one), their name and the match."""

    person_id: str
    name: str | None
    distance: float | None
    box: dict[str, int]

    @property
    def label(self) -> str:
        return self.name or self.person_id

    def json(self) -> dict[str, Any]:
        return {"id": self.person_id, "name": self.name, "distance": self.distance, "box": self.box}


def _sightings(faces: list[FaceMatch], names: Mapping[str, str], erased: Collection[str]) -> list[_Sighting]:
    return [
        _Sighting(face.person_id, names.get(face.person_id), face.distance, _box(face.box))
        for face in faces
        if face.person_id and face.person_id not in erased
    ]


def recognized(
    result: FacesRecognized,
    topics: Topics,
    *,
    camera: str | None,
    names: Mapping[str, str],
    erased: Collection[str] = (),
) -> list[Publication]:
    """The messages one recognized image makes, in this order: the camera's ``recognized``,
    each person's ``seen``, then the camera's retained ``attributes`` and ``person`` (the
    state last, so whoever reacts to it reads fresh attributes). The state is the name of
    the named face nearest by distance, ``unknown`` when every face is unknown (or
    erased); an image without a face leaves the state as it was.

    ``names``: person id -> name from the read model; a person missing there is named by
    id. ``erased``: people never named (their faces count as unknown).
    """
    slug = camera_slug(camera)
    at = _at(result.recognized_at)
    faces = sorted(result.faces, key=lambda f: f.index)
    people = _sightings(faces, names, erased)
    unknown = len(faces) - len(people)
    summary = {
        "image_id": result.image_id,
        "run": result.run,
        "camera": camera,
        "people": [p.json() for p in people],
        "unknown_faces": unknown,
        "occurred_at": at,
    }
    out = [Publication("recognized", topics.camera(slug, "recognized"), _json(summary))]
    for p in people:
        sighting = {
            "person_id": p.person_id,
            "name": p.name,
            "camera": camera,
            "image_id": result.image_id,
            "distance": p.distance,
            "box": p.box,
            "occurred_at": at,
        }
        out.append(Publication("seen", topics.seen(p.person_id), _json(sighting)))
    if not faces:
        return out
    nearest = min(people, key=lambda p: p.distance if p.distance is not None else float("inf"), default=None)
    attributes = {
        "person_id": nearest.person_id if nearest else None,
        "person_name": nearest.name if nearest else None,
        "distance": nearest.distance if nearest else None,
        "people": [p.label for p in people],
        "unknown_faces": unknown,
        "image_id": result.image_id,
        "camera": camera,
        "occurred_at": at,
    }
    state = nearest.label if nearest else UNKNOWN_PERSON
    out.append(Publication("attributes", topics.camera(slug, "attributes"), _json(attributes), retain=True))
    out.append(Publication("person", topics.camera(slug, "person"), state.encode(), retain=True))
    return out


def failed(result: ImageFailed, topics: Topics, *, camera: str | None) -> list[Publication]:
    """An image that will not be recognized: one message on the camera's ``failed``."""
    body = {
        "image_id": result.image_id,
        "run": result.run,
        "camera": camera,
        "reason": result.reason.value,
        "detail": result.detail,
        "occurred_at": _at(result.failed_at),
    }
    return [Publication("failed", topics.camera(camera_slug(camera), "failed"), _json(body))]

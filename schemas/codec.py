"""Encoding and decoding events at the edges, with validation and upcasting.

``decode`` is the only way a consumer turns message bytes into an event: it checks the
envelope, upcasts old versions step by step to the version this code knows, and
validates the payload. Anything that fails raises :class:`~schemas.errors.SchemaError`
(poison: dead-letter it, never retry). An event type this code does not know raises
:class:`UnknownEvent`, which old consumers skip (that is how new event types roll out
while old consumers still run).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas import events as ev
from schemas.envelope import Envelope, raw_envelope_fields
from schemas.errors import SchemaError

M = TypeVar("M", bound=BaseModel)


class UnknownEvent(SchemaError):
    """The event's type, or a version newer than any this code knows."""


#: type name -> (current version, payload model)
EVENT_TYPES: dict[str, tuple[int, type[BaseModel]]] = {
    "facestream.image.submitted": (1, ev.ImageSubmitted),
    "facestream.recognition.requested": (1, ev.RecognitionRequested),
    "facestream.rematch.requested": (1, ev.RematchRequested),
    "facestream.faces.recognized": (1, ev.FacesRecognized),
    "facestream.recognition.failed": (1, ev.RecognitionFailed),
    "facestream.image.failed": (1, ev.ImageFailed),
    "facestream.image.dead_lettered": (1, ev.ImageDeadLettered),
    "facestream.person.enrolled": (1, ev.PersonEnrolled),
    "facestream.face.enrolled": (1, ev.FaceEnrolled),
    "facestream.face_scan.requested": (1, ev.FaceScanRequested),
    "facestream.face_scan.finished": (1, ev.FaceScanFinished),
}

TYPE_OF: dict[type[BaseModel], str] = {model: name for name, (_, model) in EVENT_TYPES.items()}

#: (type, from_version) -> function turning that version's data into the next version's.
#: Add one entry per version step when a payload changes incompatibly.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def envelope(data: BaseModel, *, source: str, trace_id: str | None = None) -> Envelope[Any]:
    """Wrap a payload in a new envelope of its current type and version."""
    etype = TYPE_OF[type(data)]
    version = EVENT_TYPES[etype][0]
    if trace_id is None:
        return Envelope[Any](type=etype, version=version, source=source, data=data)
    return Envelope[Any](type=etype, version=version, source=source, trace_id=trace_id, data=data)


def encode(env: Envelope[Any]) -> bytes:
    """Serialise an envelope to the wire format (compact UTF-8 JSON)."""
    return orjson.dumps(env.model_dump(mode="json"))


def encode_data(data: BaseModel, *, source: str, trace_id: str | None = None) -> bytes:
    return encode(envelope(data, source=source, trace_id=trace_id))


def upcast(etype: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Bring ``data`` of ``etype`` at ``version`` up to the current version."""
    current = EVENT_TYPES[etype][0]
    while version < current:
        step = UPCASTERS.get((etype, version))
        if step is None:
            raise SchemaError(f"no upcaster for {etype} v{version}")
        data = step(data)
        version += 1
    return data


def decode(raw: bytes | str | None) -> Envelope[Any]:
    """Parse and validate one message value; see the module docstring for the errors."""
    if raw is None:
        raise SchemaError("empty message (tombstone)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise SchemaError("an event must be a JSON object")
    try:
        etype, version = raw_envelope_fields(obj)
    except (KeyError, TypeError) as exc:
        raise SchemaError(f"bad envelope: {exc!r}") from None
    known = EVENT_TYPES.get(etype)
    if known is None:
        raise UnknownEvent(f"unknown event type {etype!r}")
    current, model = known
    if version > current:
        raise UnknownEvent(f"{etype} v{version} is newer than the v{current} this code reads")
    if version < 1:
        raise SchemaError(f"bad version {version}")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise SchemaError("data must be a JSON object")
    obj = {**obj, "version": current, "data": upcast(etype, version, data)}
    try:
        return Envelope[model].model_validate(obj)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise SchemaError(f"invalid {etype}: {_short(exc)}") from None


def decode_as(raw: bytes | str | None, model: type[M]) -> tuple[Envelope[Any], M]:
    """Decode and require a payload of ``model``'s type."""
    env = decode(raw)
    if not isinstance(env.data, model):
        raise SchemaError(f"expected {TYPE_OF[model]}, got {env.type}")
    return env, env.data


class GalleryFace(NamedTuple):
    """What the gallery reads from a ``FaceEnrolled``: whose face, which face, its encoding."""

    person_id: str
    face_id: str
    encoding: array[float]  # typecode "d", 128 values


class GalleryPerson(NamedTuple):
    """What the gallery reads from a ``PersonEnrolled``."""

    person_id: str
    name: str


_FACE_ENROLLED = "facestream.face.enrolled"
_PERSON_ENROLLED = "facestream.person.enrolled"
#: The fast path reads version 1's fields: once a type moves on, its records (old ones
#: included, which need upcasting) take the full path until the fast one is updated.
_FAST = frozenset(t for t in (_FACE_ENROLLED, _PERSON_ENROLLED) if EVENT_TYPES[t][0] == 1)
_UUID = re.compile(ev.UUID_PATTERN)


def gallery_event(raw: bytes | str | None) -> GalleryFace | GalleryPerson | None:
    """The gallery feed's fast path: the fields the gallery reads from a current-version
    ``FaceEnrolled`` or ``PersonEnrolled``, checked as the models check them.

    Checked: the envelope's type and version, the ids (UUIDs), the encoding (128 numbers;
    as in the model, ``true`` counts as 1) and the name (1 to 200 characters). Not checked:
    the fields the gallery does not read (model, box, times, source). Anything else
    returns None (another type or version, a failed check, not JSON, a tombstone): the
    caller then calls :func:`decode`, which upcasts, validates everything and raises the
    ``SchemaError``. Loading a gallery of 1M faces is mostly this call: about 16 us per
    face record against 25 us for :func:`decode` (most of either is parsing 128 floats).
    """
    if raw is None:
        return None
    try:
        obj = orjson.loads(raw)
        etype, data = obj["type"], obj["data"]
        if etype not in _FAST or obj["version"] != 1 or type(data) is not dict:
            return None
        person_id = data["person_id"]
        if type(person_id) is not str or not _UUID.match(person_id):
            return None
        if etype == _FACE_ENROLLED:
            face_id, encoding = data["face_id"], data["encoding"]
            if type(face_id) is not str or not _UUID.match(face_id) or type(encoding) is not list:
                return None
            if len(encoding) != 128:
                return None
            return GalleryFace(person_id, face_id, array("d", encoding))  # TypeError: not numbers
        if etype == _PERSON_ENROLLED:
            name = data["name"]
            if type(name) is not str or not 1 <= len(name) <= 200:
                return None
            return GalleryPerson(person_id, name)
    except (orjson.JSONDecodeError, KeyError, TypeError, OverflowError):
        return None
    return None


def _short(exc: ValidationError) -> str:
    errs = exc.errors()[:3]
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs)

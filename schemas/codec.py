"""Encoding and decoding events at the edges, with validation and upcasting.

``decode`` is the only way a consumer turns message bytes into an event: it checks the
envelope, upcasts old versions step by step to the version this code knows, and
validates the payload. Anything that fails raises :class:`~schemas.errors.SchemaError`
(poison: dead-letter it, never retry). An event type this code does not know raises
:class:`UnknownEvent`, which old consumers skip (that is how new event types roll out
while old consumers still run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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
    "facestream.faces.recognized": (1, ev.FacesRecognized),
    "facestream.recognition.failed": (1, ev.RecognitionFailed),
    "facestream.image.failed": (1, ev.ImageFailed),
    "facestream.image.dead_lettered": (1, ev.ImageDeadLettered),
    "facestream.person.enrolled": (1, ev.PersonEnrolled),
    "facestream.face.enrolled": (1, ev.FaceEnrolled),
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


def _short(exc: ValidationError) -> str:
    errs = exc.errors()[:3]
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs)

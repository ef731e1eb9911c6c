"""The common envelope every event travels in (CloudEvents attributes, JSON encoded).

Wire format: one UTF-8 JSON object per Kafka message value::

    {"id": "...", "type": "facestream.image.submitted", "version": 1,
     "time": "2026-11-26T20:00:00Z", "source": "ingest", "trace_id": "...",
     "data": {...}}

The Kafka key is the id of the entity the event concerns (an image id, a gallery key),
so all events of one entity stay in one partition, in order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

DataT = TypeVar("DataT", bound=BaseModel)


def new_id() -> str:
    """A fresh random id (UUID4, canonical text form)."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel, Generic[DataT]):
    """One event: who, what, when, plus the payload.

    ``id`` identifies this event (consumers may deduplicate on it); ``trace_id`` is carried
    unchanged from the first event of a chain (an upload) to every event it causes.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(default_factory=new_id, description="Unique id of this event.")
    type: str = Field(description="Event type, e.g. facestream.image.submitted.")
    version: int = Field(ge=1, description="Schema version of `data` for this type.")
    time: datetime = Field(default_factory=utcnow, description="When the event happened (UTC).")
    source: str = Field(default="unknown", description="Who published it (service or client).")
    trace_id: str = Field(default_factory=new_id, description="Correlates every event of one request.")
    data: DataT


def raw_envelope_fields(obj: dict[str, Any]) -> tuple[str, int]:
    """Return (type, version) of a decoded envelope, or raise KeyError/TypeError."""
    etype = obj["type"]
    version = obj["version"]
    if not isinstance(etype, str) or not isinstance(version, int):
        raise TypeError("type must be a string and version an integer")
    return etype, version

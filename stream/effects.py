"""What a stream handler decides, as data: the effects an event must have.

Handlers (:mod:`stream.handlers`) are pure: they turn one message into a :class:`Plan`.
:mod:`stream.delivery` carries a plan out against the database and the broker, and only
then lets the message's offset be committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from schemas import events as ev
from schemas.lifecycle import Status


@dataclass(frozen=True)
class Incoming:
    """One consumed message: where it came from, and its raw key and value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Store:
    """Write to PostgreSQL (an idempotent upsert); ``label`` names it in the metrics."""

    label: str
    write: Callable[[asyncpg.Connection], Awaitable[object]]


@dataclass(frozen=True)
class Publish:
    """Send a message and wait for the broker's acknowledgement; ``kind`` is for metrics
    (``retry`` counts a dispatched retry, ``final`` a final status)."""

    topic: str
    key: str | None
    value: bytes
    kind: str


@dataclass(frozen=True)
class DeadLetter:
    """Park a message on the dead-letter topic with its reason."""

    reason: ev.FailureReason
    detail: str


@dataclass(frozen=True)
class Finished:
    """An image reached a final status (for the metrics only)."""

    status: Status
    submitted_at: datetime | None = None


@dataclass(frozen=True)
class Skipped:
    """Nothing to do: an unknown event type or version (counted), or not ours to judge."""

    why: str


Effect = Store | Publish | DeadLetter | Finished | Skipped


@dataclass(frozen=True)
class Plan:
    """The effects of one message, carried out in order.

    ``request`` (when the message concerns a recognizable image) and ``trace_id`` go into
    any dead letter made of this message, so that it can be replayed whole.
    """

    effects: tuple[Effect, ...]
    request: ev.RecognitionRequested | None = None
    trace_id: str | None = None
    image_id: str | None = field(default=None)

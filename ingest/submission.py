"""Submitting a checked batch: publish every file at once, record what was accepted, say what became of each.

Failure contract: :meth:`Submitter.submit` publishes each file's ``ImageSubmitted``
concurrently and waits for every acknowledgement, so it never returns while a send is
still undecided. It returns one :class:`Outcome` per file, in order: accepted (the
broker acknowledged; the pending row is recorded, see :mod:`ingest.pending`) or refused
with the broker's reason. It does not raise for a refused file; deciding the answer
(202, or 503 listing every file) is the route's job. With an ``Idempotency-Key`` the ids
are deterministic (:mod:`ingest.idempotency`), so the client can retry the refused files
by repeating the whole request, and the accepted ones are not duplicated.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from common.errors import BrokerUnavailable, FacestreamError
from common.publisher import Delivered, Publisher
from ingest import idempotency
from ingest.metrics import ACCEPTED_BYTES, ACCEPTED_IMAGES, REJECTED
from ingest.pending import PendingRow, PendingRows
from ingest.validation import ImageHeader
from schemas import topics
from schemas.envelope import new_id
from schemas.events import ImageSubmitted

SOURCE = "ingest"


@dataclass(frozen=True)
class CheckedFile:
    """A file that passed :func:`ingest.validation.check_image`, with what its event carries."""

    data: bytes
    header: ImageHeader
    filename: str | None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What became of one file: accepted when ``error`` is None."""

    id: str
    filename: str | None
    size_bytes: int
    error: BrokerUnavailable | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None


class BatchNotAccepted(FacestreamError):
    """Some files of a request were not acknowledged: the app answers 503 with ``body``
    (every file and its fate) and ``Retry-After``."""

    def __init__(self, body: dict[str, object], retry_after: float) -> None:
        super().__init__(str(body.get("detail", "")))
        self.body = body
        self.retry_after = retry_after


def not_accepted_detail(outcomes: Sequence[Outcome]) -> str:
    refused = [o for o in outcomes if not o.accepted]
    reason = refused[0].error if refused else None
    return (
        f"{len(refused)} of {len(outcomes)} files were not accepted ({reason}); every file is "
        "listed with its id and fate. Repeat the request with the same Idempotency-Key to submit "
        "the others without duplicating the accepted ones."
    )


def retry_after(outcomes: Sequence[Outcome]) -> float:
    return max((o.error.retry_after for o in outcomes if o.error is not None), default=5.0)


class Submitter:
    """Publishes through the one :class:`~common.publisher.Publisher`, records through
    :class:`~ingest.pending.PendingRows`."""

    def __init__(self, publisher: Publisher, pending: PendingRows) -> None:
        self.publisher = publisher
        self.pending = pending

    async def submit(
        self,
        files: Sequence[CheckedFile],
        *,
        caller: str,
        idempotency_key: str | None,
        source: str | None,
        camera: str | None,
        trace_id: str | None,
    ) -> list[Outcome]:
        """Publish ``files`` (all at once), record the accepted ones; see the module docstring."""
        events = []
        for position, f in enumerate(files):
            sha256 = hashlib.sha256(f.data).hexdigest()
            events.append(
                ImageSubmitted(
                    image_id=idempotency.image_id(caller, idempotency_key, position, sha256),
                    filename=f.filename,
                    content_type=f.header.content_type,
                    size_bytes=len(f.data),
                    sha256=sha256,
                    source=source,
                    camera=camera,
                    metadata=f.metadata,
                    image_b64=base64.b64encode(f.data).decode("ascii"),
                    submitted_at=datetime.now(UTC),
                )
            )
        traces = [trace_id or new_id() for _ in events]
        sent = await asyncio.gather(
            *(
                self.publisher.publish_event(topics.SUBMITTED, e.image_id, e, trace_id=t)
                for e, t in zip(events, traces, strict=True)
            ),
            return_exceptions=True,
        )
        outcomes, rows = [], []
        unexpected: BaseException | None = None
        for event, trace, result in zip(events, traces, sent, strict=True):
            if isinstance(result, BrokerUnavailable):
                REJECTED.labels("broker_unavailable").inc()
                outcomes.append(Outcome(event.image_id, event.filename, event.size_bytes, result))
            elif isinstance(result, BaseException):  # a bug or a cancellation, not a refusal
                unexpected = unexpected or result
            else:
                ACCEPTED_IMAGES.inc()
                ACCEPTED_BYTES.inc(event.size_bytes)
                outcomes.append(Outcome(event.image_id, event.filename, event.size_bytes))
                rows.append(_pending_row(event, trace, result))
        await self.pending.record(rows)  # what was acknowledged is recorded, whatever else happened
        if unexpected is not None:
            raise unexpected
        return outcomes


def _pending_row(e: ImageSubmitted, trace_id: str, where: Delivered) -> PendingRow:
    return PendingRow(
        id=e.image_id,
        filename=e.filename,
        content_type=e.content_type,
        size_bytes=e.size_bytes,
        sha256=e.sha256,
        source=e.source,
        camera=e.camera,
        metadata=e.metadata,
        submitted_at=e.submitted_at,
        trace_id=trace_id,
        kafka_partition=where.partition,
        kafka_offset=where.offset,
    )

"""The safety net: an image pending for too long is sent to the recognizers again.

Delivery is designed so that this never has to act (see :mod:`stream.delivery`); when it
does, something was lost, and ``facestream_reconciler_redispatched_total`` says so (an
alert fires on it). An image is re-dispatched when all of these hold:

- it has been pending for ``reconcile_after_s`` (and was not re-dispatched in that time);
- no retry of it is waiting in the retry table;
- the recognizers' group has committed past its submission on ``images.submitted``
  (so it is not simply queued behind others): their committed offset for its partition
  is above the submission's offset;
- its bytes are stored (``image_blobs``); an image without them cannot be re-dispatched
  and is left to the ``FacestreamImagesStuckPending`` alert.

Re-dispatching publishes the image's ImageSubmitted again with the same id and run:
idempotent, since every effect downstream is keyed by image id and run.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from schemas import events as ev
from schemas.lifecycle import Status


async def candidates(conn: asyncpg.Connection, older_than_s: float, limit: int) -> list[asyncpg.Record]:
    """Pending images old enough to be suspect, with their bytes; see the module docstring."""
    return await conn.fetch(
        """
        SELECT i.id, i.run, i.filename, i.content_type, i.size_bytes, i.sha256, i.source, i.camera,
               i.metadata, i.submitted_at, i.trace_id, i.kafka_partition, i.kafka_offset, b.content
        FROM images i JOIN image_blobs b ON b.image_id = i.id
        WHERE i.status = $3
          AND i.updated_at < now() - make_interval(secs => $1)
          AND (i.redispatched_at IS NULL OR i.redispatched_at < now() - make_interval(secs => $1))
          AND NOT EXISTS (SELECT 1 FROM retries r WHERE r.image_id = i.id)
        ORDER BY i.updated_at
        LIMIT $2
        """,
        older_than_s,
        limit,
        Status.PENDING.value,
    )


def past_the_recognizers(row: Mapping[str, Any] | asyncpg.Record, committed: Mapping[int, int]) -> bool:
    """Has the recognizers' group committed past this image's submission?

    ``committed`` maps a partition of ``images.submitted`` to the group's committed
    offset. Unknown (no offset recorded, no commit read): no, wait for more facts.
    """
    partition, offset = row["kafka_partition"], row["kafka_offset"]
    if partition is None or offset is None or partition not in committed:
        return False
    return bool(committed[partition] > offset)


def resubmission(row: Mapping[str, Any] | asyncpg.Record) -> ev.ImageSubmitted:
    """The ImageSubmitted that re-dispatches a stored image (same id, same run)."""
    return ev.ImageSubmitted(
        image_id=str(row["id"]),
        run=row["run"],
        filename=row["filename"],
        content_type=row["content_type"],
        size_bytes=row["size_bytes"] or len(row["content"]),
        sha256=row["sha256"],
        source=row["source"],
        camera=row["camera"],
        metadata=row["metadata"] or {},
        image_b64=base64.b64encode(bytes(row["content"])).decode("ascii"),
        submitted_at=row["submitted_at"],
    )


async def mark_redispatched(conn: asyncpg.Connection, image_id: str) -> None:
    await conn.execute(
        "UPDATE images SET redispatched_at = now(), redispatches = redispatches + 1 WHERE id = $1", image_id
    )


async def oldest_pending_age_s(conn: asyncpg.Connection, now: datetime) -> float:
    """Seconds since the oldest pending image was last touched (0 when none is pending)."""
    oldest = await conn.fetchval("SELECT min(updated_at) FROM images WHERE status = $1", Status.PENDING.value)
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())

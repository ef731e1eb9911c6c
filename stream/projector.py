"""Materialises events into PostgreSQL: images, their faces, people and statuses.

Every write is an idempotent upsert keyed by the entity (image id, (image id, face
index), person id, face id), so a redelivered event changes nothing. Runs are ordered:
a result is applied only if its ``run`` is at least the stored one, so the result of an
old run never overwrites a re-run, whichever topic is read first.
"""

from __future__ import annotations

import base64
from datetime import datetime

import asyncpg

from common.erasure import erase_person, lock_image, lock_person
from schemas import encoding as enc
from schemas import events as ev
from schemas.lifecycle import Status, reason_of, status_of
from schemas.topics import face_key, person_key
from stream import gallery_purge


async def image_submitted(
    conn: asyncpg.Connection,
    e: ev.ImageSubmitted,
    trace_id: str,
    keep_bytes: bool,
    partition: int | None = None,
    offset: int | None = None,
) -> None:
    """A new image or a new run: pending, unless a result of this run is already stored.

    ``partition`` and ``offset`` say where the submission lies on ``images.submitted``
    (the reconciler compares them with the recognizers' committed offsets)."""
    async with conn.transaction():
        if await lock_image(conn, e.image_id):
            return
        await conn.execute(
            """
            INSERT INTO images (id, run, status, filename, content_type, size_bytes, sha256, source, camera,
                                metadata, submitted_at, trace_id, kafka_partition, kafka_offset)
            VALUES ($1, $2, $12, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $14)
            ON CONFLICT (id) DO UPDATE SET
                kafka_partition = CASE WHEN images.run <= excluded.run
                                       THEN excluded.kafka_partition ELSE images.kafka_partition END,
                kafka_offset = CASE WHEN images.run <= excluded.run
                                    THEN excluded.kafka_offset ELSE images.kafka_offset END,
                filename = excluded.filename, content_type = excluded.content_type,
                size_bytes = excluded.size_bytes, sha256 = excluded.sha256, source = excluded.source,
                camera = excluded.camera, metadata = excluded.metadata, trace_id = excluded.trace_id,
                submitted_at = CASE WHEN images.run < excluded.run OR images.submitted_at IS NULL
                                    THEN excluded.submitted_at ELSE images.submitted_at END,
                status = CASE WHEN images.run < excluded.run THEN excluded.status ELSE images.status END,
                status_reason = CASE WHEN images.run < excluded.run THEN NULL ELSE images.status_reason END,
                status_detail = CASE WHEN images.run < excluded.run THEN NULL ELSE images.status_detail END,
                finished_at = CASE WHEN images.run < excluded.run THEN NULL ELSE images.finished_at END,
                run = GREATEST(images.run, excluded.run),
                updated_at = now()
            """,
            e.image_id,
            e.run,
            e.filename,
            e.content_type,
            e.size_bytes,
            e.sha256,
            e.source,
            e.camera,
            e.metadata,
            e.submitted_at,
            trace_id,
            Status.PENDING.value,
            partition,
            offset,
        )
        if keep_bytes:
            await conn.execute(
                """INSERT INTO image_blobs (image_id, content) VALUES ($1, $2)
                   ON CONFLICT (image_id) DO UPDATE SET content = excluded.content, stored_at = now()""",
                e.image_id,
                base64.b64decode(e.image_b64),
            )


async def faces_recognized(conn: asyncpg.Connection, e: ev.FacesRecognized, finished_at: datetime) -> bool:
    """Store the final status and every face. Returns False if a newer run is stored.

    A person erased since the recognizer matched them is not stored: their faces become
    unknown and lose their encodings (a result in flight during an erasure must not bring
    the name back, nor keep the erased person's face as an "unknown" one).
    """
    async with conn.transaction():
        if await lock_image(conn, e.image_id):
            return False
        e = await _without_erased_people(conn, e)
        status = status_of(e.outcome).value
        reason = reason_of(e.outcome)
        applied = await conn.fetchval(
            """
            INSERT INTO images (id, run, status, status_reason, width, height, face_count, attempts,
                                gallery_version, rule, model, timings_ms, submitted_at, finished_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            ON CONFLICT (id) DO UPDATE SET
                run = excluded.run, status = excluded.status, status_reason = excluded.status_reason,
                status_detail = NULL, width = excluded.width, height = excluded.height,
                face_count = excluded.face_count, attempts = excluded.attempts,
                gallery_version = excluded.gallery_version, rule = excluded.rule, model = excluded.model,
                timings_ms = excluded.timings_ms, finished_at = excluded.finished_at, updated_at = now()
            WHERE images.run <= excluded.run
            RETURNING true
            """,
            e.image_id,
            e.run,
            status,
            reason,
            e.width,
            e.height,
            len(e.faces),
            e.attempt,
            e.gallery_version,
            e.rule.model_dump(mode="json"),
            e.model.model_dump(mode="json"),
            e.timings_ms,
            e.submitted_at,
            finished_at,
        )
        if not applied:
            return False
        await _store_faces(conn, e)
    return True


async def _without_erased_people(conn: asyncpg.Connection, e: ev.FacesRecognized) -> ev.FacesRecognized:
    """``e`` with every face naming an erased person made unknown, without its encoding."""
    named = [f.person_id for f in e.faces if f.person_id is not None]
    if not named:
        return e
    rows = await conn.fetch("SELECT id FROM erased_people WHERE id = ANY($1::uuid[])", named)
    erased = {str(r["id"]) for r in rows}
    if not erased:
        return e
    faces = [
        f.model_copy(update={"person_id": None, "encoding": None}) if f.person_id in erased else f
        for f in e.faces
    ]
    e = e.model_copy(update={"faces": faces})
    if not any(f.person_id for f in e.faces):
        e = e.model_copy(update={"outcome": ev.Outcome.UNKNOWN_FACES})
    return e


async def _store_faces(conn: asyncpg.Connection, e: ev.FacesRecognized) -> None:
    """Replace the image's faces with those of ``e`` (its run is the newest).

    A face's name is not stored: the API reads it from ``people``, so a rename shows
    everywhere and an erasure leaves none behind (older events' ``person_name`` is ignored).
    Its encoding is (512 bytes, :mod:`schemas.encoding`; NULL when the event has none), and
    ``seen_at``: the image's submission time, from the event or else from its image row.
    """
    await conn.execute("DELETE FROM faces WHERE image_id = $1", e.image_id)
    if e.faces:
        await conn.executemany(
            """INSERT INTO faces (image_id, face_index, run, box_top, box_right, box_bottom, box_left,
                                  person_id, distance, second_distance, encoding, seen_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                       coalesce($12::timestamptz, (SELECT submitted_at FROM images WHERE id = $1)))""",
            [
                (
                    e.image_id,
                    f.index,
                    e.run,
                    f.box.top,
                    f.box.right,
                    f.box.bottom,
                    f.box.left,
                    f.person_id,
                    f.distance,
                    f.second_distance,
                    None if f.encoding is None else enc.pack(f.encoding),
                    e.submitted_at,
                )
                for f in e.faces
            ],
        )


async def image_failed(conn: asyncpg.Connection, e: ev.ImageFailed) -> bool:
    """Store the failure and its reason. Returns False if a newer run is stored."""
    async with conn.transaction():
        if await lock_image(conn, e.image_id):
            return False
        applied = await conn.fetchval(
            """
            INSERT INTO images (id, run, status, status_reason, status_detail, attempts, finished_at)
            VALUES ($1, $2, $7, $3, $4, $5, $6)
            ON CONFLICT (id) DO UPDATE SET
                run = excluded.run, status = excluded.status, status_reason = excluded.status_reason,
                status_detail = excluded.status_detail, attempts = excluded.attempts,
                face_count = NULL, finished_at = excluded.finished_at, updated_at = now()
            WHERE images.run <= excluded.run
            RETURNING true
            """,
            e.image_id,
            e.run,
            e.reason.value,
            e.detail[:2000],
            e.attempts,
            e.failed_at,
            Status.FAILED.value,
        )
        if applied:
            await conn.execute("DELETE FROM faces WHERE image_id = $1", e.image_id)
    return bool(applied)


async def person_enrolled(conn: asyncpg.Connection, e: ev.PersonEnrolled) -> None:
    """Store or rename the person; one erased is not re-created but queued for a tombstone."""
    async with conn.transaction():
        if await lock_person(conn, e.person_id):
            await gallery_purge.queue(conn, [person_key(e.person_id)])
            return
        await conn.execute(
            """INSERT INTO people (id, name, created_at) VALUES ($1, $2, $3)
               ON CONFLICT (id) DO UPDATE SET name = excluded.name""",
            e.person_id,
            e.name,
            e.enrolled_at,
        )


async def face_enrolled(conn: asyncpg.Connection, e: ev.FaceEnrolled) -> None:
    """Store the enrolled face, and note that its key is on the gallery topic. A face of an
    erased person (an enrollment that raced the erasure) is queued for a tombstone instead.

    The face's row may be the API's, inserted first with what only it knows (the crop, the
    result face it came from): the encoding and the photo's SHA-256 are then filled in
    where the row has none, and nothing else is touched."""
    async with conn.transaction():
        if await lock_person(conn, e.person_id):
            await gallery_purge.queue(conn, [face_key(e.person_id, e.face_id)])
            return
        await conn.execute(
            "INSERT INTO gallery_faces (face_id, person_id) VALUES ($1, $2) ON CONFLICT (face_id) DO NOTHING",
            e.face_id,
            e.person_id,
        )
        # The person's own event comes first on the one gallery partition; this guards
        # against a gallery written by another client without it.
        await conn.execute(
            "INSERT INTO people (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            e.person_id,
            e.person_id,
        )
        await conn.execute(
            """INSERT INTO person_faces (id, person_id, filename, box, enrolled_at, encoding, source_sha256)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (id) DO UPDATE SET
                   encoding = coalesce(person_faces.encoding, excluded.encoding),
                   source_sha256 = coalesce(person_faces.source_sha256, excluded.source_sha256)""",
            e.face_id,
            e.person_id,
            e.filename,
            e.box.model_dump(mode="json"),
            e.enrolled_at,
            enc.pack(e.encoding),
            e.source_sha256,
        )


async def gallery_tombstone(conn: asyncpg.Connection, key: str) -> None:
    """A deleted gallery key: the person (their faces, and their name in every result) or
    one enrolled face is gone.

    A person's faces still on the gallery topic then (their tombstones were not published:
    an enrollment raced the erasure) are queued for tombstones (:mod:`stream.gallery_purge`).
    """
    kind, _, rest = key.partition(":")
    async with conn.transaction():
        await conn.execute("DELETE FROM gallery_purge WHERE key = $1", key)
        if kind == "person":
            await erase_person(conn, rest)
            await gallery_purge.queue_faces_of(conn, rest)
        elif kind == "face":
            face_id = rest.partition(":")[2]
            await conn.execute("DELETE FROM gallery_faces WHERE face_id = $1", face_id)
            await conn.execute("DELETE FROM person_faces WHERE id = $1", face_id)

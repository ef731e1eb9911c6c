"""The API's writes to the gallery: each publishes its gallery event and writes the read model
in one step, so every correction (an enrollment, a rename, a removed face, a merge, a face
named in review) is an event on the gallery topic like any enrollment.

The row is written in a transaction that commits only once the broker has acknowledged
the event: a 503 (:class:`~common.errors.BrokerUnavailable`) leaves nothing behind. The
projector (stream/projector.py) writes the same rows from the same events, idempotently.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from common.erasure import erase_person
from common.errors import BrokerUnavailable
from common.publisher import Delivered, Publisher
from schemas.encoding import floats, pack, unpack
from schemas.events import Box, FaceEnrolled, ModelInfo, PersonEnrolled
from schemas.topics import GALLERY, face_key, person_key


@dataclass(frozen=True)
class NewFace:
    """A face to enroll, with what it came from."""

    encoding: list[float]
    model: ModelInfo
    box: Box
    crop: bytes | None
    source_sha256: str | None
    filename: str | None
    source_image_id: uuid.UUID | None = None
    source_face_index: int | None = None


async def create_person(
    pool: asyncpg.Pool, publisher: Publisher, person_id: uuid.UUID, name: str
) -> datetime | None:
    """Store and publish a new person; their creation time, or None if the id exists."""
    async with pool.acquire() as conn, conn.transaction():
        # A concurrent request with the same id waits here until the first one commits.
        created = await conn.fetchval(
            "INSERT INTO people (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING created_at",
            person_id,
            name,
        )
        if created is not None:
            event = PersonEnrolled(person_id=str(person_id), name=name, enrolled_at=created)
            await publisher.publish_event(GALLERY, person_key(str(person_id)), event)
    return created  # type: ignore[no-any-return]


async def rename_person(pool: asyncpg.Pool, publisher: Publisher, person_id: uuid.UUID, name: str) -> bool:
    """Rename a person (a new ``PersonEnrolled`` under the same key); False if there is none."""
    async with pool.acquire() as conn, conn.transaction():
        created = await conn.fetchval(
            "UPDATE people SET name = $2 WHERE id = $1 RETURNING created_at", person_id, name
        )
        if created is None:
            return False
        event = PersonEnrolled(person_id=str(person_id), name=name, enrolled_at=created)
        await publisher.publish_event(GALLERY, person_key(str(person_id)), event)
    return True


async def enroll_face(
    pool: asyncpg.Pool, publisher: Publisher, person_id: uuid.UUID, face_id: uuid.UUID, face: NewFace
) -> tuple[asyncpg.Record | None, Delivered | None]:
    """Store and publish one enrolled face. Returns its row and where the event lies, or
    (None, None) when ``face_id`` is already stored (a retry). Raises
    :class:`asyncpg.ForeignKeyViolationError` if the person is gone."""
    # At the stored precision (float32), so the event and the row agree bit for bit.
    encoding = floats(face.encoding)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """
            INSERT INTO person_faces (id, person_id, filename, box, encoding, model, crop, source_sha256,
                                      source_image_id, source_face_index)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (id) DO NOTHING RETURNING *
            """,
            face_id,
            person_id,
            face.filename,
            face.box.model_dump(),
            pack(encoding),
            face.model.model_dump(mode="json"),
            face.crop,
            face.source_sha256,
            face.source_image_id,
            face.source_face_index,
        )
        if row is None:
            return None, None
        event = FaceEnrolled(
            person_id=str(person_id),
            face_id=str(face_id),
            encoding=encoding,
            model=face.model,
            box=face.box,
            source_sha256=face.source_sha256,
            filename=face.filename,
            enrolled_at=row["enrolled_at"],
        )
        delivered = await publisher.publish_event(GALLERY, face_key(str(person_id), str(face_id)), event)
    return row, delivered


async def republish_face(publisher: Publisher, row: asyncpg.Record) -> bool:
    """Publish the ``FaceEnrolled`` of a stored face again, from its stored encoding (the same
    key and content: harmless on the compacted topic). An enrollment repeated by a client
    then also heals a gallery topic that lost the face (a broker rebuilt from scratch).
    False, publishing nothing, for a face stored without its encoding (older releases)."""
    if row["encoding"] is None or row["model"] is None:
        return False
    event = FaceEnrolled(
        person_id=str(row["person_id"]),
        face_id=str(row["id"]),
        encoding=unpack(row["encoding"]),
        model=ModelInfo.model_validate(row["model"]),
        box=Box.model_validate(row["box"]),
        source_sha256=row["source_sha256"],
        filename=row["filename"],
        enrolled_at=row["enrolled_at"],
    )
    await publisher.publish_event(GALLERY, face_key(str(row["person_id"]), str(row["id"])), event)
    return True


async def remove_face(
    pool: asyncpg.Pool, publisher: Publisher, person_id: uuid.UUID, face_id: uuid.UUID
) -> bool:
    """Tombstone one enrolled face and delete its row; False if the person has no such face."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "DELETE FROM person_faces WHERE id = $1 AND person_id = $2 RETURNING true", face_id, person_id
        )
        if not found:
            return False
        await publisher.publish(GALLERY, None, face_key(str(person_id), str(face_id)))
    return True


async def erase(pool: asyncpg.Pool, publisher: Publisher, person_id: uuid.UUID) -> int:
    """Erase a person: gallery tombstones (faces, then the person), then the read model.
    Returns how many enrolled faces were tombstoned. Raises :class:`BrokerUnavailable`
    with nothing erased if the broker does not acknowledge."""
    face_ids = [
        r["id"] for r in await pool.fetch("SELECT id FROM person_faces WHERE person_id = $1", person_id)
    ]
    faces = [face_key(str(person_id), str(f)) for f in face_ids]
    try:
        # Faces first: once the projector reads the person's tombstone it queues one for
        # every face still on the gallery (stream.gallery_purge), so the faces' own must
        # come before it, or each would be published twice.
        await asyncio.gather(*(publisher.publish(GALLERY, None, k) for k in faces))
        await publisher.publish(GALLERY, None, person_key(str(person_id)))
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(f"the erasure was not acknowledged: {exc}", exc.retry_after) from exc
    async with pool.acquire() as conn:
        await erase_person(conn, person_id)
    return len(face_ids)

"""``/v1/people``: the gallery of enrolled people, and enrollment.

Enrollment writes the read model and publishes the gallery event in one step: the row
is inserted in a transaction that commits only once the broker has acknowledged the
event, so a 503 leaves nothing behind. A client-chosen id (person ``id`` in the body, or
``face_id`` / ``Idempotency-Key`` for faces) makes a retry return the first result
instead of enrolling twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Header, HTTPException, Query, UploadFile, status

from api import queries
from api.deps import EncoderDep, PoolDep, PublisherDep, SettingsDep
from api.enrollment import EncoderCrashed, FaceFound, NoFace, Rejected
from api.models import (
    FaceEnrollmentPublic,
    ImagesPublic,
    PeoplePublic,
    PersonCreate,
    PersonDetailPublic,
    PersonErasedPublic,
    PersonPublic,
    storable_filename,
)
from api.routes.paging import Limit, Offset
from common.auth import require
from common.erasure import erase_person
from common.errors import BrokerUnavailable
from common.publisher import Publisher
from schemas.events import FaceEnrolled, PersonEnrolled
from schemas.topics import GALLERY, face_key, person_key

router = APIRouter(prefix="/v1/people", tags=["people"])


def _not_found(person_id: uuid.UUID) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no person with id {person_id}")


@router.get("", dependencies=[require("query")])
async def list_people(pool: PoolDep, limit: Limit = 50, offset: Offset = 0) -> PeoplePublic:
    """Enrolled people, with how many faces each has."""
    return await queries.list_people(pool, limit=limit, offset=offset)


@router.get("/{person_id}", dependencies=[require("query")])
async def get_person(person_id: uuid.UUID, pool: PoolDep) -> PersonDetailPublic:
    """One person and their enrolled faces; 404 if there is none with this id."""
    person = await queries.get_person(pool, person_id)
    if person is None:
        raise _not_found(person_id)
    return person


@router.get("/{person_id}/images", dependencies=[require("query")])
async def person_images(
    person_id: uuid.UUID, pool: PoolDep, limit: Limit = 50, offset: Offset = 0
) -> ImagesPublic:
    """Images in whose latest run this person was identified, newest first."""
    if not await queries.person_exists(pool, person_id):
        raise _not_found(person_id)
    return await queries.list_images(pool, person_id=person_id, limit=limit, offset=offset)


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[require("enroll")])
async def create_person(body: PersonCreate, pool: PoolDep, publisher: PublisherDep) -> PersonPublic:
    """Enroll a person and publish ``PersonEnrolled`` to the gallery.

    503 if the broker does not acknowledge (nothing is stored). With ``id``: a retry
    returns the stored person; 409 if that id already names someone else or was erased.
    """
    person_id = body.id or uuid.uuid4()
    if body.id is not None and await pool.fetchval("SELECT true FROM erased_people WHERE id = $1", body.id):
        # The projector would tombstone the new person at once (an erased id never returns).
        raise HTTPException(status.HTTP_409_CONFLICT, f"person {person_id} was erased; its id is not reused")
    async with pool.acquire() as conn, conn.transaction():
        # A concurrent request with the same id waits here until the first one commits.
        row = await conn.fetchrow(
            "INSERT INTO people (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING created_at",
            person_id,
            body.name,
        )
        if row is not None:
            event = PersonEnrolled(person_id=str(person_id), name=body.name, enrolled_at=row["created_at"])
            await publisher.publish_event(GALLERY, person_key(str(person_id)), event)
            return PersonPublic(id=person_id, name=body.name, face_count=0, created_at=row["created_at"])
    # The id exists: stored by an earlier request with it (whose event was acknowledged
    # before its row committed), or by the projector from the gallery topic.
    existing = await queries.get_person(pool, person_id)
    if existing is None or existing.name != body.name:
        raise HTTPException(status.HTTP_409_CONFLICT, f"person {person_id} already exists with another name")
    return PersonPublic(**existing.model_dump(exclude={"faces"}))


@router.delete("/{person_id}", dependencies=[require("admin")])
async def delete_person(person_id: uuid.UUID, pool: PoolDep, publisher: PublisherDep) -> PersonErasedPublic:
    """Erase a person: gallery tombstones, then the read model.

    Tombstones for each enrolled face and for the person go to the compacted gallery
    topic first (every recognizer drops them from its gallery as it reads them, and
    compaction removes the encodings from the broker); then the person and their faces
    are deleted from PostgreSQL and every result naming them is anonymised. 404 unknown
    person; 503 if the broker does not acknowledge (nothing is erased; retry). Repeating
    a successful call answers 404.
    """
    if not await queries.person_exists(pool, person_id):
        raise _not_found(person_id)
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
    return PersonErasedPublic(person_id=person_id, faces_removed=len(face_ids))


@router.post("/{person_id}/faces", status_code=status.HTTP_201_CREATED, dependencies=[require("enroll")])
async def enroll_face(
    person_id: uuid.UUID,
    file: UploadFile,
    pool: PoolDep,
    publisher: PublisherDep,
    encoder: EncoderDep,
    settings: SettingsDep,
    face_id: Annotated[uuid.UUID | None, Query(description="Client-chosen id: makes retries safe.")] = None,
    idempotency_key: Annotated[uuid.UUID | None, Header(description="Same as face_id.")] = None,
) -> FaceEnrollmentPublic:
    """Enroll the face in an uploaded photo and publish ``FaceEnrolled`` to the gallery.

    The photo is decoded and encoded in the process pool with the recognizers' detection
    settings. With several faces the largest is enrolled (an enrollment photo is a
    portrait of its subject; bystanders are smaller); ``faces_found`` tells the client.
    404 unknown person, 413 file too large, 422 not an image or no face, 409 if the
    face id belongs to another person, 503 if the broker does not acknowledge (nothing
    is stored). A retry with the same face id returns the stored face unchanged.
    """
    if face_id and idempotency_key and face_id != idempotency_key:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "face_id and Idempotency-Key differ; send one of them"
        )
    key = face_id or idempotency_key
    if not await queries.person_exists(pool, person_id):
        raise _not_found(person_id)
    if key is not None and (replay := await _stored_face(pool, person_id, key)) is not None:
        return replay

    data = await file.read(settings.enroll_max_bytes + 1)
    if len(data) > settings.enroll_max_bytes:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"the photo is larger than {settings.enroll_max_bytes} bytes"
        )
    try:
        scan = await encoder.scan(data, settings.enroll_num_jitters)
    except EncoderCrashed:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "not a usable image: encoding it crashed the worker twice"
        ) from None
    if isinstance(scan, Rejected):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"not a usable image ({scan.reason}): {scan.detail}"
        )
    if isinstance(scan, NoFace):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "no face found in the photo")
    return await _store_face(pool, publisher, person_id, key or uuid.uuid4(), scan, data, file.filename)


async def _stored_face(
    pool: asyncpg.Pool, person_id: uuid.UUID, face_id: uuid.UUID
) -> FaceEnrollmentPublic | None:
    """The face already stored under ``face_id`` (a replay), or None; 409 if another person's."""
    row = await pool.fetchrow("SELECT * FROM person_faces WHERE id = $1", face_id)
    if row is None:
        return None
    if row["person_id"] != person_id:
        raise HTTPException(status.HTTP_409_CONFLICT, f"face {face_id} belongs to another person")
    return FaceEnrollmentPublic(**queries.enrolled_face(row).model_dump(), faces_found=None)


async def _store_face(
    pool: asyncpg.Pool,
    publisher: Publisher,
    person_id: uuid.UUID,
    face_id: uuid.UUID,
    scan: FaceFound,
    data: bytes,
    filename: str | None,
) -> FaceEnrollmentPublic:
    filename = storable_filename(filename)
    async with pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                """
                INSERT INTO person_faces (id, person_id, filename, box) VALUES ($1, $2, $3, $4)
                ON CONFLICT (id) DO NOTHING RETURNING *
                """,
                face_id,
                person_id,
                filename,
                scan.box.model_dump(),
            )
        except asyncpg.ForeignKeyViolationError:  # the person was removed during the scan
            raise _not_found(person_id) from None
        if row is not None:
            event = FaceEnrolled(
                person_id=str(person_id),
                face_id=str(face_id),
                encoding=scan.encoding,
                model=scan.model,
                box=scan.box,
                source_sha256=hashlib.sha256(data).hexdigest(),
                filename=filename,
                enrolled_at=row["enrolled_at"],
            )
            await publisher.publish_event(GALLERY, face_key(str(person_id), str(face_id)), event)
            return FaceEnrollmentPublic(
                **queries.enrolled_face(row).model_dump(), faces_found=scan.faces_found
            )
    # A concurrent request with the same face id committed first.
    replay = await _stored_face(pool, person_id, face_id)
    if replay is None:  # removed in between (a gallery tombstone)
        raise HTTPException(status.HTTP_409_CONFLICT, f"face {face_id} changed during enrollment; retry")
    return replay

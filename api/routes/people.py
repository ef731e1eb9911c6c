"""``/v1/people``: the gallery of enrolled people, and enrollment.

Enrollment writes the read model and publishes the gallery event in one step: the row
is inserted in a transaction that commits only once the broker has acknowledged the
event, so a 503 leaves nothing behind. A client-chosen id (person ``id`` in the body, or
``face_id`` / ``Idempotency-Key`` for faces) makes a retry return the first result
instead of enrolling twice.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Header, HTTPException, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse

from api import gallery, queries
from api.deps import PoolDep, PublisherDep, ScansDep, SettingsDep
from api.models import (
    FaceChoicePublic,
    FaceEnrollmentPublic,
    FaceRemovedPublic,
    ImagesPublic,
    PeoplePublic,
    PersonCreate,
    PersonDetailPublic,
    PersonErasedPublic,
    PersonMerge,
    PersonMergedPublic,
    PersonPublic,
    PersonRename,
    PoorTemplatePublic,
    SeveralFacesPublic,
    storable_filename,
)
from api.routes.paging import Limit, Offset, PageDep
from api.scans import LARGEST, PhotoCrashedWorker
from common.auth import require
from schemas.encoding import unpack
from schemas.events import (
    POOR_TEMPLATE,
    Box,
    ModelInfo,
    ScanFaceFound,
    ScanNoFace,
    ScanRejected,
    ScanSeveralFaces,
)

router = APIRouter(prefix="/v1/people", tags=["people"])


def _not_found(person_id: uuid.UUID) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no person with id {person_id}")


async def _person(pool: asyncpg.Pool, person_id: uuid.UUID) -> PersonDetailPublic:
    person = await queries.get_person(pool, person_id)
    if person is None:
        raise _not_found(person_id)
    return person


@router.get("", dependencies=[require("query")])
async def list_people(
    pool: PoolDep,
    q: Annotated[
        str | None, Query(max_length=200, description="Only people whose name contains this (any case).")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> PeoplePublic:
    """Enrolled people by name, with how many faces each has."""
    return await queries.list_people(pool, q=q, limit=limit, offset=offset)


@router.get("/{person_id}", dependencies=[require("query")])
async def get_person(person_id: uuid.UUID, pool: PoolDep) -> PersonDetailPublic:
    """One person and their enrolled faces; 404 if there is none with this id."""
    return await _person(pool, person_id)


@router.get("/{person_id}/images", dependencies=[require("query")])
async def person_images(
    person_id: uuid.UUID, pool: PoolDep, page: PageDep, limit: Limit = 50
) -> ImagesPublic:
    """Images in whose latest run this person was identified, newest first (``cursor`` pages)."""
    if not await queries.person_exists(pool, person_id):
        raise _not_found(person_id)
    return await queries.list_images(
        pool, queries.ImageFilter(person_id=person_id), limit=limit, offset=page.offset, after=page.cursor
    )


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
    created = await gallery.create_person(pool, publisher, person_id, body.name)
    if created is not None:
        return PersonPublic(id=person_id, name=body.name, face_count=0, created_at=created)
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
    removed = await gallery.erase(pool, publisher, person_id)
    return PersonErasedPublic(person_id=person_id, faces_removed=removed)


@router.patch("/{person_id}", dependencies=[require("enroll")])
async def rename_person(
    person_id: uuid.UUID, body: PersonRename, pool: PoolDep, publisher: PublisherDep
) -> PersonDetailPublic:
    """Rename a person: a new ``PersonEnrolled`` under the same gallery key, so every result
    shows the new name at once. 404 unknown person, 503 if the broker does not acknowledge
    (nothing changes)."""
    if not await gallery.rename_person(pool, publisher, person_id, body.name):
        raise _not_found(person_id)
    return await _person(pool, person_id)


@router.post("/{person_id}/merge", dependencies=[require("admin")])
async def merge_person(
    person_id: uuid.UUID, body: PersonMerge, pool: PoolDep, publisher: PublisherDep
) -> PersonMergedPublic:
    """Merge the person ``from`` into this one: each of their enrolled faces is enrolled again
    under this person (``FaceEnrolled``, the same encoding), the images they were named in
    name this person, and then ``from`` is erased (tombstones). A retry after a 503 is safe:
    the re-enrolled faces have ids derived from the originals. 404 unknown person, 409 merging
    a person into themselves or a face enrolled before encodings were kept (enroll it again).
    """
    source = body.from_
    if source == person_id:
        raise HTTPException(status.HTTP_409_CONFLICT, "a person cannot be merged into themselves")
    for pid in (person_id, source):
        if not await queries.person_exists(pool, pid):
            raise _not_found(pid)
    faces = await pool.fetch(
        "SELECT * FROM person_faces WHERE person_id = $1 ORDER BY enrolled_at, id", source
    )
    missing = [str(f["id"]) for f in faces if f["encoding"] is None or f["model"] is None]
    if missing:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"face(s) {', '.join(missing)} of person {source} were enrolled before encodings were kept: "
            "enroll those photos under the other person instead",
        )
    moved = 0
    for f in faces:
        face = gallery.NewFace(
            encoding=unpack(f["encoding"]),
            model=ModelInfo.model_validate(f["model"]),
            box=Box.model_validate(f["box"]),
            crop=f["crop"],
            source_sha256=f["source_sha256"],
            filename=f["filename"],
            source_image_id=f["source_image_id"],
            source_face_index=f["source_face_index"],
        )
        face_id = uuid.uuid5(person_id, str(f["id"]))  # the same on a retry
        try:
            row, _ = await gallery.enroll_face(pool, publisher, person_id, face_id, face)
        except asyncpg.ForeignKeyViolationError:  # erased meanwhile
            raise _not_found(person_id) from None
        moved += row is not None
    # The images naming them name this person now; then the erasure finds none to anonymise.
    relabelled = await pool.execute("UPDATE faces SET person_id = $1 WHERE person_id = $2", person_id, source)
    await gallery.erase(pool, publisher, source)
    return PersonMergedPublic(
        person_id=person_id, merged=source, faces_moved=moved, faces_relabelled=int(relabelled.split()[-1])
    )


@router.post(
    "/{person_id}/faces",
    status_code=status.HTTP_201_CREATED,
    dependencies=[require("enroll")],
    response_model=FaceEnrollmentPublic,
    responses={
        200: {
            "model": FaceEnrollmentPublic,
            "description": "This photo was already enrolled for this person.",
        },
        422: {
            "model": SeveralFacesPublic | PoorTemplatePublic,
            "description": "Not an image, no face, several faces and no face_index, or a face that would"
            " make a poor template (too small or blurred: `quality` says why).",
        },
    },
)
async def enroll_face(
    person_id: uuid.UUID,
    file: UploadFile,
    response: Response,
    pool: PoolDep,
    publisher: PublisherDep,
    scans: ScansDep,
    settings: SettingsDep,
    face_id: Annotated[uuid.UUID | None, Query(description="Client-chosen id: makes retries safe.")] = None,
    face_index: Annotated[
        str | None,
        Query(
            pattern=r"^([0-9]{1,4}|largest)$",
            description="Which face of a photo with several (left to right, from 0, as the 422 lists "
            "them), or `largest`. Not needed for a photo with one face.",
        ),
    ] = None,
    idempotency_key: Annotated[uuid.UUID | None, Header(description="Same as face_id.")] = None,
    accept_poor: Annotated[
        bool,
        Query(description="Enroll a face that would make a poor template (too small, blurred) anyway."),
    ] = False,
) -> FaceEnrollmentPublic | JSONResponse:
    """Enroll a face of an uploaded photo and publish ``FaceEnrolled`` to the gallery.

    The photo is decoded and encoded by a recognizer (``faces.scan``) with the recognizers'
    detection settings. A photo with several faces answers 422 with their boxes (``faces``) unless
    ``face_index`` says which. The same photo (by SHA-256) enrolled again for this person
    answers 200 with the face stored the first time. 404 unknown person, 413 file too large,
    422 not an image or no face, 409 if the face id belongs to another person, 503 if the
    broker does not acknowledge or no recognizer answers within ``SCAN_TIMEOUT_S`` (nothing
    is stored). A retry with the same face id returns the stored face unchanged.

    The face is judged as a template (docs/MATCHING.md, "Enrollment quality"): one too
    small or too blurred to be worth enrolling answers 422 with ``quality`` (what was
    measured, against which limit) unless ``accept_poor``; a face enrolled with room for
    a better photo (smaller, softer or turned) lists why in ``quality``.
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
    sha256 = hashlib.sha256(data).hexdigest()
    same_photo = await pool.fetchrow(
        "SELECT * FROM person_faces WHERE person_id = $1 AND source_sha256 = $2 LIMIT 1", person_id, sha256
    )
    if same_photo is not None:
        await gallery.republish_face(publisher, same_photo)
        response.status_code = status.HTTP_200_OK
        return FaceEnrollmentPublic(**queries.enrolled_face(same_photo).model_dump(), faces_found=None)
    choice: int | str | None = (
        None if face_index is None else (LARGEST if face_index == LARGEST else int(face_index))
    )
    try:
        scan = await scans.enroll(data, settings.enroll_num_jitters, choice, check_quality=not accept_poor)
    except PhotoCrashedWorker:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "not a usable image: encoding it crashed the worker twice"
        ) from None
    if isinstance(scan, ScanRejected) and scan.reason == POOR_TEMPLATE:
        poor = PoorTemplatePublic(
            detail=f"the face would make a poor template: {scan.detail} (accept_poor=true enrolls it anyway)",
            quality=scan.quality,
        )
        return JSONResponse(poor.model_dump(mode="json"), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    if isinstance(scan, ScanRejected):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"not a usable image ({scan.reason}): {scan.detail}"
        )
    if isinstance(scan, ScanNoFace):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "no face found in the photo")
    if isinstance(scan, ScanSeveralFaces):
        asked = "" if face_index is None else f" (face_index {face_index} is not one of them)"
        body = SeveralFacesPublic(
            detail=f"the photo has {len(scan.boxes)} faces{asked}: say which with face_index "
            f"(0 to {len(scan.boxes) - 1}, left to right) or face_index=largest",
            faces=[FaceChoicePublic(index=i, box=b) for i, b in enumerate(scan.boxes)],
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    return await _store_face(pool, publisher, person_id, key or uuid.uuid4(), scan, sha256, file.filename)


@router.delete("/{person_id}/faces/{face_id}", dependencies=[require("enroll")])
async def remove_face(
    person_id: uuid.UUID, face_id: uuid.UUID, pool: PoolDep, publisher: PublisherDep
) -> FaceRemovedPublic:
    """Remove one enrolled face (a wrong photo): its gallery tombstone, then its row. The
    recognizers stop matching it as they read the tombstone. 404 if the person has no such face."""
    if not await gallery.remove_face(pool, publisher, person_id, face_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"person {person_id} has no enrolled face {face_id}")
    return FaceRemovedPublic(person_id=person_id, face_id=face_id)


@router.get(
    "/{person_id}/faces/{face_id}/crop",
    dependencies=[require("query")],
    responses={200: {"content": {"image/jpeg": {}}, "description": "The crop."}},
)
async def enrolled_face_crop(person_id: uuid.UUID, face_id: uuid.UUID, pool: PoolDep) -> Response:
    """A JPEG crop of an enrolled face, made when it was enrolled; 404 if there is none (a face
    enrolled by another client through the gallery topic has no crop)."""
    crop = await pool.fetchval(
        "SELECT crop FROM person_faces WHERE id = $1 AND person_id = $2", face_id, person_id
    )
    if crop is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no crop of face {face_id} of person {person_id}")
    return Response(crop, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


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
    publisher: PublisherDep,
    person_id: uuid.UUID,
    face_id: uuid.UUID,
    scan: ScanFaceFound,
    sha256: str,
    filename: str | None,
) -> FaceEnrollmentPublic:
    face = gallery.NewFace(
        encoding=scan.encoding,
        model=scan.model,
        box=scan.box,
        crop=scan.crop,
        source_sha256=sha256,
        filename=storable_filename(filename),
    )
    try:
        row, _ = await gallery.enroll_face(pool, publisher, person_id, face_id, face)
    except asyncpg.ForeignKeyViolationError:  # the person was removed during the scan
        raise _not_found(person_id) from None
    if row is not None:
        return FaceEnrollmentPublic(
            **queries.enrolled_face(row).model_dump(), faces_found=scan.faces_found, quality=scan.quality
        )
    # A concurrent request with the same face id committed first.
    replay = await _stored_face(pool, person_id, face_id)
    if replay is None:  # removed in between (a gallery tombstone)
        raise HTTPException(status.HTTP_409_CONFLICT, f"face {face_id} changed during enrollment; retry")
    return replay

"""``/v1/images``: recognition results as the projector wrote them, and re-runs.

A re-run publishes a new ``ImageSubmitted`` (same image id and metadata, ``run`` + 1,
the stored bytes) and writes nothing: the projector sets the row back to ``pending``
when it consumes the event. Publishing the same run twice (a retried request) is
harmless, since consumers keep one result per image and run.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body, HTTPException, Path, Query, Response, status

from api import imaging, queries, renderings, sightings
from api.deps import OutagesDep, PoolDep, PublisherDep
from api.models import (
    RERUN_MAX,
    FaceConfirm,
    FaceConfirmedPublic,
    ImageErasedPublic,
    ImagePublic,
    ImagesPublic,
    ImageStatus,
    RerunnableStatus,
    RerunOrder,
    RerunPublic,
    RerunScope,
    RerunsPublic,
)
from api.routes.paging import ImageFilterDep, Limit, PageDep
from common.auth import require
from common.erasure import erase_image
from common.errors import BrokerUnavailable
from common.publisher import Publisher
from schemas.envelope import utcnow
from schemas.events import ImageSubmitted
from schemas.topics import SUBMITTED

router = APIRouter(prefix="/v1/images", tags=["images"])

#: Image answers are the caller's own data: kept by the browser, never by a shared cache;
#: never sniffed as anything but what they say; never run as a page.
_PRIVATE = {
    "Cache-Control": "private, max-age=300",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}
_IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "The image."}
}

#: Images whose bytes are in memory at once during a bulk re-run.
_RERUN_BATCH = 10


@router.get("", dependencies=[require("query")])
async def list_images(pool: PoolDep, f: ImageFilterDep, page: PageDep, limit: Limit = 50) -> ImagesPublic:
    """Images newest first, with each face's box and person; ``count`` is the filtered total
    (up to 10,000). Page with ``cursor`` (the previous page's ``next_cursor``)."""
    return await queries.list_images(pool, f, limit=limit, offset=page.offset, after=page.cursor)


@router.get("/{image_id}", dependencies=[require("query")])
async def get_image(image_id: uuid.UUID, pool: PoolDep, outages: OutagesDep) -> ImagePublic:
    """One image with its faces. An id ingest accepted is known at once (read-your-writes);
    an unknown id is 404, except just after a database outage, when rows written meanwhile
    may still be on their way: then 503 with ``Retry-After`` (api/catchup.py)."""
    image = await queries.get_image(pool, image_id)
    if image is None:
        if outages.catching_up():
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"image {image_id} is not known yet: results are catching up after a database outage",
                headers={"Retry-After": "2"},
            )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image with id {image_id}")
    return image


@router.get("/{image_id}/file", dependencies=[require("query")], responses=_IMAGE_RESPONSE)
async def image_file(image_id: uuid.UUID, pool: PoolDep) -> Response:
    """The image's bytes as submitted; 404 if no such image or its bytes are no longer stored."""
    row = await queries.stored_bytes(pool, image_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no stored bytes for image {image_id}")
    declared = (row["content_type"] or "").lower()
    # Only an image type is ever echoed: the bytes came from a client.
    media = declared if declared in imaging.SAFE_TYPES else "application/octet-stream"
    return Response(row["content"], media_type=media, headers=_PRIVATE)


@router.get("/{image_id}/thumbnail", dependencies=[require("query")], responses=_IMAGE_RESPONSE)
async def image_thumbnail(image_id: uuid.UUID, pool: PoolDep) -> Response:
    """A JPEG of the whole image, upright, at most 240 pixels on its longest side; made once, then cached."""
    return _jpeg(await renderings.get(pool, image_id, imaging.THUMB))


@router.get("/{image_id}/preview", dependencies=[require("query")], responses=_IMAGE_RESPONSE)
async def image_preview(image_id: uuid.UUID, pool: PoolDep) -> Response:
    """A JPEG of the whole image, upright (the frame of the faces' boxes), at most 1600 pixels on
    its longest side: what the image's page shows. Made once, then cached."""
    return _jpeg(await renderings.get(pool, image_id, imaging.PREVIEW))


@router.get("/{image_id}/faces/{index}/crop", dependencies=[require("query")], responses=_IMAGE_RESPONSE)
async def face_crop(
    image_id: uuid.UUID,
    index: Annotated[int, Path(ge=0, le=10_000, description="The face's index.")],
    pool: PoolDep,
) -> Response:
    """A square JPEG crop around one face of the image's latest run (160 pixels); made once, then cached.
    404 if the image, its bytes or the face are not there."""
    return _jpeg(await renderings.get(pool, image_id, imaging.Kind.face(index)))


@router.post(
    "/{image_id}/faces/{index}/confirm", status_code=status.HTTP_201_CREATED, dependencies=[require("enroll")]
)
async def confirm_face(
    image_id: uuid.UUID,
    index: Annotated[int, Path(ge=0, le=10_000, description="The face's index.")],
    pool: PoolDep,
    publisher: PublisherDep,
    body: Annotated[FaceConfirm | None, Body()] = None,
) -> FaceConfirmedPublic:
    """An operator vouches for one face of the image's latest run: it is enrolled, from the
    encoding its recognizer stored, for the person its result names, or for ``person_id``
    (docs/MATCHING.md, "Confirmed sightings": a confirmed sighting is worth an enrollment
    photo).

    With ``person_id`` other than the name shown (a correction, or a name for an unknown
    face) the image is then matched again (``RematchRequested``), so that it shows the new
    name; ``was_named`` gives the person the result named instead. A retry is safe: the
    enrolled face's id derives from (person, image, face), and a repeat answers the same
    face with ``enrolled`` false. 404 no such image, face or person; 409 the face has no
    stored encoding, or is unknown and no ``person_id`` is given; 503 if the broker does
    not acknowledge (nothing is enrolled).
    """
    face = await queries.stored_face(pool, image_id, index)
    if face is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image with id {image_id}")
    if face["face_index"] is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {image_id} has no face {index}")
    if face["encoding"] is None or face["model"] is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"face {index} of image {image_id} has no stored encoding (erased, or never kept): "
            "enroll a photo of the person instead",
        )
    asked = body.person_id if body is not None else None
    try:
        plan = sightings.plan_confirmation(face["person_id"], asked)
    except sightings.NotNamed as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"face {index} of image {image_id}: {exc}") from None
    if asked is not None and not await queries.person_exists(pool, asked):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no person with id {asked}")
    try:
        face_id, row, delivered = await sightings.enroll(pool, publisher, plan.person_id, face)
    except asyncpg.ForeignKeyViolationError:  # erased meanwhile
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no person with id {plan.person_id}") from None
    if row is None:  # a retry: the face an earlier call enrolled
        row = await pool.fetchrow("SELECT * FROM person_faces WHERE id = $1", face_id)
        if row is None:  # removed between the two statements: the client may try again
            raise HTTPException(status.HTTP_409_CONFLICT, f"face {face_id} was removed meanwhile: try again")
    if plan.rematch:
        # After the new face, if there is one: the recognizers wait until their gallery holds it.
        version = delivered.offset + 1 if delivered is not None else 0
        await sightings.rematch(pool, publisher, [image_id], version, f"confirmed as {plan.person_id}")
    return FaceConfirmedPublic(
        **queries.enrolled_face(row).model_dump(),
        image_id=image_id,
        face_index=index,
        enrolled=delivered is not None,
        was_named=plan.was_named,
        rematched=plan.rematch,
    )


def _jpeg(content: bytes) -> Response:
    return Response(content, media_type="image/jpeg", headers=_PRIVATE)


@router.post("/rerun", status_code=status.HTTP_202_ACCEPTED, dependencies=[require("submit")])
async def rerun_all(
    pool: PoolDep,
    publisher: PublisherDep,
    scope: Annotated[RerunScope | None, Body()] = None,
    status_query: Annotated[
        RerunnableStatus | None, Query(alias="status", description="Older clients: the body's `status`.")
    ] = None,
    limit_query: Annotated[
        int | None, Query(alias="limit", ge=1, le=RERUN_MAX, description="Older clients: the body's `limit`.")
    ] = None,
) -> RerunsPublic:
    """Re-run the failed or unresolved images in a scope, oldest first unless ``order`` is
    ``newest``: by ``ids``, ``status``, ``camera`` and a ``since``/``until`` window of
    submission, at most ``limit`` (unless given: as many as ``ids``, else 1000). No body:
    every such image.

    Images whose bytes are no longer stored are counted in ``skipped``; ids asked for but
    not re-run are listed in ``not_rerunnable``. 503 if the broker stops acknowledging part
    way; some images may then already be resubmitted, and repeating the request is safe
    (it resubmits the rest, and the same runs again).
    """
    scope = _with_query(scope or RerunScope(), status_query, limit_query)
    statuses = frozenset(ImageStatus(s.value) for s in (scope.status or RerunnableStatus))
    wanted = queries.ImageFilter(
        camera=scope.camera,
        since=scope.since,
        until=scope.until,
        ids=tuple(scope.ids) if scope.ids is not None else None,
        statuses=statuses,
    )
    ids = await queries.rerun_candidates(
        pool,
        wanted,
        newest=scope.order is RerunOrder.NEWEST,
        limit=scope.limit or len(scope.ids or ()) or 1000,
    )
    rerun = skipped = 0
    for start in range(0, len(ids), _RERUN_BATCH):
        rows = await queries.rerun_sources(pool, ids[start : start + _RERUN_BATCH], statuses)
        stored = [r for r in rows if r["content"]]
        skipped += len(rows) - len(stored)
        try:
            await asyncio.gather(*(_resubmit(publisher, r) for r in stored))
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(
                f"{exc} (re-ran {rerun} of {len(ids)} images before this)", exc.retry_after
            ) from exc
        rerun += len(stored)
    chosen = set(ids)
    missed = [i for i in dict.fromkeys(scope.ids or ()) if i not in chosen]
    return RerunsPublic(rerun=rerun, skipped=skipped, matched=len(ids), not_rerunnable=missed)


def _with_query(
    scope: RerunScope, status_query: RerunnableStatus | None, limit_query: int | None
) -> RerunScope:
    """The body's scope with the older clients' query parameters folded in (422 if both say)."""
    if status_query is not None and scope.status is not None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "invalid request: give status in the body or the query, not both",
        )
    if limit_query is not None and scope.limit is not None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "invalid request: give limit in the body or the query, not both",
        )
    return scope.model_copy(
        update={
            "status": scope.status if status_query is None else [status_query],
            "limit": scope.limit if limit_query is None else limit_query,
        }
    )


@router.delete("/{image_id}", dependencies=[require("admin")])
async def delete_image(image_id: uuid.UUID, pool: PoolDep) -> ImageErasedPublic:
    """Erase an image: its row, faces and stored bytes; a later event about it is ignored.

    The copy inside the ``images.*`` topics expires with their retention (7 days). 404 if
    no such image is stored.
    """
    async with pool.acquire() as conn:
        if not await erase_image(conn, image_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image with id {image_id}")
    return ImageErasedPublic(image_id=image_id)


@router.post("/{image_id}/rerun", status_code=status.HTTP_202_ACCEPTED, dependencies=[require("submit")])
async def rerun_one(image_id: uuid.UUID, pool: PoolDep, publisher: PublisherDep) -> RerunPublic:
    """Resubmit one failed or unresolved image; 404 unknown, 409 any other status or no stored bytes."""
    row = await queries.rerun_source(pool, image_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image with id {image_id}")
    if row["status"] not in set(RerunnableStatus):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"image {image_id} is {row['status']}; only failed or unresolved images re-run",
        )
    if not row["content"]:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the bytes of image {image_id} are no longer stored")
    return RerunPublic(image_id=image_id, run=await _resubmit(publisher, row))


async def _resubmit(publisher: Publisher, row: asyncpg.Record) -> int:
    """Publish the next run of the image in ``row`` (with its bytes); returns that run."""
    content: bytes = row["content"]
    event = ImageSubmitted(
        image_id=str(row["id"]),
        run=row["run"] + 1,
        filename=row["filename"],
        content_type=row["content_type"],
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        source=row["source"],
        camera=row["camera"],
        metadata={str(k): str(v) for k, v in (row["metadata"] or {}).items()},
        image_b64=base64.b64encode(content).decode("ascii"),
        # The original submission time: a re-run is the same image, not a new arrival.
        submitted_at=row["submitted_at"] or utcnow(),
    )
    await publisher.publish_event(SUBMITTED, event.image_id, event)
    return event.run

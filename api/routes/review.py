"""``/v1/review``: unknown faces grouped by likeness, and naming a group.

Naming a group is a correction made of events: the group's stored encodings are enrolled
(``FaceEnrolled`` on the gallery topic, like any enrollment, without a new upload), and
then every image with a face of the group, or an unknown face close to it, is matched
again from its stored encodings (``RematchRequested`` on ``images.recognize``: the
recognizers apply the matching rule with a gallery that holds the new faces, without
detecting again). The images show the new name once their new results are projected.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, HTTPException, Query, status

from api import gallery, queries, review, sightings
from api.deps import PoolDep, PublisherDep, SettingsDep
from api.models import (
    AssignPublic,
    ReviewAssign,
    ReviewFacePublic,
    ReviewGroupPublic,
    ReviewGroupsPublic,
)
from common.auth import require
from schemas.events import Box

router = APIRouter(prefix="/v1/review", tags=["review"])

#: Faces of one group listed in an answer (the group's size is given whole).
FACES_SHOWN = 24


@router.get("/groups", dependencies=[require("query")])
async def review_groups(
    pool: PoolDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Most groups in the answer, largest first.")] = 50,
) -> ReviewGroupsPublic:
    """The newest unknown faces (up to ``REVIEW_WINDOW``) grouped by likeness, largest group first.

    Each group lists up to 24 faces (newest first) with a crop URL; name one with
    ``POST /v1/review/assign``. Groups are computed afresh on each call (faces named
    meanwhile drop out); a face is identified by its image and index.
    """
    rows = await queries.unknown_faces(pool, settings.review_window)
    # In a thread: clustering is numpy (it releases the GIL), and the event loop stays free.
    labels = await asyncio.to_thread(
        review.cluster, b"".join(r["encoding"] for r in rows), settings.review_cluster_threshold
    )
    found = review.groups(labels)
    return ReviewGroupsPublic(
        groups=[
            ReviewGroupPublic(size=len(members), faces=[_face(rows[i]) for i in members[:FACES_SHOWN]])
            for members in found[:limit]
        ],
        groups_total=len(found),
        faces_considered=len(rows),
        window=settings.review_window,
    )


def _face(row: asyncpg.Record) -> ReviewFacePublic:
    return ReviewFacePublic(
        image_id=row["image_id"],
        face_index=row["face_index"],
        box=Box(top=row["box_top"], right=row["box_right"], bottom=row["box_bottom"], left=row["box_left"]),
        seen_at=row["seen_at"],
        camera=row["camera"],
        filename=row["filename"],
        crop_url=f"/v1/images/{row['image_id']}/faces/{row['face_index']}/crop",
        distance=row["distance"],
    )


@router.post("/assign", dependencies=[require("enroll")])
async def assign(
    body: ReviewAssign,
    pool: PoolDep,
    publisher: PublisherDep,
    settings: SettingsDep,
) -> AssignPublic:
    """Name a group of unknown faces: an existing person (``person_id``) or a new one (``name``).

    Up to ``REVIEW_ENROLL_MAX`` of the faces (those nearest the group's centre) are enrolled
    from their stored encodings; then the group's images, and every image with a stored
    unknown face within ``REVIEW_RADIUS`` of the group, are matched again (a new run each).
    Faces already named or no longer stored are passed over (``skipped``). A retry is safe:
    the enrolled faces' ids derive from (person, image, face). 404 unknown person, 409 if no
    face of the group is still unknown, 503 if the broker does not acknowledge.
    """
    keys = [(f.image_id, f.face_index) for f in body.faces]
    rows = await queries.faces_for_review(pool, keys)
    if not rows:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "none of these faces is still unknown with a stored encoding"
        )
    if body.person_id is not None:
        person_id = body.person_id
        if not await queries.person_exists(pool, person_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no person with id {person_id}")
    else:
        assert body.name is not None
        # The same group named twice (a retry) makes the same person.
        person_id = uuid.uuid5(uuid.NAMESPACE_URL, f"facestream:review:{body.name}:{keys[0][0]}:{keys[0][1]}")
        if await pool.fetchval("SELECT true FROM erased_people WHERE id = $1", person_id):
            person_id = uuid.uuid4()
        await gallery.create_person(pool, publisher, person_id, body.name)

    matrix = review.as_matrix([r["encoding"] for r in rows])
    chosen = review.representatives(matrix, settings.review_enroll_max)
    last_offset = -1
    enrolled = 0
    for i in chosen:
        try:
            _, row, delivered = await sightings.enroll(pool, publisher, person_id, rows[i])
        except asyncpg.ForeignKeyViolationError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no person with id {person_id}") from None
        if delivered is not None:
            last_offset = max(last_offset, delivered.offset)
        enrolled += row is not None
    # last_offset stays -1 on a retry whose faces the first call enrolled: no wait is asked.
    images = {r["image_id"] for r in rows} | await _near_images(pool, matrix, settings.review_radius)
    rematched = await sightings.rematch(
        pool, publisher, sorted(images), last_offset + 1, f"review: named as {person_id}"
    )
    return AssignPublic(
        person_id=person_id, enrolled=enrolled, rematched=rematched, skipped=len(keys) - len(rows)
    )


async def _near_images(pool: asyncpg.Pool, probes: review.Matrix, radius: float) -> set[uuid.UUID]:
    """Images with a stored unknown face within ``radius`` of any of ``probes``, by a scan of
    every stored unknown encoding in batches (memory stays bounded at any table size)."""
    found: set[uuid.UUID] = set()
    async for batch in queries.unknown_encodings(pool):
        matrix = review.as_matrix([r["encoding"] for r in batch])
        hits = await asyncio.to_thread(review.near, matrix, probes, radius)
        found.update(batch[i]["image_id"] for i in hits.nonzero()[0])
    return found

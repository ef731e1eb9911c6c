"""Reads and writes of the read model (``common/migrations``) that the API needs.

Every function takes the pool or a connection and returns API models or plain rows;
none of them publishes anything. Database errors propagate (a 500: the request was fine).
"""

from __future__ import annotations

import uuid
from collections import defaultdict

import asyncpg

from api.models import (
    EnrolledFacePublic,
    FacePublic,
    ImagePublic,
    ImagesPublic,
    ImageStatus,
    PeoplePublic,
    PersonDetailPublic,
    PersonPublic,
)
from schemas.events import Box

_IMAGE_COLUMNS = """
    i.id, i.run, i.status, i.status_reason, i.status_detail, i.filename, i.content_type,
    i.size_bytes, i.source, i.camera, i.metadata, i.width, i.height, i.face_count, i.attempts,
    i.gallery_version, i.rule, i.model, i.submitted_at, i.finished_at
"""

# $1 status, $2 person id, $3 camera: each filter applies only when not null. Only the faces
# of the image's current run count: rows of an older run may outlive a re-run.
_IMAGE_FILTER = """
    ($1::text IS NULL OR i.status = $1)
    AND ($2::uuid IS NULL OR EXISTS (
        SELECT 1 FROM faces f WHERE f.image_id = i.id AND f.run = i.run AND f.person_id = $2))
    AND ($3::text IS NULL OR i.camera = $3)
"""


def _image(row: asyncpg.Record, faces: list[FacePublic]) -> ImagePublic:
    return ImagePublic(**dict(row), faces=faces)


async def _faces_of(pool: asyncpg.Pool, image_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[FacePublic]]:
    # A person renamed since the image was recognized shows under the current name.
    rows = await pool.fetch(
        """
        SELECT f.image_id, f.face_index, f.box_top, f.box_right, f.box_bottom, f.box_left,
               f.person_id, coalesce(p.name, f.person_name) AS person_name, f.distance
        FROM faces f
        JOIN images i ON i.id = f.image_id AND i.run = f.run
        LEFT JOIN people p ON p.id = f.person_id
        WHERE f.image_id = ANY($1::uuid[])
        ORDER BY f.image_id, f.face_index
        """,
        image_ids,
    )
    faces: dict[uuid.UUID, list[FacePublic]] = defaultdict(list)
    for r in rows:
        faces[r["image_id"]].append(
            FacePublic(
                index=r["face_index"],
                box=Box(top=r["box_top"], right=r["box_right"], bottom=r["box_bottom"], left=r["box_left"]),
                person_id=r["person_id"],
                person_name=r["person_name"],
                distance=r["distance"],
            )
        )
    return faces


async def get_image(pool: asyncpg.Pool, image_id: uuid.UUID) -> ImagePublic | None:
    row = await pool.fetchrow(f"SELECT {_IMAGE_COLUMNS} FROM images i WHERE i.id = $1", image_id)
    if row is None:
        return None
    faces = await _faces_of(pool, [image_id])
    return _image(row, faces.get(image_id, []))


async def list_images(
    pool: asyncpg.Pool,
    *,
    status: ImageStatus | None = None,
    person_id: uuid.UUID | None = None,
    camera: str | None = None,
    limit: int,
    offset: int,
) -> ImagesPublic:
    """One page of images, newest submission first, and the total matching the filter."""
    args = (status.value if status else None, person_id, camera)
    count = await pool.fetchval(f"SELECT count(*) FROM images i WHERE {_IMAGE_FILTER}", *args)
    rows = await pool.fetch(
        f"""
        SELECT {_IMAGE_COLUMNS} FROM images i WHERE {_IMAGE_FILTER}
        ORDER BY i.submitted_at DESC NULLS LAST, i.id
        LIMIT $4 OFFSET $5
        """,
        *args,
        limit,
        offset,
    )
    faces = await _faces_of(pool, [r["id"] for r in rows]) if rows else {}
    return ImagesPublic(data=[_image(r, faces.get(r["id"], [])) for r in rows], count=count)


_PERSON = """
    SELECT p.id, p.name, p.created_at, count(pf.id)::int AS face_count
    FROM people p LEFT JOIN person_faces pf ON pf.person_id = p.id
"""


async def list_people(pool: asyncpg.Pool, *, limit: int, offset: int) -> PeoplePublic:
    """One page of people by name."""
    count = await pool.fetchval("SELECT count(*) FROM people")
    rows = await pool.fetch(
        f"{_PERSON} GROUP BY p.id ORDER BY p.name, p.id LIMIT $1 OFFSET $2", limit, offset
    )
    return PeoplePublic(data=[PersonPublic(**dict(r)) for r in rows], count=count)


async def get_person(pool: asyncpg.Pool, person_id: uuid.UUID) -> PersonDetailPublic | None:
    row = await pool.fetchrow(f"{_PERSON} WHERE p.id = $1 GROUP BY p.id", person_id)
    if row is None:
        return None
    faces = await pool.fetch(
        "SELECT * FROM person_faces WHERE person_id = $1 ORDER BY enrolled_at, id", person_id
    )
    return PersonDetailPublic(**dict(row), faces=[enrolled_face(f) for f in faces])


async def person_exists(pool: asyncpg.Pool, person_id: uuid.UUID) -> bool:
    return bool(await pool.fetchval("SELECT EXISTS (SELECT 1 FROM people WHERE id = $1)", person_id))


def enrolled_face(row: asyncpg.Record) -> EnrolledFacePublic:
    """A ``person_faces`` row as the API shows it."""
    return EnrolledFacePublic(
        face_id=row["id"],
        person_id=row["person_id"],
        box=Box.model_validate(row["box"]) if row["box"] is not None else None,
        filename=row["filename"],
        enrolled_at=row["enrolled_at"],
    )


async def rerun_source(pool: asyncpg.Pool, image_id: uuid.UUID) -> asyncpg.Record | None:
    """The image row and its stored bytes (``content``, null when no longer stored)."""
    return await pool.fetchrow(
        """
        SELECT i.id, i.run, i.status, i.filename, i.content_type, i.source, i.camera, i.metadata,
               i.submitted_at, b.content
        FROM images i LEFT JOIN image_blobs b ON b.image_id = i.id
        WHERE i.id = $1
        """,
        image_id,
    )


async def rerun_candidates(pool: asyncpg.Pool, status: str, limit: int) -> list[uuid.UUID]:
    """Ids of up to ``limit`` images of ``status``, oldest submission first."""
    rows = await pool.fetch(
        "SELECT id FROM images WHERE status = $1 ORDER BY submitted_at NULLS LAST, id LIMIT $2",
        status,
        limit,
    )
    return [r["id"] for r in rows]


async def rerun_sources(pool: asyncpg.Pool, image_ids: list[uuid.UUID], status: str) -> list[asyncpg.Record]:
    """Like :func:`rerun_source` for several images, keeping those still of ``status``."""
    return await pool.fetch(
        """
        SELECT i.id, i.run, i.status, i.filename, i.content_type, i.source, i.camera, i.metadata,
               i.submitted_at, b.content
        FROM images i LEFT JOIN image_blobs b ON b.image_id = i.id
        WHERE i.id = ANY($1::uuid[]) AND i.status = $2
        """,
        image_ids,
        status,
    )

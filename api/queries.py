"""Reads and writes of the read model (``common/migrations``) that the API needs.

Every function takes the pool or a connection and returns API models or plain rows;
none of them publishes anything. Database errors propagate (a 500: the request was fine).
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

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


def _like(text: str) -> str:
    """``text`` as a case-insensitive substring pattern for ILIKE (its wildcards escaped)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


#: Most rows ``count`` counts; past it the answer says ``count_capped`` (counting a million
#: rows on every page load would cost more than the page).
COUNT_CAP = 10_000


def _filter_sql(f: ImageFilter, args: list[object]) -> str:
    """The WHERE clause of ``f``, its values appended to ``args`` (numbered placeholders).

    Each filter is an index range in the keyset order (common/migrations/0002): status and
    camera lead their own index, person goes through faces_person_seen_idx, filename through
    trigrams. Only the faces of the image's current run count (an older run's rows may
    outlive a re-run).
    """
    where: list[str] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.status is not None:
        where.append(f"i.status = {arg(f.status.value)}")
    if f.person_id is not None:
        where.append(
            "EXISTS (SELECT 1 FROM faces f WHERE f.image_id = i.id AND f.run = i.run "
            f"AND f.person_id = {arg(f.person_id)})"
        )
    if f.camera is not None:
        where.append(f"i.camera = {arg(f.camera)}")
    if f.since is not None:
        where.append(f"i.submitted_at >= {arg(f.since)}")
    if f.until is not None:
        where.append(f"i.submitted_at < {arg(f.until)}")
    if f.filename:
        where.append(f"i.filename ILIKE {arg(_like(f.filename))}")
    if f.ids is not None:
        where.append(f"i.id = ANY({arg(list(f.ids))}::uuid[])")
    if f.statuses is not None:
        where.append(f"i.status = ANY({arg([s.value for s in f.statuses])}::text[])")
    return " AND ".join(where) or "true"


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


@dataclass(frozen=True)
class ImageFilter:
    """Which images a list shows; every field None (or empty) means "any"."""

    status: ImageStatus | None = None
    person_id: uuid.UUID | None = None
    camera: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    filename: str | None = None
    ids: tuple[uuid.UUID, ...] | None = None  # only these images
    statuses: frozenset[ImageStatus] | None = None  # any of these (with ``status``: both hold)


@dataclass(frozen=True)
class Cursor:
    """Where a keyset page starts: after the image (``submitted_at``, ``id``) in the list's
    order (newest first, then id). Sent to clients as an opaque token."""

    submitted_at: datetime
    id: uuid.UUID

    def token(self) -> str:
        raw = f"{self.submitted_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """The cursor in ``token``; ValueError if it is not one this API made."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            at, _, image_id = raw.partition("|")
            when = datetime.fromisoformat(at)
            if when.tzinfo is None:
                raise ValueError("naive time")
            return cls(when, uuid.UUID(image_id))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a cursor from this API ({exc})") from None


async def list_images(
    pool: asyncpg.Pool,
    f: ImageFilter = ImageFilter(),
    *,
    limit: int,
    offset: int = 0,
    after: Cursor | None = None,
) -> ImagesPublic:
    """One page of images, newest submission first, and how many match (up to :data:`COUNT_CAP`).

    With ``after`` the page starts after that image (keyset paging: rows do not shift when
    new images arrive, and a deep page costs what the first does); ``offset`` is kept for
    older clients. ``next_cursor`` is set when more rows may follow.
    """
    args: list[object] = []
    where = _filter_sql(f, args)
    count = await pool.fetchval(
        f"SELECT count(*) FROM (SELECT 1 FROM images i WHERE {where} LIMIT {COUNT_CAP + 1}) x", *args
    )
    page_where = where
    if after is not None:
        args += [after.submitted_at, after.id]
        t, i = f"${len(args) - 1}", f"${len(args)}"
        # The first condition alone is an index bound; the second settles equal times.
        page_where += f" AND i.submitted_at <= {t} AND (i.submitted_at < {t} OR i.id > {i})"
    rows = await pool.fetch(
        f"""
        SELECT {_IMAGE_COLUMNS} FROM images i WHERE {page_where}
        ORDER BY i.submitted_at DESC NULLS LAST, i.id
        LIMIT {int(limit) + 1} OFFSET {int(offset)}
        """,
        *args,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    next_cursor = (
        Cursor(last["submitted_at"], last["id"]).token()
        if more and last is not None and last["submitted_at"] is not None
        else None
    )
    faces = await _faces_of(pool, [r["id"] for r in rows]) if rows else {}
    return ImagesPublic(
        data=[_image(r, faces.get(r["id"], [])) for r in rows],
        count=min(count, COUNT_CAP),
        count_capped=count > COUNT_CAP,
        next_cursor=next_cursor,
    )


_PERSON = """
    SELECT p.id, p.name, p.created_at, count(pf.id)::int AS face_count
    FROM people p LEFT JOIN person_faces pf ON pf.person_id = p.id
"""


async def list_people(pool: asyncpg.Pool, *, q: str | None = None, limit: int, offset: int) -> PeoplePublic:
    """One page of people by name (``q``: whose name contains it, any case)."""
    pattern = _like(q) if q else None
    count = await pool.fetchval(
        "SELECT count(*) FROM people p WHERE ($1::text IS NULL OR p.name ILIKE $1)", pattern
    )
    rows = await pool.fetch(
        f"""{_PERSON} WHERE ($1::text IS NULL OR p.name ILIKE $1)
            GROUP BY p.id ORDER BY lower(p.name), p.id LIMIT $2 OFFSET $3""",
        pattern,
        limit,
        offset,
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
        crop_url=f"/v1/people/{row['person_id']}/faces/{row['id']}/crop" if row.get("crop") else None,
        source_image_id=row.get("source_image_id"),
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


async def rerun_candidates(
    pool: asyncpg.Pool, f: ImageFilter, *, newest: bool, limit: int
) -> list[uuid.UUID]:
    """Ids of up to ``limit`` images that ``f`` keeps, oldest (or ``newest``) submission first.

    Both orders walk the keyset indexes (``submitted_at DESC NULLS LAST, id``), the oldest
    backwards: images without a submission time count as the oldest.
    """
    args: list[object] = []
    where = _filter_sql(f, args)
    order = "i.submitted_at DESC NULLS LAST, i.id" if newest else "i.submitted_at ASC NULLS FIRST, i.id DESC"
    rows = await pool.fetch(
        f"SELECT i.id FROM images i WHERE {where} ORDER BY {order} LIMIT ${len(args) + 1}", *args, limit
    )
    return [r["id"] for r in rows]


async def rerun_sources(
    pool: asyncpg.Pool, image_ids: list[uuid.UUID], statuses: frozenset[ImageStatus]
) -> list[asyncpg.Record]:
    """Like :func:`rerun_source` for several images (in the order of ``image_ids``), keeping
    those still of one of ``statuses``."""
    rows = await pool.fetch(
        """
        SELECT i.id, i.run, i.status, i.filename, i.content_type, i.source, i.camera, i.metadata,
               i.submitted_at, b.content
        FROM images i LEFT JOIN image_blobs b ON b.image_id = i.id
        WHERE i.id = ANY($1::uuid[]) AND i.status = ANY($2::text[])
        """,
        image_ids,
        [s.value for s in statuses],
    )
    position = {image_id: n for n, image_id in enumerate(image_ids)}
    return sorted(rows, key=lambda r: position[r["id"]])


async def rendering_source(pool: asyncpg.Pool, image_id: uuid.UUID, kind: str) -> asyncpg.Record | None:
    """What a rendering of the image needs: its current run and size, the cached rendering
    of ``kind`` (``cached``, of run ``cached_run``) and whether its bytes are stored. None:
    no such image."""
    return await pool.fetchrow(
        """
        SELECT i.run, i.width, i.height, t.run AS cached_run, t.content AS cached,
               EXISTS (SELECT 1 FROM image_blobs b WHERE b.image_id = i.id) AS stored
        FROM images i LEFT JOIN thumbnails t ON t.image_id = i.id AND t.kind = $2
        WHERE i.id = $1
        """,
        image_id,
        kind,
    )


async def stored_bytes(pool: asyncpg.Pool, image_id: uuid.UUID) -> asyncpg.Record | None:
    """The image's stored bytes and declared type; None when not stored (or no such image)."""
    return await pool.fetchrow(
        """SELECT b.content, i.content_type, i.filename FROM image_blobs b JOIN images i ON i.id = b.image_id
           WHERE b.image_id = $1""",
        image_id,
    )


async def face_box(pool: asyncpg.Pool, image_id: uuid.UUID, index: int, run: int) -> Box | None:
    row = await pool.fetchrow(
        """SELECT box_top, box_right, box_bottom, box_left FROM faces
           WHERE image_id = $1 AND face_index = $2 AND run = $3""",
        image_id,
        index,
        run,
    )
    if row is None:
        return None
    return Box(top=row["box_top"], right=row["box_right"], bottom=row["box_bottom"], left=row["box_left"])


async def cache_rendering(
    pool: asyncpg.Pool, image_id: uuid.UUID, kind: str, run: int, content: bytes
) -> None:
    """Keep a rendering for next time (the newest run's wins). An image erased meanwhile
    keeps nothing: its row is gone, and the foreign key refuses the insert."""
    with contextlib.suppress(asyncpg.ForeignKeyViolationError):
        await pool.execute(
            """INSERT INTO thumbnails (image_id, kind, run, content) VALUES ($1, $2, $3, $4)
               ON CONFLICT (image_id, kind) DO UPDATE SET run = excluded.run, content = excluded.content
               WHERE thumbnails.run <= excluded.run""",
            image_id,
            kind,
            run,
            content,
        )


_UNKNOWN_FACE = """
    SELECT f.image_id, f.face_index, f.box_top, f.box_right, f.box_bottom, f.box_left, f.encoding,
           f.distance, f.seen_at, i.camera, i.filename, i.sha256, i.model
    FROM faces f JOIN images i ON i.id = f.image_id AND i.run = f.run
    WHERE f.person_id IS NULL AND f.encoding IS NOT NULL
"""


async def unknown_faces(pool: asyncpg.Pool, window: int) -> list[asyncpg.Record]:
    """The newest ``window`` unknown faces with a stored encoding (faces_unknown_idx)."""
    return await pool.fetch(
        f"{_UNKNOWN_FACE} ORDER BY f.seen_at DESC NULLS LAST, f.image_id, f.face_index LIMIT $1", window
    )


async def faces_for_review(pool: asyncpg.Pool, keys: list[tuple[uuid.UUID, int]]) -> list[asyncpg.Record]:
    """Those of ``keys`` (image id, face index) that are still unknown faces of their image's
    current run with a stored encoding."""
    return await pool.fetch(
        f"""{_UNKNOWN_FACE} AND (f.image_id, f.face_index) IN (
                SELECT * FROM unnest($1::uuid[], $2::int[]))
            ORDER BY f.seen_at DESC NULLS LAST, f.image_id, f.face_index""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )


async def stored_face(pool: asyncpg.Pool, image_id: uuid.UUID, index: int) -> asyncpg.Record | None:
    """Face ``index`` of the image's current run, as :func:`faces_for_review` gives a face, with
    the person its result names (``person_id``, null for unknown) and whether the image
    exists. None: no such image; ``face_index`` null: the image has no such face;
    ``encoding`` null: not stored (erased, or never kept)."""
    return await pool.fetchrow(
        """
        SELECT i.id AS image, f.image_id, f.face_index, f.box_top, f.box_right, f.box_bottom, f.box_left,
               f.encoding, f.person_id, f.distance, f.seen_at, i.camera, i.filename, i.sha256, i.model
        FROM images i LEFT JOIN faces f ON f.image_id = i.id AND f.run = i.run AND f.face_index = $2
        WHERE i.id = $1
        """,
        image_id,
        index,
    )


async def unknown_encodings(pool: asyncpg.Pool, batch: int = 5000) -> AsyncIterator[list[asyncpg.Record]]:
    """Every stored unknown face's (image_id, encoding), ``batch`` rows at a time, through a
    server-side cursor: memory holds one batch whatever the table's size."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = await conn.cursor(
            """SELECT f.image_id, f.encoding FROM faces f JOIN images i ON i.id = f.image_id AND i.run = f.run
               WHERE f.person_id IS NULL AND f.encoding IS NOT NULL"""
        )
        while rows := await cursor.fetch(batch):
            yield rows


async def rematch_sources(
    pool: asyncpg.Pool, image_ids: list[uuid.UUID]
) -> list[tuple[asyncpg.Record, list[asyncpg.Record]]]:
    """Each image's row and the faces of its current run (with encodings), for a re-match."""
    images = await pool.fetch(
        """SELECT id, run, width, height, model, submitted_at FROM images
           WHERE id = ANY($1::uuid[]) AND status IN ('processed', 'unresolved')""",
        image_ids,
    )
    faces = await pool.fetch(
        """SELECT f.image_id, f.face_index, f.box_top, f.box_right, f.box_bottom, f.box_left, f.encoding
           FROM faces f JOIN images i ON i.id = f.image_id AND i.run = f.run
           WHERE f.image_id = ANY($1::uuid[]) ORDER BY f.image_id, f.face_index""",
        image_ids,
    )
    by_image: dict[uuid.UUID, list[asyncpg.Record]] = defaultdict(list)
    for f in faces:
        by_image[f["image_id"]].append(f)
    return [(i, by_image.get(i["id"], [])) for i in images]

"""What notify reads from the read model about a result, for webhooks and MQTT alike:
the image's camera, the names of the people it matched, and which of them were erased.
Results carry person ids only (an erasure must leave no name in the results topic).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from schemas.events import FacesRecognized, ImageFailed


@dataclass(frozen=True)
class ResultContext:
    """``camera``: the image's (None: none given, or the image is gone). ``names``: person
    id -> name. ``erased``: ids of erased people, never to be named."""

    camera: str | None
    names: dict[str, str] = field(default_factory=dict)
    erased: frozenset[str] = frozenset()


async def context_of(pool: asyncpg.Pool, result: FacesRecognized | ImageFailed) -> ResultContext:
    """Read ``result``'s context; raises asyncpg's and OS errors while the database is down."""
    camera = await pool.fetchval("SELECT camera FROM images WHERE id = $1::uuid", result.image_id)
    people = (
        sorted({f.person_id for f in result.faces if f.person_id})
        if isinstance(result, FacesRecognized)
        else []
    )
    if not people:
        return ResultContext(camera)
    rows = await pool.fetch("SELECT id, name FROM people WHERE id = ANY($1::uuid[])", people)
    names = {str(r["id"]): r["name"] for r in rows}
    rows = await pool.fetch("SELECT id FROM erased_people WHERE id = ANY($1::uuid[])", people)
    return ResultContext(camera, names, frozenset(str(r["id"]) for r in rows))


async def known_cameras(pool: asyncpg.Pool, limit: int) -> list[str]:
    """Up to ``limit`` distinct cameras of stored images, in order. A skip scan of the
    ``images (camera, ...)`` index (0002_faces_visible.sql): one index probe per camera,
    however many images each has."""
    rows = await pool.fetch(
        """
        WITH RECURSIVE cameras(camera) AS (
            (SELECT camera FROM images WHERE camera IS NOT NULL ORDER BY camera LIMIT 1)
            UNION ALL
            SELECT (SELECT i.camera FROM images i WHERE i.camera > c.camera ORDER BY i.camera LIMIT 1)
            FROM cameras c WHERE c.camera IS NOT NULL
        )
        SELECT camera FROM cameras WHERE camera IS NOT NULL LIMIT $1
        """,
        limit,
    )
    return [r["camera"] for r in rows]

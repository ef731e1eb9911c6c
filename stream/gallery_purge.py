"""Tombstones for gallery keys that outlived an erasure: an outbox in PostgreSQL.

Erasing a person publishes tombstones for the faces the results API knows of, then for
the person. An enrollment racing the erasure can put a face on the compacted gallery
that no tombstone covers (its row was not yet committed when the API listed the
person's faces), or re-enroll the person after it; compaction would keep that
encoding for ever, and every recognizer would load it.

So the projector, which reads the gallery in order, queues here (:func:`queue`) every
key that must go: a face or person enrolled for an erased person, and on a person's
tombstone, each of their faces it has read and not yet seen deleted (``gallery_faces``).
A stream timer publishes the queued tombstones (:func:`release`) and forgets each key
once the broker has acknowledged it. A key published twice (two workers, a crash
between publishing and forgetting) is a harmless second tombstone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import asyncpg

from schemas.topics import face_key

Send = Callable[[str], Awaitable[object]]


async def queue(conn: asyncpg.Connection, keys: Iterable[str]) -> None:
    """Remember that each of ``keys`` must be tombstoned on the gallery topic."""
    await conn.executemany(
        "INSERT INTO gallery_purge (key) VALUES ($1) ON CONFLICT (key) DO NOTHING", [(k,) for k in keys]
    )


async def queue_faces_of(conn: asyncpg.Connection, person_id: str) -> None:
    """Queue a tombstone for each face of ``person_id`` still on the gallery topic."""
    rows = await conn.fetch("SELECT face_id FROM gallery_faces WHERE person_id = $1", person_id)
    await queue(conn, (face_key(person_id, str(r["face_id"])) for r in rows))


async def release(conn: asyncpg.Connection, send: Send, limit: int = 100) -> int:
    """Publish the queued tombstones (up to ``limit``) with ``send(key)``, which must return
    only once the broker has acknowledged it, then forget them. Several stream workers may
    call this at once: each key is taken by one (``SKIP LOCKED``). Returns how many were sent.

    When nothing is queued (nearly always) it costs one read, no transaction."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM gallery_purge)"):
        return 0
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT key FROM gallery_purge ORDER BY queued_at LIMIT $1 FOR UPDATE SKIP LOCKED", limit
        )
        for row in rows:
            await send(row["key"])
        await conn.execute("DELETE FROM gallery_purge WHERE key = ANY($1::text[])", [r["key"] for r in rows])
    return len(rows)

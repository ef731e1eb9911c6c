"""Erasing a person or an image from the read model (PostgreSQL).

Shared by the results API (which erases on request) and the projector (which erases
when it reads a gallery tombstone, whoever published it); both are idempotent.
"""

from __future__ import annotations

import uuid
from typing import Any

from schemas.events import Outcome
from schemas.lifecycle import Status, reason_of, status_of

#: The first keys of the two-key advisory locks that serialise writes to one image, or
#: one person, with their erasure (that key space does not overlap the single-key locks
#: used elsewhere).
IMAGE_LOCK_SPACE = 0x6673
PERSON_LOCK_SPACE = 0x6674
_LOCK = "SELECT pg_advisory_xact_lock($1, hashtext($2::text))"


async def lock_person(conn: Any, person_id: uuid.UUID | str) -> bool:
    """Serialise this transaction's writes about the person with any erasure of them, and
    say whether they were erased. Call it inside a transaction, before writing.

    Without it an enrollment projected while the person is being erased could insert its
    face after the erasure listed the person's faces (and be kept on the gallery for ever),
    or fail on the person's row deleted under it. The check is a statement of its own,
    after the lock: it then sees an erasure that committed while this transaction waited.
    """
    await conn.execute(_LOCK, PERSON_LOCK_SPACE, str(person_id))
    return bool(await conn.fetchval("SELECT true FROM erased_people WHERE id = $1::uuid", str(person_id)))


async def erase_person(conn: Any, person_id: uuid.UUID | str) -> None:
    """Remove the person and their enrolled faces, and anonymise every result naming them.

    The id is remembered, so a result still in flight that names them is anonymised
    when it is projected (see ``stream.projector.faces_recognized``).

    Faces once matched to them become unknown and anonymous: their encodings are nulled
    too, as are those of the result faces the person was enrolled from (named in review),
    so no biometric template of an erased person survives as an "unknown face". An image
    left with no named face turns ``unresolved`` (``unknown_faces``), as if the person had
    never been enrolled.
    """
    async with conn.transaction():
        await lock_person(conn, person_id)
        await conn.execute(
            """UPDATE faces SET encoding = NULL
               FROM person_faces pf
               WHERE pf.person_id = $1 AND faces.image_id = pf.source_image_id
                 AND faces.face_index = pf.source_face_index AND faces.encoding IS NOT NULL""",
            person_id,
        )
        touched = await conn.fetch(
            """UPDATE faces SET person_id = NULL, person_name = NULL, encoding = NULL
               WHERE person_id = $1 RETURNING image_id""",
            person_id,
        )
        await conn.execute(
            """UPDATE images SET status = $2, status_reason = $3, updated_at = now()
               WHERE id = ANY($1::uuid[]) AND status = $4
                 AND NOT EXISTS (SELECT 1 FROM faces f
                                 WHERE f.image_id = images.id AND f.person_id IS NOT NULL)""",
            list({r["image_id"] for r in touched}),
            status_of(Outcome.UNKNOWN_FACES).value,
            reason_of(Outcome.UNKNOWN_FACES),
            Status.PROCESSED.value,
        )
        await conn.execute("DELETE FROM people WHERE id = $1", person_id)
        await conn.execute(
            "INSERT INTO erased_people (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", person_id
        )


async def lock_image(conn: Any, image_id: uuid.UUID | str) -> bool:
    """Serialise this transaction's writes to the image with any erasure of it, and say
    whether it was erased. Call it inside a transaction, before writing the image's rows.

    Without the lock an upsert that checked "not erased" just before an erasure committed
    would write the row again after it (the erasure deleted a row that was not there yet).
    The check is a statement of its own, after the lock: under READ COMMITTED it then sees
    an erasure that committed while this transaction waited.
    """
    await conn.execute(_LOCK, IMAGE_LOCK_SPACE, str(image_id))
    return bool(await conn.fetchval("SELECT true FROM erased_images WHERE id = $1::uuid", str(image_id)))


async def erase_image(conn: Any, image_id: uuid.UUID | str) -> bool:
    """Delete the image, its stored bytes and its faces, and remember that it was erased
    so that a redelivered event cannot bring it back. Returns whether it existed."""
    async with conn.transaction():
        await lock_image(conn, image_id)
        await conn.execute("INSERT INTO erased_images (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", image_id)
        deleted = await conn.fetchval("DELETE FROM images WHERE id = $1 RETURNING true", image_id)
        await conn.execute("DELETE FROM retries WHERE image_id = $1", image_id)  # they carry its bytes
    return bool(deleted)


async def expire_image_bytes(conn: Any, retention_days: float) -> int:
    """Drop stored image bytes older than the retention; returns how many were dropped."""
    result: str = await conn.execute(
        "DELETE FROM image_blobs WHERE stored_at < now() - make_interval(secs => $1)", retention_days * 86400
    )
    return int(result.split()[-1])

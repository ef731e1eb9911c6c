"""Sightings an operator vouches for: a face the recognizers stored, enrolled for a person.

Both ways an operator names a stored face go through here: naming a group of unknown
faces on the review page (api/routes/review.py) and confirming or correcting one face of
an image (``POST /v1/images/{id}/faces/{index}/confirm``, api/routes/images.py). Either
enrolls the face from the encoding its recognizer stored (``FaceEnrolled`` on the gallery
topic, no new upload) and may then ask for images to be matched again
(``RematchRequested`` on ``images.recognize``), so they show the new name once their new
results are projected. An operator decides every face: nothing here adds one on its own
(docs/MATCHING.md, "Confirmed sightings": self-training drifts).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import HTTPException

from api import gallery, imaging, queries, renderings
from common.publisher import Delivered, Publisher
from schemas.encoding import unpack
from schemas.envelope import utcnow
from schemas.events import Box, FaceToMatch, ModelInfo, RematchRequested
from schemas.topics import RECOGNIZE

#: Images whose re-match requests are built at once (each reads its faces' encodings).
_REMATCH_BATCH = 100


class NotNamed(ValueError):
    """Confirming a face the system left unknown without saying who it is."""


def face_id(person_id: uuid.UUID, image_id: uuid.UUID, face_index: int) -> uuid.UUID:
    """The id a stored face gets when enrolled for ``person_id``: the same on every retry,
    and the same whether it was named in review or confirmed on its image."""
    return uuid.uuid5(person_id, f"{image_id}:{face_index}")


@dataclass(frozen=True)
class Confirmation:
    """What confirming one face does."""

    person_id: uuid.UUID  # who the face is enrolled for
    was_named: uuid.UUID | None  # the other person its result named, for a correction
    rematch: bool  # its image's name changes: ask for a re-match


def plan_confirmation(named: uuid.UUID | None, asked: uuid.UUID | None) -> Confirmation:
    """Confirm a face its result names ``named`` (None: unknown) as ``asked`` (None: as named).

    Raises :class:`NotNamed` when both are None: an unknown face is confirmed only as
    somebody. A confirmation of the name already shown changes no result, so it asks for
    no re-match; naming an unknown face or correcting a name does.
    """
    if asked is None:
        if named is None:
            raise NotNamed("the face is not named: name it with person_id")
        return Confirmation(person_id=named, was_named=None, rematch=False)
    return Confirmation(
        person_id=asked,
        was_named=named if named is not None and named != asked else None,
        rematch=named != asked,
    )


async def enroll(
    pool: asyncpg.Pool, publisher: Publisher, person_id: uuid.UUID, face: asyncpg.Record
) -> tuple[uuid.UUID, asyncpg.Record | None, Delivered | None]:
    """Enroll a stored face (a row of :func:`api.queries.faces_for_review` or
    :func:`api.queries.stored_face`, with its encoding and model) for ``person_id``.

    Returns the enrolled face's id (:func:`face_id`), its new row and where its event lies;
    row and place are None when a previous call enrolled it (a retry changes nothing).
    Raises :class:`asyncpg.ForeignKeyViolationError` if the person is gone, and
    :class:`~common.errors.BrokerUnavailable` with nothing stored if the broker does not
    acknowledge.
    """
    new = gallery.NewFace(
        encoding=unpack(face["encoding"]),
        model=ModelInfo.model_validate(face["model"]),
        box=Box(
            top=face["box_top"], right=face["box_right"], bottom=face["box_bottom"], left=face["box_left"]
        ),
        crop=await _crop(pool, face["image_id"], face["face_index"]),
        source_sha256=face["sha256"],
        filename=face["filename"],
        source_image_id=face["image_id"],
        source_face_index=face["face_index"],
    )
    fid = face_id(person_id, face["image_id"], face["face_index"])
    row, delivered = await gallery.enroll_face(pool, publisher, person_id, fid, new)
    return fid, row, delivered


async def _crop(pool: asyncpg.Pool, image_id: uuid.UUID, index: int) -> bytes | None:
    """The face's crop (cached, or made now); None when the image's bytes are gone."""
    try:
        return await renderings.get(pool, image_id, imaging.Kind.face(index))
    except HTTPException:
        return None


async def rematch(
    pool: asyncpg.Pool, publisher: Publisher, image_ids: list[uuid.UUID], gallery_version: int, reason: str
) -> int:
    """Ask the recognizers to match these images again (their current run + 1), once their
    gallery holds ``gallery_version``; how many were asked. Images without a stored result
    to match again are passed over. A retry asks again: the same run, which the consumers
    keep once."""
    asked = 0
    for start in range(0, len(image_ids), _REMATCH_BATCH):
        sources = await queries.rematch_sources(pool, image_ids[start : start + _REMATCH_BATCH])
        events = [rematch_event(image, faces, gallery_version, reason) for image, faces in sources]
        await asyncio.gather(
            *(publisher.publish_event(RECOGNIZE, e.image_id, e) for e in events if e is not None)
        )
        asked += sum(e is not None for e in events)
    return asked


def rematch_event(
    image: asyncpg.Record, faces: list[asyncpg.Record], gallery_version: int, reason: str
) -> RematchRequested | None:
    """The re-match of one image from its stored result; None if it has none to match again
    (its result is gone, or it has no model or size recorded)."""
    if not faces or image["model"] is None or not image["width"] or not image["height"]:
        return None
    model: dict[str, Any] = image["model"]
    return RematchRequested(
        image_id=str(image["id"]),
        run=image["run"] + 1,
        faces=[
            FaceToMatch(
                index=f["face_index"],
                box=Box(top=f["box_top"], right=f["box_right"], bottom=f["box_bottom"], left=f["box_left"]),
                encoding=unpack(f["encoding"]) if f["encoding"] is not None else None,
            )
            for f in faces
        ],
        width=image["width"],
        height=image["height"],
        gallery_version=max(0, gallery_version),
        model=ModelInfo.model_validate(model),
        submitted_at=image["submitted_at"],
        requested_at=utcnow(),
        reason=reason,
    )

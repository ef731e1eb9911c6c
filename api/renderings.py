"""Renderings of stored images (api/imaging.py), made on first request and cached in
``thumbnails``: a page full of thumbnails decodes each image once, not on every load."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from fastapi import HTTPException, status

from api import imaging, queries


async def get(pool: asyncpg.Pool, image_id: uuid.UUID, kind: imaging.Kind) -> bytes:
    """The JPEG of ``kind`` for the image's current run: cached, or made and cached now.

    404 (HTTPException) if there is no such image, face or stored bytes; 409 if the stored
    bytes cannot be decoded.
    """
    source = await queries.rendering_source(pool, image_id, kind.key)
    if source is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image with id {image_id}")
    if source["cached"] is not None and source["cached_run"] == source["run"]:
        return bytes(source["cached"])
    box = None
    if kind.face_index is not None:
        box = await queries.face_box(pool, image_id, kind.face_index, source["run"])
        if box is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {image_id} has no face {kind.face_index}")
    stored = await queries.stored_bytes(pool, image_id) if source["stored"] else None
    if stored is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"the bytes of image {image_id} are no longer stored")
    try:
        jpeg = await asyncio.to_thread(
            imaging.render, stored["content"], kind, box, source["width"], source["height"]
        )
    except imaging.NotRenderable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"image {image_id} cannot be shown: {exc}") from None
    await queries.cache_rendering(pool, image_id, kind.key, source["run"], jpeg)
    return jpeg

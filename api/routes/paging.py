"""Query parameters shared by the lists: page size, keyset cursor, and the images' filters.

The results page and ``GET /v1/images`` take the same filters through :data:`ImageFilterDep`,
so a filter that works in one works in the other, with the same 422 when it is wrong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Query, status

from api.models import ImageStatus, Text
from api.queries import Cursor, ImageFilter

Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")]


#: An empty field of the results page's filter form: the same as leaving it out.
Blank = Literal[""]


def _aware(value: datetime | str | None) -> datetime | None:
    """A time without a zone is UTC (what the results page's time fields send)."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def image_filter(
    status_filter: Annotated[
        ImageStatus | Blank | None, Query(alias="status", description="Only images of this status.")
    ] = None,
    person: Annotated[
        uuid.UUID | Blank | None,
        Query(description="Only images where this person was identified (latest run)."),
    ] = None,
    camera: Annotated[Text | None, Query(max_length=255, description="Only images from this camera.")] = None,
    since: Annotated[
        datetime | Blank | None,
        Query(description="Only images submitted at or after this time (ISO 8601; UTC without a zone)."),
    ] = None,
    until: Annotated[
        datetime | Blank | None, Query(description="Only images submitted before this time.")
    ] = None,
    filename: Annotated[
        Text | None,
        Query(max_length=255, description="Only images whose file name contains this (any case)."),
    ] = None,
) -> ImageFilter:
    since, until = _aware(since), _aware(until)
    if since is not None and until is not None and until <= since:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid request: until must be after since"
        )
    return ImageFilter(
        status=status_filter or None,
        person_id=person or None,
        camera=camera or None,
        since=since,
        until=until,
        filename=filename or None,
    )


@dataclass(frozen=True)
class Page:
    cursor: Cursor | None
    offset: int


def page(
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="The previous page's `next_cursor`: the page after it (keyset)."),
    ] = None,
    offset: Annotated[
        int, Query(ge=0, le=1_000_000_000, description="Items to skip (older clients; prefer `cursor`).")
    ] = 0,
) -> Page:
    if cursor is None:
        return Page(None, offset)
    if offset:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid request: give cursor or offset, not both"
        )
    try:
        return Page(Cursor.parse(cursor), 0)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"invalid request: cursor: {exc}"
        ) from None


ImageFilterDep = Annotated[ImageFilter, Depends(image_filter)]
PageDep = Annotated[Page, Depends(page)]

"""Server-rendered HTML pages: recent images (``/``) and one person's images (``/people/{id}``).

No JavaScript and no external assets. Every value that came from a client (file names,
person names, reasons) goes through :func:`html.escape`; URLs are built with
:func:`urllib.parse.urlencode`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from html import escape
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import HTMLResponse

from api import queries
from api.deps import PoolDep
from api.models import ImagePublic, ImagesPublic, ImageStatus
from api.routes.paging import Offset
from common.auth import require

router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[require("query")])

PAGE_SIZE = 50
REFRESH_SECONDS = 10

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top; }
th { background: #f5f5f5; }
code { font-size: 12px; }
nav a { margin-right: .8rem; }
nav a.current { font-weight: bold; text-decoration: none; color: #222; }
.status { padding: .1rem .4rem; border-radius: 3px; color: #fff; font-size: 12px; }
.pending { background: #6c757d; } .processed { background: #2e7d32; }
.unresolved { background: #ef8f00; } .failed { background: #c62828; }
.muted { color: #888; }
"""


@router.get("/", response_class=HTMLResponse)
async def images_page(
    pool: PoolDep,
    status_filter: Annotated[ImageStatus | None, Query(alias="status")] = None,
    offset: Offset = 0,
) -> HTMLResponse:
    page = await queries.list_images(pool, status=status_filter, limit=PAGE_SIZE, offset=offset)
    links = [_link("/", {}, "all", current=status_filter is None)]
    links += [_link("/", {"status": s.value}, s.value, current=s == status_filter) for s in ImageStatus]
    body = (
        f"<h1>Recent images</h1><nav>{''.join(links)}</nav>"
        f"{_images_table(page)}"
        f"{_pager('/', {'status': status_filter.value} if status_filter else {}, page, offset)}"
    )
    return HTMLResponse(_layout("facestream: images", body))


@router.get("/people/{person_id}", response_class=HTMLResponse)
async def person_page(person_id: uuid.UUID, pool: PoolDep, offset: Offset = 0) -> HTMLResponse:
    person = await queries.get_person(pool, person_id)
    if person is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no person with id {person_id}")
    page = await queries.list_images(pool, person_id=person_id, limit=PAGE_SIZE, offset=offset)
    body = (
        f"<p><a href='/'>&larr; all images</a></p><h1>{escape(person.name)}</h1>"
        f"<p>{person.face_count} enrolled face(s), since {_time(person.created_at)}. "
        f"Images where {escape(person.name)} was identified:</p>"
        f"{_images_table(page)}{_pager(f'/people/{person_id}', {}, page, offset)}"
    )
    return HTMLResponse(_layout(f"facestream: {person.name}", body))


def _layout(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>"
    )


def _link(path: str, params: dict[str, str | int], text: str, *, current: bool = False) -> str:
    href = f"{path}?{urlencode(params)}" if params else path
    cls = " class='current'" if current else ""
    return f"<a href='{escape(href)}'{cls}>{escape(text)}</a>"


def _images_table(page: ImagesPublic) -> str:
    if not page.data:
        return "<p class='muted'>No images.</p>"
    head = "".join(
        f"<th>{h}</th>"
        for h in ("id", "file", "status", "reason", "people", "faces", "submitted", "finished")
    )
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(map(_image_row, page.data))}</tbody></table>"
    )


def _image_row(image: ImagePublic) -> str:
    names = {f.person_id: f.person_name or str(f.person_id) for f in image.faces if f.person_id is not None}
    people = ", ".join(f"<a href='/people/{pid}'>{escape(name)}</a>" for pid, name in names.items())
    reason = " ".join(escape(x) for x in (image.status_reason, image.status_detail) if x)
    faces = image.face_count if image.face_count is not None else len(image.faces)
    cells = (
        f"<code><a href='/v1/images/{image.id}'>{str(image.id)[:8]}</a></code>",
        escape(image.filename or ""),
        f"<span class='status {image.status.value}'>{image.status.value}</span>",
        reason,
        people or "<span class='muted'>none</span>",
        str(faces) if image.status != ImageStatus.PENDING else "",
        _time(image.submitted_at),
        _time(image.finished_at),
    )
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _pager(path: str, params: dict[str, str | int], page: ImagesPublic, offset: int) -> str:
    shown = f"{offset + 1}–{offset + len(page.data)} of {page.count}" if page.data else f"{page.count} in all"
    parts = []
    if offset > 0:
        parts.append(_link(path, {**params, "offset": max(0, offset - PAGE_SIZE)}, "← newer"))
    parts.append(f"<span class='muted'>{shown}</span>")
    if offset + PAGE_SIZE < page.count:
        parts.append(_link(path, {**params, "offset": offset + PAGE_SIZE}, "older →"))
    return f"<nav>{' '.join(parts)}</nav>"


def _time(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""

"""The operator's pages, server-rendered: results (``/``), an image (``/images/{id}``), people
(``/people``, ``/people/{id}``) and the review of unknown faces (``/review``).

They read what the JSON API reads (api/queries.py, the same filters: api/routes/paging.py)
and act through the JSON API: the buttons are a few lines of script (``_SCRIPT``) that
send the request with ``X-Requested-With``, which the door requires of a browser's
HTTP Basic login for anything but reading (common/door.py). No external assets. Every
value that came from a client (file names, person names, cameras, reasons) goes through
:func:`html.escape`; URLs are built with :func:`urllib.parse.urlencode`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Annotated, Any
from urllib.parse import urlencode

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse

from api import queries, review
from api.deps import PoolDep, SettingsDep
from api.models import FacePublic, ImagePublic, ImagesPublic, ImageStatus, PeoplePublic, PersonDetailPublic
from api.queries import ImageFilter
from api.routes.paging import ImageFilterDep, Offset, PageDep
from common.auth import Principal, require

router = APIRouter(tags=["pages"], include_in_schema=False, dependencies=[require("query")])

PAGE_SIZE = 50
REFRESH_SECONDS = 15
#: Groups on the review page (the largest), and faces shown of each.
REVIEW_GROUPS = 30
REVIEW_FACES = 12
#: People offered in a "this is ..." choice.
PEOPLE_CHOICES = 1000
#: Most faces one "name this group" sends (ReviewAssign's limit).
ASSIGN_MAX = 500

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
header { background: #263238; padding: .6rem 1.5rem; }
header a { color: #eceff1; margin-right: 1.2rem; text-decoration: none; }
header a.current { font-weight: bold; border-bottom: 2px solid #80cbc4; }
main { margin: 1.2rem 1.5rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; vertical-align: middle; }
th { background: #f5f5f5; }
code { font-size: 12px; }
nav.pager a { margin-right: .8rem; }
form.filters { display: flex; flex-wrap: wrap; gap: .6rem; align-items: end; margin-bottom: 1rem; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #555; }
.status { padding: .1rem .4rem; border-radius: 3px; color: #fff; font-size: 12px; }
.pending { background: #6c757d; } .processed { background: #2e7d32; }
.unresolved { background: #ef8f00; } .failed { background: #c62828; }
.muted { color: #888; }
img.thumb { height: 64px; max-width: 110px; object-fit: cover; border-radius: 3px; background: #eee; }
img.crop, img.enrolled { width: 96px; height: 96px; object-fit: cover; border-radius: 4px; background: #eee; }
img.missing { visibility: hidden; }
.photo { position: relative; display: inline-block; max-width: min(100%, 1100px); line-height: 0; }
.photo img { width: 100%; height: auto; }
.face { position: absolute; border: 2px solid #00e676; box-sizing: border-box; }
.face.unknown { border-color: #ffca28; }
.face .label { position: absolute; left: -2px; top: 100%; background: #00e676; color: #000; font-size: 12px;
  line-height: 1.3; padding: 0 .3rem; white-space: nowrap; }
.face.unknown .label { background: #ffca28; }
.layout { display: flex; gap: 1.5rem; align-items: flex-start; flex-wrap: wrap; }
.grid { display: flex; flex-wrap: wrap; gap: .6rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6rem; margin-bottom: 1rem; }
.actions { margin: .8rem 0; display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
button { cursor: pointer; }
button.danger { color: #b71c1c; }
.message { padding: .4rem .6rem; border-radius: 4px; background: #e8f5e9; margin: .5rem 0; }
.message.error { background: #ffebee; }
.chooser { position: relative; display: inline-block; line-height: 0; margin-top: .5rem; }
.chooser img { max-width: 480px; }
.chooser button { position: absolute; border: 2px solid #00e676; background: transparent; }
"""

# The buttons: each element with data-call sends its request through the JSON API.
_SCRIPT = """
async function api(method, url, body) {
  const init = {method, headers: {'X-Requested-With': 'facestream'}, credentials: 'same-origin'};
  if (body instanceof FormData) { init.body = body; }
  else if (body !== undefined) {
    init.body = JSON.stringify(body); init.headers['Content-Type'] = 'application/json';
  }
  const r = await fetch(url, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(data.detail || ('HTTP ' + r.status)); e.data = data; e.status = r.status; throw e;
  }
  return data;
}
function say(el, text, error) {
  const box = el.closest('[data-messages]') || document.querySelector('#messages');
  const p = document.createElement('p');
  p.className = 'message' + (error ? ' error' : ''); p.setAttribute('role', 'status'); p.textContent = text;
  box.prepend(p);
}
document.addEventListener('click', async (ev) => {
  const b = ev.target.closest('button[data-call]');
  if (!b) return;
  ev.preventDefault();
  if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
  const form = b.closest('form');
  let body;
  if (b.dataset.body) body = JSON.parse(b.dataset.body);
  if (form && b.dataset.field) {
    const value = form.elements[b.dataset.field].value.trim();
    if (!value) { say(b, 'Fill in ' + b.dataset.field + ' first.', true); return; }
    body = Object.assign(body || {}, {[b.dataset.as || b.dataset.field]: value});
  }
  b.disabled = true;
  try {
    const data = await api(b.dataset.method || 'POST', b.dataset.call, body);
    say(b, b.dataset.done ? b.dataset.done.replace(/\\{(\\w+)\\}/g, (_, k) => data[k]) : 'Done.');
    if (b.dataset.then === 'reload') setTimeout(() => location.reload(), 600);
    else if (b.dataset.then) location.href = b.dataset.then.replace(/\\{(\\w+)\\}/g, (_, k) => data[k]);
  } catch (e) { say(b, e.message, true); b.disabled = false; }
});
async function enroll(form, faceIndex) {
  const file = form.elements.file.files[0];
  if (!file) { say(form, 'Choose a photo first.', true); return; }
  const fd = new FormData(); fd.append('file', file);
  const url = form.dataset.url + (faceIndex === undefined ? '' : '?face_index=' + faceIndex);
  try {
    await api('POST', url, fd);
    say(form, 'Face enrolled.'); setTimeout(() => location.reload(), 600);
  } catch (e) {
    if (e.status === 422 && e.data && e.data.faces) {
      choose(form, file, e.data.faces); say(form, e.message, true);
    }
    else say(form, e.message, true);
  }
}
function choose(form, file, faces) {
  const holder = form.querySelector('.chooser'); holder.innerHTML = '';
  const img = new Image(); img.src = URL.createObjectURL(file);
  img.onload = () => {
    const sx = img.clientWidth / img.naturalWidth, sy = img.clientHeight / img.naturalHeight;
    for (const f of faces) {
      const b = document.createElement('button'); b.type = 'button'; b.title = 'Enroll face ' + f.index;
      b.className = 'pick'; b.dataset.index = f.index;
      Object.assign(b.style, {left: f.box.left * sx + 'px', top: f.box.top * sy + 'px',
        width: (f.box.right - f.box.left) * sx + 'px', height: (f.box.bottom - f.box.top) * sy + 'px'});
      b.onclick = () => enroll(form, f.index);
      holder.append(b);
    }
  };
  holder.append(img);
}
document.addEventListener('submit', (ev) => {
  const form = ev.target.closest('form[data-enroll]');
  if (form) { ev.preventDefault(); enroll(form); }
});
"""


# --------------------------------------------------------------------------- results


@router.get("/", response_class=HTMLResponse)
async def images_page(request: Request, pool: PoolDep, f: ImageFilterDep, page: PageDep) -> HTMLResponse:
    result = await queries.list_images(pool, f, limit=PAGE_SIZE, offset=page.offset, after=page.cursor)
    people = await queries.list_people(pool, limit=PEOPLE_CHOICES, offset=0)
    params = _filter_params(f)
    body = (
        "<h1>Images</h1>"
        f"{_filters_form(f, [(str(p.id), p.name) for p in people.data])}"
        f"{_images_table(result, empty='No images match these filters.' if params else 'No images yet.')}"
        f"{_pager('/', params, result, page.cursor is not None or page.offset > 0)}"
    )
    refresh = page.cursor is None and page.offset == 0  # deeper pages keep still (keyset)
    return _html("Images", "images", body, request, refresh=refresh)


def _filter_params(f: ImageFilter) -> dict[str, str]:
    params = {
        "status": f.status.value if f.status else None,
        "person": str(f.person_id) if f.person_id else None,
        "camera": f.camera,
        "since": f.since.isoformat() if f.since else None,
        "until": f.until.isoformat() if f.until else None,
        "filename": f.filename,
    }
    return {k: v for k, v in params.items() if v}


def _filters_form(f: ImageFilter, people: list[tuple[str, str]]) -> str:
    statuses = "".join(
        f"<option value='{s.value}'{' selected' if f.status == s else ''}>{s.value}</option>"
        for s in ImageStatus
    )
    chosen = str(f.person_id) if f.person_id else ""
    persons = "".join(
        f"<option value='{escape(pid)}'{' selected' if pid == chosen else ''}>{escape(name)}</option>"
        for pid, name in people
    )
    if chosen and all(pid != chosen for pid, _ in people):
        persons += f"<option value='{escape(chosen)}' selected>{escape(chosen)}</option>"

    def local(t: datetime | None) -> str:
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if t else ""

    return (
        "<form class='filters' id='filters' method='get' action='/'>"
        f"<label>status<select name='status'><option value=''>any</option>{statuses}</select></label>"
        f"<label>person<select name='person'><option value=''>anyone</option>{persons}</select></label>"
        f"<label>camera<input name='camera' value='{escape(f.camera or '')}' size='12'></label>"
        "<label>file name contains"
        f"<input name='filename' value='{escape(f.filename or '')}' size='16'></label>"
        f"<label>since (UTC)<input type='datetime-local' name='since' value='{local(f.since)}'></label>"
        f"<label>until (UTC)<input type='datetime-local' name='until' value='{local(f.until)}'></label>"
        "<button type='submit'>Filter</button> <a href='/'>clear</a></form>"
    )


def _images_table(page: ImagesPublic, empty: str) -> str:
    if not page.data:
        return f"<p class='muted' id='empty'>{escape(empty)}</p>"
    head = "".join(
        f"<th>{h}</th>" for h in ("", "file", "camera", "status", "reason", "people", "faces", "submitted")
    )
    rows = "".join(map(_image_row, page.data))
    return f"<table id='images'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _image_row(image: ImagePublic) -> str:
    href = f"/images/{image.id}"
    reason = " ".join(escape(x) for x in (image.status_reason, image.status_detail) if x)
    faces = image.face_count if image.face_count is not None else len(image.faces)
    cells = (
        f"<a href='{href}'><img class='thumb' alt='' src='/v1/images/{image.id}/thumbnail' "
        "onerror=\"this.classList.add('missing')\"></a>",
        f"<a class='open' href='{href}'>{escape(image.filename or str(image.id)[:8])}</a>",
        escape(image.camera or ""),
        f"<span class='status {image.status.value}'>{image.status.value}</span>",
        reason,
        _people_links(image.faces) or "<span class='muted'>none</span>",
        str(faces) if image.status != ImageStatus.PENDING else "",
        _time(image.submitted_at),
    )
    return f"<tr data-image-id='{image.id}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _people_links(faces: list[FacePublic]) -> str:
    names = {f.person_id: f.person_name or str(f.person_id) for f in faces if f.person_id is not None}
    return ", ".join(f"<a href='/people/{pid}'>{escape(name)}</a>" for pid, name in names.items())


def _pager(path: str, params: dict[str, str], page: ImagesPublic, deeper: bool) -> str:
    counted = f"{page.count:,}{'+' if page.count_capped else ''}"
    parts = [f"<span class='muted'>{counted} in all</span>"]
    if deeper:
        parts.insert(0, _link(path, params, "⟵ newest"))
    if page.next_cursor:
        parts.append(_link(path, {**params, "cursor": page.next_cursor}, "older ⟶", id_="next"))
    return f"<nav class='pager'>{' '.join(parts)}</nav>"


# --------------------------------------------------------------------------- one image


@router.get("/images/{image_id}", response_class=HTMLResponse)
async def image_page(request: Request, image_id: uuid.UUID, pool: PoolDep) -> HTMLResponse:
    image = await queries.get_image(pool, image_id)
    if image is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image with id {image_id}")
    principal = _principal(request)
    people = (
        await queries.list_people(pool, limit=PEOPLE_CHOICES, offset=0) if _may(principal, "enroll") else None
    )
    actions = []
    if _may(principal, "submit") and image.status.value in ("failed", "unresolved"):
        actions.append(
            f"<button id='rerun' data-call='/v1/images/{image.id}/rerun' "
            "data-done='Re-run {run} submitted.' data-then='reload'>Re-run</button>"
        )
    if _may(principal, "admin"):
        actions.append(
            f"<button id='erase' class='danger' data-method='DELETE' data-call='/v1/images/{image.id}' "
            "data-confirm='Erase this image, its faces and its bytes for good?' data-then='/'>Erase</button>"
        )
    details = [
        (
            "status",
            f"<span class='status {image.status.value}'>{image.status.value}</span> "
            + " ".join(escape(x) for x in (image.status_reason, image.status_detail) if x),
        ),
        ("camera", escape(image.camera or "")),
        ("source", escape(image.source or "")),
        ("submitted", _time(image.submitted_at)),
        ("finished", _time(image.finished_at)),
        ("size", f"{image.width}×{image.height}" if image.width else ""),
        ("run", str(image.run)),
        ("rule", _rule(image.rule)),
        (
            "id",
            f"<code>{image.id}</code> (<a href='/v1/images/{image.id}'>JSON</a>, "
            f"<a href='/v1/images/{image.id}/file'>file</a>)",
        ),
    ]
    info = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in details)
    body = (
        f"<p><a href='/'>&larr; images</a></p><h1>{escape(image.filename or str(image.id))}</h1>"
        "<div id='messages'></div>"
        f"<div class='actions'>{''.join(actions)}</div>"
        "<div class='layout'>"
        f"{_photo(image)}"
        f"<div><table class='info'>{info}</table><h2>Faces</h2>{_faces_list(image, people)}</div>"
        "</div>"
    )
    return _html(image.filename or "Image", "images", body, request)


def _rule(rule: Mapping[str, Any] | None) -> str:
    """The decision rule a result was made with, in words: its tolerance and margin, and
    the stated false-accept rate they were derived from (docs/MATCHING.md)."""
    if not rule:
        return ""
    text = f"tolerance {rule.get('tolerance', 0):.3f}, margin {rule.get('margin', 0):.3f}"
    target = rule.get("false_accept_target")
    if target is None:
        return escape(f"{text} (fixed)")
    people, estimate = rule.get("calibrated_people"), rule.get("false_accept_estimate")
    derived = f"derived for a stated false-accept rate of {target:.2%} with {people} people enrolled"
    if estimate is not None:
        derived += f" (estimated {estimate:.2%}, {rule.get('calibration')})"
    return escape(f"{text}: {derived}")


def _photo(image: ImagePublic) -> str:
    """The display copy with every face's box over it, placed in percent of the upright
    original (the boxes' frame), so they stay on their faces at any size."""
    boxes = ""
    if image.width and image.height:
        for f in image.faces:
            b = f.box
            style = (
                f"left:{100 * b.left / image.width:.3f}%;top:{100 * b.top / image.height:.3f}%;"
                f"width:{100 * (b.right - b.left) / image.width:.3f}%;"
                f"height:{100 * (b.bottom - b.top) / image.height:.3f}%"
            )
            known = f.person_id is not None
            cls = "face" if known else "face unknown"
            boxes += (
                f"<div class='{cls}' data-index='{f.index}' style='{style}'>"
                f"<span class='label'>{_face_label(f)}</span></div>"
            )
    return (
        f"<div class='photo'><img id='photo' alt='{escape(image.filename or '')}' "
        f"src='/v1/images/{image.id}/preview' onerror=\"this.classList.add('missing')\">{boxes}</div>"
    )


def _face_label(f: FacePublic) -> str:
    name = escape(f.person_name or str(f.person_id)) if f.person_id is not None else "unknown"
    return f"{name} {f.distance:.2f}" if f.distance is not None else name


def _faces_list(image: ImagePublic, people: PeoplePublic | None) -> str:
    if not image.faces:
        return (
            "<p class='muted'>No face found.</p>"
            if image.status != ImageStatus.PENDING
            else "<p>Pending.</p>"
        )
    choices = ""
    if people is not None:
        choices = "".join(f"<option value='{p.id}'>{escape(p.name)}</option>" for p in people.data)
    items = []
    for f in image.faces:
        who = (
            f"<a href='/people/{f.person_id}'>{escape(f.person_name or str(f.person_id))}</a>"
            if f.person_id is not None
            else "unknown"
        )
        distance = f" <span class='muted'>distance {f.distance:.2f}</span>" if f.distance is not None else ""
        name_it = ""
        if f.person_id is None and people is not None:
            faces = json.dumps({"faces": [{"image_id": str(image.id), "face_index": f.index}]})
            name_it = (
                "<form class='actions' data-messages>"
                f"<select name='person_id'><option value=''>this is…</option>{choices}</select>"
                f"<button data-call='/v1/review/assign' data-field='person_id' data-body='{escape(faces)}' "
                "data-done='Named; {rematched} image(s) being matched again.' "
                "data-then='reload'>Name</button>"
                "<input name='name' placeholder='or a new person' size='14'>"
                f"<button data-call='/v1/review/assign' data-field='name' data-body='{escape(faces)}' "
                "data-done='New person; {rematched} image(s) being matched again.' "
                "data-then='reload'>New</button>"
                "</form>"
            )
        elif people is not None:
            name_it = _confirm_controls(image.id, f, choices)
        items.append(
            f"<li data-index='{f.index}'><img class='crop' loading='lazy' alt='' "
            f"src='/v1/images/{image.id}/faces/{f.index}/crop' onerror=\"this.classList.add('missing')\"> "
            f"#{f.index}: {who}{distance}{name_it}</li>"
        )
    return f"<ul id='faces'>{''.join(items)}</ul>"


def _confirm_controls(image_id: uuid.UUID, f: FacePublic, choices: str) -> str:
    """A named face's controls: confirm the name (the face is enrolled for that person), or
    correct it to another (enrolled for them, and the image matched again)."""
    call = f"/v1/images/{image_id}/faces/{f.index}/confirm"
    return (
        "<form class='actions confirm' data-messages>"
        f"<button class='confirm-face' data-call='{call}' "
        "data-done='Confirmed: the face is enrolled for this person.'>Confirm</button>"
        f"<select name='person_id'><option value=''>this is…</option>{choices}</select>"
        f"<button class='correct-face' data-call='{call}' data-field='person_id' "
        "data-done='Corrected; the image is being matched again.' data-then='reload'>Correct</button>"
        "</form>"
    )


# --------------------------------------------------------------------------- people


@router.get("/people", response_class=HTMLResponse)
async def people_page(
    request: Request,
    pool: PoolDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    offset: Offset = 0,
) -> HTMLResponse:
    people = await queries.list_people(pool, q=q, limit=PAGE_SIZE, offset=offset)
    principal = _principal(request)
    rows = "".join(
        f"<tr data-person-id='{p.id}'><td><a href='/people/{p.id}'>{escape(p.name)}</a></td>"
        f"<td>{p.face_count}</td><td>{_time(p.created_at)}</td></tr>"
        for p in people.data
    )
    table = (
        f"<table id='people'><thead><tr><th>name</th><th>enrolled faces</th><th>since</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if people.data
        else f"<p class='muted' id='empty'>{'Nobody matches.' if q else 'Nobody is enrolled yet.'}</p>"
    )
    create = ""
    if _may(principal, "enroll"):
        create = (
            "<form class='actions' data-messages><input name='name' placeholder='name' size='20'>"
            "<button id='create-person' data-call='/v1/people' data-field='name' "
            "data-then='/people/{id}'>Add a person</button></form>"
        )
    pager = []
    if offset > 0:
        pager.append(_link("/people", {"q": q or "", "offset": max(0, offset - PAGE_SIZE)}, "⟵ previous"))
    pager.append(f"<span class='muted'>{people.count} in all</span>")
    if offset + PAGE_SIZE < people.count:
        pager.append(_link("/people", {"q": q or "", "offset": offset + PAGE_SIZE}, "next ⟶"))
    body = (
        "<h1>People</h1><div id='messages'></div>"
        f"<form class='filters' method='get' action='/people'><input name='q' value='{escape(q or '')}' "
        "placeholder='name contains'><button type='submit'>Search</button></form>"
        f"{create}{table}<nav class='pager'>{' '.join(pager)}</nav>"
    )
    return _html("People", "people", body, request)


@router.get("/people/{person_id}", response_class=HTMLResponse)
async def person_page(request: Request, person_id: uuid.UUID, pool: PoolDep, page: PageDep) -> HTMLResponse:
    person = await queries.get_person(pool, person_id)
    if person is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no person with id {person_id}")
    seen = await queries.list_images(
        pool, ImageFilter(person_id=person_id), limit=PAGE_SIZE, offset=page.offset, after=page.cursor
    )
    principal = _principal(request)
    body = (
        f"<p><a href='/people'>&larr; people</a></p><h1 id='name'>{escape(person.name)}</h1>"
        "<div id='messages'></div>"
        f"{await _person_actions(pool, person, principal)}"
        f"<h2>Enrolled faces ({person.face_count})</h2>{_enrolled(person, principal)}"
        f"<h2>Seen in</h2>"
        f"{_images_table(seen, empty=f'{person.name} has not been identified in any image.')}"
        f"{_pager(f'/people/{person_id}', {}, seen, page.cursor is not None or page.offset > 0)}"
    )
    return _html(person.name, "people", body, request)


async def _person_actions(pool: PoolDep, person: PersonDetailPublic, principal: Principal | None) -> str:
    parts = []
    if _may(principal, "enroll"):
        parts.append(
            "<form class='actions' data-messages>"
            f"<input name='name' value='{escape(person.name)}' size='20'>"
            f"<button id='rename' data-method='PATCH' data-call='/v1/people/{person.id}' data-field='name' "
            "data-done='Renamed to {name}.' data-then='reload'>Rename</button></form>"
            f"<form class='actions' data-enroll data-url='/v1/people/{person.id}/faces' data-messages>"
            "<input type='file' name='file' accept='image/*'><button type='submit' id='add-photo'>Add a photo"
            "</button><div class='chooser'></div></form>"
        )
    if _may(principal, "admin"):
        others = await queries.list_people(pool, limit=PEOPLE_CHOICES, offset=0)
        options = "".join(
            f"<option value='{p.id}'>{escape(p.name)}</option>" for p in others.data if p.id != person.id
        )
        parts.append(
            "<form class='actions' data-messages>"
            "<select name='from'>"
            f"<option value=''>merge someone into {escape(person.name)}…</option>{options}"
            f"</select><button id='merge' data-call='/v1/people/{person.id}/merge' data-field='from' "
            "data-confirm='Merge: their faces move here and they are erased. Go on?' "
            "data-done='Merged: {faces_moved} face(s) moved.' data-then='reload'>Merge</button>"
            "<button id='erase-person' class='danger' data-method='DELETE' "
            f"data-call='/v1/people/{person.id}' "
            f"data-confirm='Erase {escape(person.name)} everywhere, for good?' "
            "data-then='/people'>Erase</button>"
            "</form>"
        )
    return "".join(parts)


def _enrolled(person: PersonDetailPublic, principal: Principal | None) -> str:
    if not person.faces:
        return "<p class='muted'>No face enrolled yet.</p>"
    cards = []
    for f in person.faces:
        img = (
            f"<img class='enrolled' alt='' src='{f.crop_url}'>"
            if f.crop_url
            else "<span class='muted'>(no crop)</span>"
        )
        source = f"<br><a href='/images/{f.source_image_id}'>from an image</a>" if f.source_image_id else ""
        remove = ""
        if _may(principal, "enroll"):
            remove = (
                f"<br><button class='remove-face danger' data-method='DELETE' "
                f"data-call='/v1/people/{person.id}/faces/{f.face_id}' "
                "data-confirm='Remove this enrolled face?' data-then='reload'>remove</button>"
            )
        cards.append(
            f"<div class='card' data-face-id='{f.face_id}' data-messages>{img}<br>"
            f"<span class='muted'>{escape(f.filename or '')}</span>{source}{remove}</div>"
        )
    return f"<div class='grid' id='enrolled'>{''.join(cards)}</div>"


# --------------------------------------------------------------------------- review


@router.get("/review", response_class=HTMLResponse)
async def review_page(request: Request, pool: PoolDep, settings: SettingsDep) -> HTMLResponse:
    rows = await queries.unknown_faces(pool, settings.review_window)
    # In a thread: clustering is numpy (it releases the GIL), and the event loop stays free.
    labels = await asyncio.to_thread(
        review.cluster, b"".join(r["encoding"] for r in rows), settings.review_cluster_threshold
    )
    found = review.groups(labels)
    principal = _principal(request)
    people = (
        await queries.list_people(pool, limit=PEOPLE_CHOICES, offset=0) if _may(principal, "enroll") else None
    )
    cards = [
        _group_card(n, [rows[i] for i in members], people) for n, members in enumerate(found[:REVIEW_GROUPS])
    ]
    content = "<p class='muted' id='empty'>No unknown faces to review.</p>" if not cards else "".join(cards)
    body = (
        "<h1>Unknown faces</h1><div id='messages'></div>"
        f"<p class='muted'>{len(rows)} newest unknown face(s) in {len(found)} group(s) by likeness"
        f"{f'; the largest {REVIEW_GROUPS} shown' if len(found) > REVIEW_GROUPS else ''}. Naming a group "
        "enrolls its faces and matches its images, and any earlier image with a face like it, again.</p>"
        f"{content}"
    )
    return _html("Review", "review", body, request)


def _group_card(n: int, members: list[asyncpg.Record], people: PeoplePublic | None) -> str:
    faces = [{"image_id": str(r["image_id"]), "face_index": r["face_index"]} for r in members]
    shown = "".join(
        f"<a href='/images/{r['image_id']}'><img class='crop' loading='lazy' alt='' "
        f"src='/v1/images/{r['image_id']}/faces/{r['face_index']}/crop' "
        "onerror=\"this.classList.add('missing')\"></a>"
        for r in members[:REVIEW_FACES]
    )
    payload = escape(json.dumps({"faces": faces[:ASSIGN_MAX]}))
    form = ""
    if people is not None:
        options = "".join(f"<option value='{p.id}'>{escape(p.name)}</option>" for p in people.data)
        form = (
            "<form class='actions'>"
            f"<select name='person_id'><option value=''>this is…</option>{options}</select>"
            "<button class='assign' data-call='/v1/review/assign' data-field='person_id' "
            f"data-body='{payload}' "
            "data-done='Named: {enrolled} face(s) enrolled, {rematched} image(s) being matched again.'>"
            "Name</button>"
            "<input name='name' placeholder='new person' size='16'>"
            "<button class='new-person' data-call='/v1/review/assign' data-field='name' "
            f"data-body='{payload}' "
            "data-done='New person: {enrolled} face(s) enrolled, {rematched} image(s) being matched again.'>"
            "New person</button></form>"
        )
    return (
        f"<div class='card group' data-group='{n}' data-size='{len(members)}' data-messages>"
        f"<strong>{len(members)} face(s)</strong><div class='grid'>{shown}</div>{form}</div>"
    )


# --------------------------------------------------------------------------- layout


def _principal(request: Request) -> Principal | None:
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


def _may(principal: Principal | None, scope: str) -> bool:
    return principal is not None and principal.allows(scope)  # type: ignore[arg-type]


_CURRENT = " class='current'"
_SECTIONS = (("images", "/", "Images"), ("people", "/people", "People"), ("review", "/review", "Review"))


def _html(
    title: str,
    section: str,
    body: str,
    request: Request | None = None,
    *,
    refresh: bool = False,
    status_code: int = 200,
) -> HTMLResponse:
    del request
    nav = "".join(
        f"<a href='{href}'{_CURRENT if key == section else ''}>{text}</a>" for key, href, text in _SECTIONS
    )
    nav += "<a href='/docs'>API</a>"
    meta = f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>" if refresh else ""
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>{meta}"
        f"<title>facestream: {escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><header>{nav}</header><main>{body}</main><script>{_SCRIPT}</script></body></html>"
    )
    return HTMLResponse(page, status_code=status_code)


def error_page(status_code: int, detail: str) -> HTMLResponse:
    """A readable page for a refused page request (a bad filter, an unknown id)."""
    heading = {404: "Not found", 422: "That filter does not work"}.get(status_code, "Something went wrong")
    body = (
        f"<h1>{heading}</h1><p class='message error' id='error'>{escape(detail)}</p>"
        "<p><a href='/'>Back to the images</a></p>"
    )
    return _html(heading, "", body, status_code=status_code)


def _link(path: str, params: Mapping[str, str | int], text: str, *, id_: str | None = None) -> str:
    given = {k: v for k, v in params.items() if v != ""}
    href = f"{path}?{urlencode(given)}" if given else path
    ident = f" id='{id_}'" if id_ else ""
    return f"<a href='{escape(href)}'{ident}>{escape(text)}</a>"


def _time(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""

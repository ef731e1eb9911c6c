"""What each subcommand does, through the public HTTP APIs only.

Each command records one :class:`~cli.fates.Item` per file in ``ledger`` *before* it
sends anything (as ``not sent``) and updates it as answers come, so a command stopped
by an error (:class:`~cli.errors.CliError`) still reports every file: what was done,
what was refused and why, and what was never sent. A file the service refuses is that
file's fate; the command goes on with the others. Every request that may be repeated
carries a client-chosen id (person ``id``, ``face_id``) or an ``Idempotency-Key``.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cli.console import Console
from cli.errors import EXIT_ITEMS_FAILED, EXIT_OK, CliError, UsageError
from cli.fates import Fate, Item
from cli.folders import people_in, unpacked
from cli.http import Service, detail_of, retry_after
from schemas import lifecycle

FINAL = frozenset(s.value for s in lifecycle.FINAL)
#: Answers about one file (nothing was stored for it): that file's fate, not an error.
FILE_REFUSALS = frozenset({400, 404, 409, 413, 415, 422})
#: Images polled per round while waiting (in turn, so a slow one does not hide the others).
POLL_WINDOW = 10
POLL_EVERY_S = 0.5
#: Most image ids one re-run request names (the results API's RERUN_MAX).
RERUN_IDS_PER_REQUEST = 10_000


@dataclass
class Clients:
    api: Service
    ingest: Service
    console: Console
    sleep: Callable[[float], None] = time.sleep


# -- enroll ---------------------------------------------------------------------------


def enroll(
    c: Clients,
    folder: Path,
    ledger: list[Item],
    per_person: int | None = None,
    concurrency: int = 1,
    *,
    accept_poor: bool = False,
) -> None:
    """Enroll every person of ``folder`` (a person of the same name is reused); each photo
    is ``ok``, ``skipped`` (this photo is already enrolled for them) or ``refused`` (with
    ``accept_poor``, a face that would make a poor template is enrolled, not refused).

    People are found or created one at a time, in order; up to ``concurrency`` photos are
    sent at once (each is a scan by a recognizer: more recognizers take more at once).
    Each person is reported once all their photos are answered, in order. An error that
    stops the command (:class:`~cli.errors.CliError`) lets the photos already sent finish
    and sends no other: those stay ``not sent``.
    """
    try:
        people = people_in(folder)
    except NotADirectoryError as exc:
        raise UsageError(str(exc)) from None
    plan = [
        (
            name,
            [
                (photo, _planned(ledger, Item(str(photo), Fate.NOT_SENT, person=name)))
                for photo in photos[:per_person]
            ],
        )
        for name, photos in people.items()
    ]
    # Photos in flight (or queued) at most: enough to keep every sender busy, few enough
    # that a stop leaves little half-done.
    window = 2 * concurrency
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="enroll") as pool:
        pending: deque[tuple[int, str, bool, list[tuple[Item, Future[None]]]]] = deque()
        in_flight = 0
        try:
            for n, (name, photos) in enumerate(plan, 1):
                person_id, created = _person(c.api, name)
                sent = []
                for photo, item in photos:
                    item.person_id = person_id
                    sent.append(
                        (item, pool.submit(_enroll_photo, c.api, person_id, photo, item, accept_poor))
                    )
                pending.append((n, name, created, sent))
                in_flight += len(sent)
                while pending and in_flight > window:
                    in_flight -= _report(c, pending.popleft(), len(plan))
            while pending:
                _report(c, pending.popleft(), len(plan))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the queued ones stay "not sent"
            raise


def _report(c: Clients, person: tuple[int, str, bool, list[tuple[Item, Future[None]]]], total: int) -> int:
    """Wait for one person's photos (raising the first error that stopped one), print their
    line; returns how many photos that was."""
    n, name, created, sent = person
    for _item, done in sent:
        done.result()
    counts = {f: sum(i.fate is f for i, _ in sent) for f in (Fate.OK, Fate.SKIPPED, Fate.REFUSED)}
    c.console.progress(
        f"[{n}/{total}] {name}{' (new)' if created else ''}: {counts[Fate.OK]} enrolled, "
        f"{counts[Fate.SKIPPED]} already enrolled, {counts[Fate.REFUSED]} refused",
        final=True,
    )
    return len(sent)


def import_people(
    c: Clients,
    source: Path,
    ledger: list[Item],
    per_person: int | None = None,
    concurrency: int = 4,
    *,
    accept_poor: bool = False,
) -> None:
    """:func:`enroll` the people of ``source``: a folder of one folder per person (LFW's
    layout, or ``person_1.jpg`` files) or a .zip or .tar archive of one
    (:func:`cli.folders.unpacked`). Idempotent like :func:`enroll`: a photo already
    enrolled for its person is ``skipped``."""
    try:
        with unpacked(source) as folder:
            enroll(c, folder, ledger, per_person, concurrency, accept_poor=accept_poor)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _planned(ledger: list[Item], item: Item) -> Item:
    ledger.append(item)
    return item


def _person(api: Service, name: str) -> tuple[str, bool]:
    """The id of the person named ``name`` (the first one, if several), created if there
    is none; and whether it was created."""
    offset = 0
    while True:
        r = api.expect(api.send("GET", "/v1/people", params={"q": name, "limit": 500, "offset": offset}), 200)
        page = r.json()["data"]
        for person in page:
            if person["name"] == name:
                return str(person["id"]), False
        if len(page) < 500:
            break
        offset += len(page)
    r = api.send("POST", "/v1/people", json={"id": str(uuid.uuid4()), "name": name})
    return str(api.expect(r, 200, 201).json()["id"]), True


def _enroll_photo(api: Service, person_id: str, photo: Path, item: Item, accept_poor: bool = False) -> None:
    try:
        data = photo.read_bytes()
    except OSError as exc:
        item.detail = f"cannot read it: {exc.strerror or exc}"
        return
    # A portrait's subject is its largest face (a photo may show bystanders).
    r = api.send(
        "POST",
        f"/v1/people/{person_id}/faces",
        params={
            "face_index": "largest",
            "face_id": str(uuid.uuid4()),
            "accept_poor": str(accept_poor).lower(),
        },
        files={"file": (photo.name, data)},
    )
    if r.status_code in (200, 201):
        item.fate = Fate.OK if r.status_code == 201 else Fate.SKIPPED
        body = r.json()
        item.face_id = str(body["face_id"])
        # Enrolled, with room for a better photo (docs/MATCHING.md, "Enrollment quality").
        item.detail = "; ".join(q["message"] for q in body.get("quality") or []) or None
    elif r.status_code in FILE_REFUSALS:
        item.fate, item.http_status, item.detail = Fate.REFUSED, r.status_code, detail_of(r)
    else:
        raise api.refused(r)


# -- submit and wait ------------------------------------------------------------------


def submit(
    c: Clients, files: list[Path], ledger: list[Item], *, batch: int = 10, camera: str | None = None
) -> list[Item]:
    """Send ``files`` to ingest, ``batch`` at a time; returns their items (also in ``ledger``).

    Ingest refuses a whole request when one file is bad (400, 413, 415, 422, naming the
    file); then each file of that request is sent on its own, so the good ones are
    accepted and each bad one gets the server's reason. A 503 (the broker did not take
    every file) is repeated with the same ``Idempotency-Key`` after ``Retry-After``; if
    it persists, the files it accepted keep their ids and the command stops."""
    items = [_planned(ledger, Item(str(p), Fate.NOT_SENT)) for p in files]
    for start in range(0, len(files), batch):
        _send(
            c.ingest,
            list(zip(files[start : start + batch], items[start : start + batch], strict=True)),
            camera,
        )
        c.console.progress(
            f"submitted {min(start + batch, len(files))}/{len(files)}", final=start + batch >= len(files)
        )
    return items


def _send(ingest: Service, batch: list[tuple[Path, Item]], camera: str | None) -> None:
    readable: list[tuple[Path, Item, bytes]] = []
    for path, item in batch:
        try:
            readable.append((path, item, path.read_bytes()))
        except OSError as exc:
            item.detail = f"cannot read it: {exc.strerror or exc}"
    if not readable:
        return
    r = ingest.send(
        "POST",
        "/v1/images",
        files=[("files", (path.name, data)) for path, _, data in readable],
        data={"camera": camera} if camera is not None else None,
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    if r.status_code == 202:
        for (_, item, _), accepted in zip(readable, r.json()["data"], strict=True):
            item.fate, item.id, item.status = Fate.OK, str(accepted["id"]), "pending"
        return
    if r.status_code in FILE_REFUSALS:
        if len(readable) > 1:  # which file? send each on its own: nothing of this request was published
            for path, item, _ in readable:
                _send(ingest, [(path, item)], camera)
            return
        path, item, _ = readable[0]
        item.fate, item.http_status = Fate.REFUSED, r.status_code
        item.detail = _without_prefix(detail_of(r), path.name)
        return
    if r.status_code == 503:  # still partly accepted after the retries: keep what was taken
        body = _json(r)
        listed = body.get("data") if isinstance(body, dict) else None
        if isinstance(listed, list) and len(listed) == len(readable):
            for (_, item, _), fate in zip(readable, listed, strict=True):
                if fate.get("fate") == "accepted":
                    item.fate, item.id, item.status = Fate.OK, str(fate["id"]), "pending"
                else:
                    item.detail = f"the ingest API did not accept it: {fate.get('fate')}"
    raise ingest.refused(r)


def _without_prefix(detail: str, name: str) -> str:
    """Ingest's detail starts with the file's name (``a.jpg: not an image``); the report
    names the file already."""
    return detail[len(name) + 2 :] if detail.startswith(f"{name}: ") else detail


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def wait_for(c: Clients, items: list[Item], timeout: float) -> None:
    """Poll the results API until every accepted image has a final status, or ``timeout``.

    ``processed`` and ``unresolved`` stay ``ok`` (with who was found); ``failed`` becomes
    the item's fate with the reason; images still pending at the timeout become
    ``pending``. 401, 403 and 404 end the wait at once (:class:`CliError`); 429 and 503
    with ``Retry-After`` only slow it down."""
    waiting = [i for i in items if i.fate is Fate.OK and i.status == "pending"]
    total = len(waiting)
    deadline = time.monotonic() + timeout
    turn = 0
    while waiting:
        pause = POLL_EVERY_S
        polled = 0
        while polled < min(POLL_WINDOW, len(waiting)):
            item = waiting[turn % len(waiting)]
            r = c.api.send("GET", f"/v1/images/{item.id}", retries=0)
            polled += 1
            if r.status_code == 200:
                body = r.json()
                if body["status"] in FINAL:
                    _settle(item, body)
                    waiting.remove(item)
                    continue
                turn += 1
            elif r.status_code in (429, 503) and (wait := retry_after(r)) is not None:
                pause = max(pause, wait)
                break
            elif r.status_code == 404:
                raise CliError(
                    f"the results API at {c.api.url} does not know image {item.id} ({item.file}) that the "
                    f"ingest API at {c.ingest.url} accepted (404: {detail_of(r)}); are --api and --ingest "
                    "the same platform?"
                )
            else:
                raise c.api.refused(r)
        c.console.progress(f"{total - len(waiting)}/{total} images finished", final=not waiting)
        left = deadline - time.monotonic()
        if not waiting or left <= 0:
            break
        c.sleep(min(pause, left))
    for item in waiting:
        item.fate = Fate.PENDING


def _settle(item: Item, result: dict[str, Any]) -> None:
    item.status = result["status"]
    item.status_reason = result.get("status_reason")
    item.people = [f.get("person_name") or "unknown" for f in result.get("faces", [])]
    if item.status == lifecycle.Status.FAILED:
        item.fate, item.detail = Fate.FAILED, result.get("status_detail")


# -- rerun ------------------------------------------------------------------------------


def read_ids(ids: list[str], source: Path | None, stdin: Callable[[], str]) -> list[str]:
    """``ids``, then those of ``source`` (one a line; blank lines and ``#`` comments
    skipped; ``-`` reads stdin), each once, checked to be UUIDs (else UsageError)."""
    lines = list(ids)
    if source is not None:
        try:
            text = stdin() if str(source) == "-" else source.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read image ids from {source}: {exc.strerror or exc}") from None
        lines += [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    out: dict[str, None] = {}
    for raw in lines:
        if not raw:
            continue
        try:
            out[str(uuid.UUID(raw))] = None
        except ValueError:
            raise UsageError(f"{raw!r} is not an image id (a UUID)") from None
    return list(out)


def rerun(c: Clients, scope: dict[str, Any], ids: list[str]) -> int:
    """``POST /v1/images/rerun`` with ``scope`` (the body; ``ids`` are sent at most
    :data:`RERUN_IDS_PER_REQUEST` a request); prints the counts. Exit status 1 when some
    images in the scope could not re-run (their bytes are gone) or some named ids were
    not re-run (unknown, of another status, past the limit)."""
    chunks = [ids[i : i + RERUN_IDS_PER_REQUEST] for i in range(0, len(ids), RERUN_IDS_PER_REQUEST)] or [[]]
    total: dict[str, Any] = {"rerun": 0, "skipped": 0, "matched": 0, "not_rerunnable": []}
    left = scope.get("limit")
    for chunk in chunks:
        body = dict(scope)
        if chunk:
            body["ids"] = chunk
            body["limit"] = min(len(chunk), left) if left is not None else len(chunk)
        if left is not None and left <= 0:
            total["not_rerunnable"] += chunk  # past the limit: never asked for
            continue
        answer = c.api.expect(c.api.send("POST", "/v1/images/rerun", json=body), 202).json()
        for k in ("rerun", "skipped", "matched"):
            total[k] += int(answer.get(k, 0))
        total["not_rerunnable"] += [str(i) for i in answer.get("not_rerunnable", [])]
        if left is not None:
            left -= int(answer.get("matched", 0))
    lines = [f"re-ran {total['rerun']} image(s) of the {total['matched']} in the scope"]
    if not ids and total["matched"] >= int(scope.get("limit") or 1000):
        lines.append(f"the limit ({scope.get('limit') or 1000}) was reached: more may be in the scope")
    if total["skipped"]:
        lines.append(f"{total['skipped']} skipped: their bytes are no longer stored")
    missed = total["not_rerunnable"]
    if missed:
        lines.append(
            f"{len(missed)} of the {len(ids)} ids named were not re-run (unknown, not failed or "
            "unresolved, or past the limit):\n  " + "\n  ".join(missed)
        )
    c.console.result("; ".join(lines), total)
    return EXIT_ITEMS_FAILED if total["skipped"] or missed else EXIT_OK


# -- keys -------------------------------------------------------------------------------


def keys_create(c: Clients, name: str, scopes: str, rate: int | None, expires_in: float | None) -> None:
    body: dict[str, Any] = {"name": name, "scopes": [s.strip() for s in scopes.split(",") if s.strip()]}
    if rate is not None:
        body["rate_per_minute"] = rate
    if expires_in is not None:
        body["expires_in_days"] = expires_in
    key = c.api.expect(c.api.send("POST", "/v1/admin/keys", json=body), 201).json()
    expires = f"; expires {key['expires_at'][:19]}" if key.get("expires_at") else ""
    c.console.result(
        f"created key {key['id']} ({key['name']}; scopes {','.join(key['scopes'])}{expires})\n{key['key']}",
        key,
    )
    c.console.note("Store it now: it is not shown again.")


def keys_list(c: Clients, include_revoked: bool) -> None:
    r = c.api.expect(c.api.send("GET", "/v1/admin/keys", params={"include_revoked": include_revoked}), 200)
    rows = r.json()
    lines = [
        f"{'id':14} {'name':24} {'scopes':28} {'rate/min':>9} {'created':19} {'expires':29} "
        f"{'last used':19} revoked"
    ]
    for k in rows:
        rate = str(k.get("rate_per_minute") or "default")
        lines.append(
            f"{k['id']:14} {k['name'][:24]:24} {','.join(k['scopes'])[:28]:28} {rate:>9} "
            f"{_when(k.get('created_at')):19} {_expires(k):29} "
            f"{_when(k.get('last_used_at')) or 'never':19} {_when(k.get('revoked_at'))}"
        )
    c.console.result("\n".join(lines), rows)


def keys_revoke(c: Clients, key_id: str) -> None:
    r = c.api.expect(c.api.send("DELETE", f"/v1/admin/keys/{key_id}"), 200, 204)
    c.console.result(f"revoked key {key_id}", _json(r) or {"id": key_id, "revoked": True})


def _expires(key: dict[str, Any]) -> str:
    when = _when(key.get("expires_at")) or "never"
    return f"{when} (expired)" if key.get("expired") else when


def _when(value: str | None) -> str:
    return value.replace("T", " ")[:19] if value else ""

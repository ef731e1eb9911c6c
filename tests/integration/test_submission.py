"""Submitting images as a client relies on it, against the real broker and database.

- ``Idempotency-Key``: a retried request gets the same ids (uploads and legacy paths);
  another key, another caller or another position gets other ids; a bad key is 400.
- Read-your-writes: every id in a 202 already has its row, and its result_url is absolute.
- A batch the broker partly refuses answers 503 listing every file with its id and fate
  (uploads and legacy paths); the retry with the same key completes it under the same
  ids. The broker refuses for real: the test lowers the topic's ``max.message.bytes``
  below the size of one file.
- An outage of PostgreSQL: uploads are still accepted, the rows wait in the backlog and
  are written once the database is back. The outage is real too: ingest reaches
  PostgreSQL through a TCP relay that the test cuts and restores.

One ingest app (and its lifespan) runs in-process for the whole module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)
from fastapi import FastAPI
from PIL import Image
from prometheus_client import REGISTRY
from pydantic import SecretStr

from common.auth import KeyCreate, create_key, revoke_key
from ingest.app import create_app
from ingest.pending import PendingRow, PendingRows
from ingest.settings import IngestSettings
from ingest.submission import Submitter
from schemas import topics
from tests.platform import ADMIN_KEY
from tests.tcp_relay import TcpRelay, relay_to, url_through

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

RESULTS = "https://results.example.test/facestream"
KEY = "Idempotency-Key"


def _jpeg() -> bytes:
    """A small JPEG of a colour of its own (so its sha256 is too)."""
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), tuple(os.urandom(3))).save(buf, "JPEG")
    return buf.getvalue()


def _noise_png(side: int = 300) -> bytes:
    """An image that does not compress: ~``3 * side**2`` bytes."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(buf, "PNG")
    return buf.getvalue()


def _files(*contents: bytes) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (f"f{i}.jpg", c)) for i, c in enumerate(contents)]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _unrecorded(reason: str) -> float:
    return _metric("facestream_ingest_pending_rows_unrecorded_total", reason=reason)


# --------------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def relay(database_url: str) -> AsyncIterator[TcpRelay]:
    async with relay_to(database_url) as relay:
        yield relay


def _through(database_url: str, relay: TcpRelay) -> str:
    return url_through(database_url, relay)


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, database_url: str, relay: TcpRelay, faces_dir: Path) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=SecretStr(_through(database_url, relay)),
        admin_api_key=SecretStr(ADMIN_KEY),
        images_root=faces_dir,
        results_base_url=RESULTS + "/",  # the trailing slash is dropped
        pending_write_timeout_s=3,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(settings: IngestSettings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://ingest",
        headers={"X-API-Key": ADMIN_KEY},
        timeout=60,
    ) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def db(app: FastAPI, database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Straight to PostgreSQL, never through the relay. (After app: its lifespan applied the schema.)"""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def _rows(db: asyncpg.Pool, ids: list[str]) -> dict[str, asyncpg.Record]:
    rows = await db.fetch("SELECT * FROM images WHERE id = ANY($1::uuid[])", ids)
    return {str(r["id"]): r for r in rows}


def _ids(r: httpx.Response) -> list[str]:
    assert r.status_code == 202, r.text
    return [item["id"] for item in r.json()["data"]]


# ----------------------------------------------------------------------- idempotency


async def test_the_same_idempotency_key_gives_the_same_ids(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    a, b = _jpeg(), _jpeg()
    key = f"upload-{uuid.uuid4()}"
    first = _ids(await client.post("/v1/images", files=_files(a, b), headers={KEY: key}))
    again = _ids(await client.post("/v1/images", files=_files(a, b), headers={KEY: key}))
    assert again == first
    assert len(set(first)) == 2
    assert all(uuid.UUID(i) for i in first)
    assert len(await _rows(db, first)) == 2  # republished, recorded once

    other_key = _ids(await client.post("/v1/images", files=_files(a, b), headers={KEY: key + "x"}))
    swapped = _ids(await client.post("/v1/images", files=_files(b, a), headers={KEY: key}))
    twice = _ids(await client.post("/v1/images", files=_files(a, a), headers={KEY: key}))
    no_key = [_ids(await client.post("/v1/images", files=_files(a))) for _ in range(2)]
    assert not set(other_key) & set(first)
    assert swapped != first[::-1]  # the position counts, not only the bytes
    assert len(set(twice)) == 2  # the same file twice in one request: two images
    assert no_key[0] != no_key[1]


async def test_the_same_key_from_another_caller_gives_other_ids(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    created = await create_key(db, KeyCreate(name=f"idempotency-test-{uuid.uuid4()}", scopes=["submit"]))
    try:
        photo, key = _jpeg(), f"shared-{uuid.uuid4()}"
        mine = _ids(await client.post("/v1/images", files=_files(photo), headers={KEY: key}))
        theirs = _ids(
            await client.post("/v1/images", files=_files(photo), headers={KEY: key, "X-API-Key": created.key})
        )
        assert mine != theirs
    finally:
        await revoke_key(db, created.id)


async def test_legacy_paths_take_the_idempotency_key_too(client: httpx.AsyncClient) -> None:
    key = f"legacy-{uuid.uuid4()}"
    single = [
        await client.post("/image/post", json={"path": "sample/examples/obama.jpg"}, headers={KEY: key})
        for _ in range(2)
    ]
    assert [r.status_code for r in single] == [200, 200], single[0].text
    assert single[0].json()["id"] == single[1].json()["id"]
    assert single[0].json()["result_url"] == f"{RESULTS}/v1/images/{single[0].json()['id']}"

    body = {"paths": [{"path": "sample/examples/obama.jpg"}, {"path": "sample/examples/biden.jpg"}]}
    batches = [await client.post("/images/post", json=body, headers={KEY: key}) for _ in range(2)]
    assert [r.status_code for r in batches] == [200, 200], batches[0].text
    ids = [[i["id"] for i in r.json()["images"]] for r in batches]
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == 2
    other = await client.post("/images/post", json=body, headers={KEY: key + "-2"})
    assert not {i["id"] for i in other.json()["images"]} & set(ids[0])


@pytest.mark.parametrize(
    "value",
    [b"", b"x" * 256, b"tab\there", b"caf\xc3\xa9", b"bell\x07"],
    ids=["empty", "too-long", "tab", "not-ascii", "control"],
)
async def test_an_invalid_idempotency_key_is_400(client: httpx.AsyncClient, value: bytes) -> None:
    header = {KEY.encode(): value}
    upload = await client.post("/v1/images", files=_files(_jpeg()), headers=header)
    legacy = await client.post("/image/post", json={"path": "sample/examples/obama.jpg"}, headers=header)
    batch = await client.post(
        "/images/post", json={"paths": [{"path": "sample/examples/obama.jpg"}]}, headers=header
    )
    for r in (upload, legacy, batch):
        assert r.status_code == 400, r.text
        assert "Idempotency-Key" in r.json()["detail"]
        assert "printable ASCII" in r.json()["detail"]


async def test_a_255_character_key_is_fine_and_documented(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/images", files=_files(_jpeg()), headers={KEY: "~" * 200 + " " + "a" * 54})
    assert r.status_code == 202, r.text
    schema = (await client.get("/openapi.json")).json()
    for path in ("/v1/images", "/image/post", "/images/post"):
        [header] = [p for p in schema["paths"][path]["post"]["parameters"] if p["name"] == KEY]
        assert header["in"] == "header"
        assert "retry" in header["description"]


# ------------------------------------------------------------------- read your writes


async def test_every_id_in_a_202_is_recorded_before_the_answer(
    client: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    photos = [_jpeg() for _ in range(5)]
    r = await client.post(
        "/v1/images",
        files=_files(*photos),
        data={"camera": "gate-9", "source": "ryw-test", "metadata": '{"site": "hq"}'},
    )
    items = r.json()["data"]
    rows = await _rows(db, _ids(r))  # read at once: nothing had time to happen after the 202
    assert set(rows) == {i["id"] for i in items}
    for item, photo in zip(items, photos, strict=True):
        row = rows[item["id"]]
        assert item["result_url"] == f"{RESULTS}/v1/images/{item['id']}"
        assert item["status"] == "pending"
        assert (row["filename"], row["size_bytes"], row["camera"], row["source"]) == (
            item["filename"],
            len(photo),
            "gate-9",
            "ryw-test",
        )
        assert row["content_type"] == "image/jpeg"
        assert json.loads(row["metadata"]) == {"site": "hq"}
        assert row["run"] == 0
        assert row["trace_id"]
        assert row["kafka_partition"] is not None
        assert row["kafka_offset"] is not None


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"camera": "a\x00b"}, "camera must not contain control characters: U+0000 (NUL)"),
        ({"source": "a\x00b"}, "source must not contain control characters: U+0000 (NUL)"),
        ({"metadata": '{"k": "a\\u0000b"}'}, "metadata value of 'k' must not contain control characters"),
        ({"metadata": '{"k": "\\ud800"}'}, "metadata value of 'k' must be valid Unicode"),
    ],
)
async def test_text_that_cannot_be_stored_is_refused_before_publishing(
    client: httpx.AsyncClient, data: dict[str, str], words: str
) -> None:
    r = await client.post("/v1/images", files=_files(_jpeg()), data=data)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]


#: Control characters the event model refuses: C0 (NUL, tab, newline, escape...), DEL, C1.
CONTROLS = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]


def _multipart(filename: bytes, fields: dict[str, str], photo: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart upload written by hand: httpx would percent-encode control characters."""
    parts = [
        f'--cut\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        for name, value in fields.items()
    ]
    parts.append(
        b'--cut\r\nContent-Disposition: form-data; name="files"; filename="' + filename + b'"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n"
    )
    return b"".join(parts) + b"--cut--\r\n", {"content-type": "multipart/form-data; boundary=cut"}


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("filename", "the name of file #1"),
        ("camera", "camera"),
        ("source", "source"),
        ("metadata key", "metadata key"),
        ("metadata value", "metadata value of 'site'"),
    ],
)
async def test_control_characters_are_refused_at_the_door(
    client: httpx.AsyncClient, db: asyncpg.Pool, char: str, where: str, words: str
) -> None:
    """What the event model (and so the projector) would refuse never gets a 202: before,
    the image was published, its projection dead-lettered, and its row left empty."""
    fields = {"source": "test", "camera": "gate", "metadata": json.dumps({"site": "hq"})}
    filename = b"photo.jpg"
    if where == "filename":
        filename = f"pho{char}to.jpg".encode()
    elif where in ("camera", "source"):
        fields[where] = f"x{char}y"
    else:
        meta = {f"si{char}te": "hq"} if where == "metadata key" else {"site": f"h{char}q"}
        fields["metadata"] = json.dumps(meta)
    photo = _jpeg()
    body, headers = _multipart(filename, fields, photo)
    r = await client.post("/v1/images", content=body, headers=headers)
    if where == "filename" and char == "\r":  # a bare CR breaks the part's header: not multipart
        assert r.status_code == 400, r.text
        assert "multipart" in r.json()["detail"]
    else:
        assert r.status_code == 422, r.text
        assert words in r.json()["detail"]
        assert f"must not contain control characters: U+{ord(char):04X}" in r.json()["detail"]
    sha256 = hashlib.sha256(photo).hexdigest()
    assert await db.fetchval("SELECT count(*) FROM images WHERE sha256 = $1", sha256) == 0


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
async def test_control_characters_in_legacy_paths_are_refused(client: httpx.AsyncClient, char: str) -> None:
    path = f"sample/examples/oba{char}ma.jpg"
    single = await client.post("/image/post", json={"path": path})
    batch = await client.post(
        "/images/post", json={"paths": [{"path": "sample/examples/obama.jpg"}, {"path": path}]}
    )
    for r in (single, batch):
        assert r.status_code == 422, r.text
        assert f"path must not contain control characters: U+{ord(char):04X}" in r.json()["detail"]


async def test_a_legacy_file_whose_own_name_has_a_control_character_is_refused(
    settings: IngestSettings, tmp_path: Path
) -> None:
    """The path is clean; the file it leads to (through a symlink) has a name the event refuses."""
    (tmp_path / "bell\x07.jpg").write_bytes(_jpeg())
    (tmp_path / "clean.jpg").symlink_to(tmp_path / "bell\x07.jpg")
    app = create_app(settings.model_copy(update={"images_root": tmp_path}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ingest", headers={"X-API-Key": ADMIN_KEY}
        ) as client,
    ):
        r = await client.post("/image/post", json={"path": "clean.jpg"})
    assert r.status_code == 422, r.text
    assert (
        "the name of the file at 'clean.jpg' must not contain control characters: U+0007"
        in r.json()["detail"]
    )


# -------------------------------------------------------------- the broker refuses some


def _set_max_message_bytes(admin: AdminClient, value: str, deadline_s: float = 30) -> None:
    resource = ConfigResource(
        "topic",
        topics.SUBMITTED,
        incremental_configs=[
            ConfigEntry("max.message.bytes", value, incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        described = admin.describe_configs([ConfigResource("topic", topics.SUBMITTED)])
        if next(iter(described.values())).result(timeout=10)["max.message.bytes"].value == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"max.message.bytes of {topics.SUBMITTED} never became {value}")


@contextlib.contextmanager
def _small_messages_only(kafka_bootstrap: str) -> Iterator[int]:
    """images.submitted refuses messages over 100 kB inside the block."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    limit = 100_000
    _set_max_message_bytes(admin, str(limit))
    try:
        yield limit
    finally:
        _set_max_message_bytes(admin, topics.BY_NAME[topics.SUBMITTED].config["max.message.bytes"])


async def _until_accepted(
    client: httpx.AsyncClient, url: str, within_s: float = 60, **kwargs: Any
) -> httpx.Response:
    """Repeat a request, as a client honouring Retry-After would, until it is not a 503."""
    deadline = time.monotonic() + within_s
    while True:
        r = await client.post(url, **kwargs)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        await asyncio.sleep(min(1.0, float(r.headers["retry-after"])))


async def _check_fates(db: asyncpg.Pool, listed: list[dict[str, Any]], refused: int) -> None:
    """Every file listed once with its own id; ``refused`` (the big one) was not accepted,
    every accepted one has its row and result_url, no refused one has either."""
    assert len({f["id"] for f in listed}) == len(listed)
    assert listed[refused]["fate"] != "accepted"
    assert "too large" in listed[refused]["fate"].lower()
    # Small files sharing the big one's batch (same partition) are refused with it; not all of them.
    assert any(f["fate"] == "accepted" for f in listed), "no file was accepted"
    rows = await _rows(db, [f["id"] for f in listed])
    for f in listed:
        if f["fate"] == "accepted":
            assert f["result_url"] == f"{RESULTS}/v1/images/{f['id']}"
            assert f["id"] in rows
        else:
            assert f["result_url"] is None
            assert f["id"] not in rows


async def test_a_batch_the_broker_partly_refuses_is_503_listing_every_file(
    client: httpx.AsyncClient, db: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    photos = [_jpeg(), _jpeg(), _noise_png(), _jpeg(), _jpeg()]
    paths = [
        {"path": f"sample/examples/{name}"} for name in ("obama_small.jpg", "obama.jpg", "obama-240p.jpg")
    ]
    key = f"partial-{uuid.uuid4()}"
    with _small_messages_only(kafka_bootstrap) as limit:
        assert len(photos[2]) > limit
        upload = await client.post("/v1/images", files=_files(*photos), headers={KEY: key})
        legacy = await client.post("/images/post", json={"paths": paths}, headers={KEY: key})

    assert upload.status_code == 503, upload.text
    assert int(upload.headers["retry-after"]) >= 1
    body = upload.json()
    assert "not accepted" in body["detail"]
    assert body["count"] == len(photos)
    assert [(f["filename"], f["size_bytes"]) for f in body["data"]] == [
        (f"f{i}.jpg", len(p)) for i, p in enumerate(photos)
    ]
    await _check_fates(db, body["data"], refused=2)

    assert legacy.status_code == 503, legacy.text
    assert int(legacy.headers["retry-after"]) >= 1
    assert "not accepted" in legacy.json()["detail"]
    assert [f["path"] for f in legacy.json()["images"]] == [p["path"] for p in paths]
    await _check_fates(db, legacy.json()["images"], refused=1)

    # The broker takes everything again: the same requests complete the batches, same ids.
    retried = await _until_accepted(client, "/v1/images", files=_files(*photos), headers={KEY: key})
    assert _ids(retried) == [f["id"] for f in body["data"]]
    assert len(await _rows(db, _ids(retried))) == len(photos)
    retried = await _until_accepted(client, "/images/post", json={"paths": paths}, headers={KEY: key})
    assert retried.status_code == 200, retried.text
    assert [i["id"] for i in retried.json()["images"]] == [f["id"] for f in legacy.json()["images"]]


# ---------------------------------------------------------------- PostgreSQL goes away


async def _until(predicate: Any, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not await predicate():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.1)


async def test_uploads_during_an_outage_of_postgres_are_accepted_and_recorded_after_it(
    client: httpx.AsyncClient, app: FastAPI, db: asyncpg.Pool, relay: TcpRelay
) -> None:
    submitter: Submitter = app.state.submitter
    deferred = _unrecorded("database_unavailable")
    await relay.cut()
    try:
        during = [_ids(await client.post("/v1/images", files=_files(_jpeg(), _jpeg()))) for _ in range(3)]
        assert _unrecorded("database_unavailable") - deferred == 6
        assert submitter.pending.backlog >= 6
        assert _metric("facestream_ingest_pending_backlog") >= 6
    finally:
        await relay.restore()
    ids = [i for batch in during for i in batch]

    async def written() -> bool:
        return submitter.pending.backlog == 0 and len(await _rows(db, ids)) == len(ids)

    await _until(written)
    assert _metric("facestream_ingest_pending_backlog") == 0
    after = _ids(await client.post("/v1/images", files=_files(_jpeg())))
    assert len(await _rows(db, after)) == 1


def _row(image_id: str | None = None, filename: str = "x.jpg") -> PendingRow:
    return PendingRow(
        id=image_id or str(uuid.uuid4()),
        filename=filename,
        content_type="image/jpeg",
        size_bytes=1,
        sha256="0" * 64,
        source=None,
        camera=None,
        metadata={},
        submitted_at=datetime.now(UTC),
        trace_id="t",
        kafka_partition=0,
        kafka_offset=0,
    )


async def test_the_backlog_is_bounded_and_drops_the_oldest(
    settings: IngestSettings, db: asyncpg.Pool, relay: TcpRelay
) -> None:
    pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=0, max_size=1)
    try:
        pending = PendingRows(pool, timeout=3, backlog_max=2)
        rows = [_row() for _ in range(3)]
        full = _unrecorded("backlog_full")
        await relay.cut()
        try:
            assert await pending.record(rows) is False
            assert await pending.flush() is False  # still down
        finally:
            await relay.restore()
        assert pending.backlog == 2
        assert _unrecorded("backlog_full") - full == 1
        await _until(pending.flush)
        assert set(await _rows(db, [r.id for r in rows])) == {rows[1].id, rows[2].id}
    finally:
        await pool.close()


async def test_a_row_the_database_refuses_does_not_cost_the_others(
    db: asyncpg.Pool, settings: IngestSettings
) -> None:
    pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=0, max_size=1)
    try:
        pending = PendingRows(pool, timeout=3, backlog_max=10)
        good, bad, also_good = _row(), _row(filename="nul\x00byte"), _row()
        refused = _unrecorded("refused")
        assert await pending.record([good, bad, also_good]) is False
        assert _unrecorded("refused") - refused == 1
        assert pending.backlog == 0  # refused rows are not retried for ever
        assert set(await _rows(db, [good.id, bad.id, also_good.id])) == {good.id, also_good.id}
    finally:
        await pool.close()


async def test_an_erased_image_gets_no_row_again(db: asyncpg.Pool, settings: IngestSettings) -> None:
    pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=0, max_size=1)
    try:
        row = _row()
        await db.execute("INSERT INTO erased_images (id) VALUES ($1)", uuid.UUID(row.id))
        assert await PendingRows(pool, timeout=3, backlog_max=10).record([row]) is True
        assert await _rows(db, [row.id]) == {}
    finally:
        await pool.close()

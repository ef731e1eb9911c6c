"""Fault injection: break the real broker, database and services while images flow.

After each fault every submitted image must reach exactly one final status, every face
be stored exactly once, and nothing be dead-lettered because a dependency was down.
Each test prints its figures: images in flight, faults injected, lost, failed, duplicate
deliveries (the same run's result on ``images.results`` more than once: allowed, the
delivery is at least once), duplicate faces stored (must be 0) and the time to recover.

Duplicates are counted where they can arise, not inside the database's own guarantees:
the results are read back from the topic, and the face rows of each image are compared
with the faces of its stored run's result event. So that "stored once" is checked even
when a fault happened to deliver nothing twice, every check then redelivers each image's
result (as a recognizer that published and died before committing does) and counts again
once the stream has committed past the copies. Run alone with ``make faults``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from schemas import codec, topics
from schemas import events as ev
from stream.settings import StreamSettings
from tests.conftest import KAFKA_PORT, PG_DIR, PG_PORT, ROOT, TEST_RUN_DIR
from tests.e2e.test_lfw import submit
from tests.platform import Platform, messages, topic_end, until, wait_committed

pytestmark = pytest.mark.faults

FINAL = ("processed", "unresolved", "failed")
#: How long each outage lasts: the fault itself, not a wait for anything.
POSTGRES_OUTAGE_S = 30.0
BROKER_OUTAGE_S = 5.0
STREAM_GROUP = StreamSettings().stream_app_id


def _native(kafka_bootstrap: str, database_url: str) -> None:
    if kafka_bootstrap != f"127.0.0.1:{KAFKA_PORT}" or f":{PG_PORT}/" not in database_url:
        pytest.fail("fault tests need the natively started test broker and database (unset the overrides)")


def _script(name: str, action: str) -> None:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "FACESTREAM_RUN_DIR": str(TEST_RUN_DIR),
        "KAFKA_PORT": str(KAFKA_PORT),
        "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1),
        "PG_PORT": str(PG_PORT),
        "PG_DIR": str(PG_DIR),
        "PG_FSYNC": "off",
    }
    subprocess.run(["bash", str(ROOT / "scripts" / name), action], check=True, env=env)


def _photos(faces_dir: Path, n: int) -> list[Path]:
    return sorted((faces_dir / "lfw-dev/known").glob("*/*_0002.jpg"))[:n]


def _kafka() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{KAFKA_PORT}"


@dataclass
class Ledger:
    """What PostgreSQL holds about some images."""

    statuses: dict[str, str]
    runs: dict[str, int]
    face_rows: dict[str, int]  # rows in ``faces``, per image


async def _read_ledger(database_url: str, ids: list[str]) -> Ledger:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT id::text, status, run FROM images WHERE id = ANY($1::uuid[])", ids)
        faces = await conn.fetch(
            "SELECT image_id::text, count(*) AS n FROM faces"
            " WHERE image_id = ANY($1::uuid[]) GROUP BY image_id",
            ids,
        )
    finally:
        await conn.close()
    return Ledger(
        statuses={r["id"]: r["status"] for r in rows},
        runs={r["id"]: r["run"] for r in rows},
        face_rows={r["image_id"]: r["n"] for r in faces},
    )


def _ledger(database_url: str, ids: list[str]) -> Ledger:
    return asyncio.run(_read_ledger(database_url, ids))


def _settle(database_url: str, ids: list[str], timeout: float = 240) -> float:
    """Wait until every image is final; returns how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            statuses = _ledger(database_url, ids).statuses
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            statuses = {}
        if len(statuses) == len(ids) and all(s in FINAL for s in statuses.values()):
            return time.monotonic() - start
        time.sleep(0.5)  # poll interval
    raise AssertionError(f"images not final after {timeout}s")


@dataclass
class Result:
    """A FacesRecognized message: how many faces it gives, and its bytes."""

    faces: int
    value: bytes


Results = dict[tuple[str, int], list[Result]]


def _results(kafka: str, ids: Collection[str]) -> Results:
    """Every result about ``ids`` on images.results, by (image id, run): more than one
    message for a run is a duplicate delivery."""
    found: Results = defaultdict(list)
    for msg in messages(kafka, topics.RESULTS, ids):
        _, result = codec.decode_as(msg.value, ev.FacesRecognized)
        found[(result.image_id, result.run)].append(Result(len(result.faces), msg.value))
    return found


def _redeliver(kafka: str, ledger: Ledger, results: Results) -> int:
    """Publish each image's stored result once more, as a recognizer that published and
    died before committing does; returns how many, once the stream has committed past them."""
    copies = [
        (image_id, results[(image_id, run)][-1].value)
        for image_id, run in ledger.runs.items()
        if (image_id, run) in results
    ]
    if not copies:
        return 0
    producer = Producer({"bootstrap.servers": kafka})
    past: dict[tuple[str, int], int] = {}

    def note(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        where = (msg.topic() or "", msg.partition() or 0)
        past[where] = max(past.get(where, -1), msg.offset() or 0)

    for image_id, value in copies:
        producer.produce(topics.RESULTS, key=image_id, value=value, on_delivery=note)
    assert producer.flush(30) == 0
    wait_committed(kafka, STREAM_GROUP, past)
    return len(copies)


def _stored_twice(ledger: Ledger, results: Results) -> tuple[int, int]:
    """(face rows beyond the faces of each image's stored result, faces of it missing)."""
    extra = missing = 0
    for image_id, status in ledger.statuses.items():
        if status == "failed":
            expected = 0
        else:
            copies = results.get((image_id, ledger.runs[image_id]))
            assert copies, (
                f"{image_id} is {status}, yet no result of its run {ledger.runs[image_id]} was published"
            )
            expected = copies[-1].faces
        rows = ledger.face_rows.get(image_id, 0)
        extra += max(0, rows - expected)
        missing += max(0, expected - rows)
    return extra, missing


def _check(
    database_url: str, ids: list[str], fault: str, recovered_s: float, kafka: str | None = None
) -> None:
    kafka = kafka or _kafka()
    ledger = _ledger(database_url, ids)
    lost = len(ids) - sum(1 for s in ledger.statuses.values() if s in FINAL)
    failed = sum(1 for s in ledger.statuses.values() if s == "failed")
    results = _results(kafka, ids)
    delivered_twice = sum(len(copies) - 1 for copies in results.values())
    stored_twice, missing = _stored_twice(ledger, results)
    if lost == 0:
        injected = _redeliver(kafka, ledger, results)
        ledger = _ledger(database_url, ids)
        results = _results(kafka, ids)
        again = _stored_twice(ledger, results)
        stored_twice, missing = max(stored_twice, again[0]), max(missing, again[1])
    else:
        injected = 0
    dead = len(messages(kafka, topics.DEAD_LETTER, ids))
    print(
        f"\n[{fault}] in flight {len(ids)}, faults 1, lost {lost}, failed {failed}, dead-lettered {dead}, "
        f"duplicate deliveries {delivered_twice} (then {injected} more injected), "
        f"duplicate faces stored {stored_twice}, faces missing {missing}, recovered in {recovered_s:.1f}s"
    )
    assert lost == 0
    assert failed == 0  # a dependency being down is never a reason to fail an image
    assert dead == 0, f"{dead} events about these images were dead-lettered"
    assert stored_twice == 0, f"{stored_twice} faces stored more than once"
    assert missing == 0, f"{missing} faces of the stored results are not stored"


def _results_flowing(kafka: str, before: int) -> None:
    """Wait until the recognizers have published a result since ``before`` (the end of
    images.results when the images were submitted): images are mid-flow."""
    until("a result is published", lambda: topic_end(kafka, topics.RESULTS) > before)


def _outage(platform: Platform, kafka: str, photos: list[Path], script: str, seconds: float) -> list[str]:
    """Submit ``photos``, then stop the service of ``script`` for ``seconds`` mid-flow."""
    before = topic_end(kafka, topics.RESULTS)
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        ids = list(submit(ingest, photos))
    _results_flowing(kafka, before)
    _script(script, "stop")
    try:
        time.sleep(seconds)  # the outage itself
    finally:
        _script(script, "start")
    return ids


def test_postgres_down_for_30_seconds_while_results_flow(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    _native(kafka_bootstrap, database_url)
    ids = _outage(platform, kafka_bootstrap, _photos(faces_dir, 24), "postgres.sh", POSTGRES_OUTAGE_S)
    _check(database_url, ids, "postgres down 30 s", _settle(database_url, ids), kafka_bootstrap)


def test_broker_restart_while_images_flow(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    _native(kafka_bootstrap, database_url)
    ids = _outage(platform, kafka_bootstrap, _photos(faces_dir, 24)[::-1], "kafka.sh", BROKER_OUTAGE_S)
    _check(database_url, ids, "broker restart", _settle(database_url, ids), kafka_bootstrap)


@pytest.mark.parametrize("service", ["recognizer", "stream"])
def test_sigterm_to_a_worker_mid_flow_hands_work_back(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path, service: str
) -> None:
    before = topic_end(kafka_bootstrap, topics.RESULTS)
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        ids = list(submit(ingest, _photos(faces_dir, 12)))
    _results_flowing(kafka_bootstrap, before)
    unfinished = sum(1 for s in _ledger(database_url, ids).statuses.values() if s not in FINAL)
    assert unfinished, "every image was final before the signal: nothing was in flight"
    code = platform.restart(service, signal.SIGTERM)
    assert code in (0, -signal.SIGTERM), f"{service} did not shut down cleanly on SIGTERM (exit {code})"
    print(f"\n[SIGTERM {service}] {unfinished} of {len(ids)} images unfinished at the signal")
    _check(database_url, ids, f"SIGTERM {service}", _settle(database_url, ids), kafka_bootstrap)


BOUNDARY = "facestream-fault-boundary"


def _multipart(field: str, path: Path) -> tuple[bytes, bytes]:
    """A one-file multipart body, cut in two in the middle of the file."""
    data = path.read_bytes()
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body = head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    cut = len(head) + len(data) // 2
    return body[:cut], body[cut:]


@dataclass
class HalfSent:
    """A POST to ``url`` whose body stops halfway until ``resume`` is set."""

    url: str
    first: bytes
    rest: bytes
    sent_half: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    response: httpx.Response | None = None
    error: BaseException | None = None

    def body(self) -> Iterator[bytes]:
        yield self.first
        # Asked for the next chunk: the first is written to the socket.
        self.sent_half.set()
        if not self.resume.wait(120):
            raise TimeoutError("never told to send the rest")
        yield self.rest


def _send_halfway(headers: dict[str, str], requests: list[HalfSent]) -> list[threading.Thread]:
    def send(request: HalfSent) -> None:
        try:
            request.response = httpx.post(
                request.url,
                content=request.body(),
                headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                timeout=120,
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            request.error = exc

    threads = [threading.Thread(target=send, args=(r,), daemon=True) for r in requests]
    for thread in threads:
        thread.start()
    return threads


def _refuses_connections(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) != 0


def _sigterm_mid_body(platform: Platform, service: str, requests: list[HalfSent]) -> int:
    """Send ``requests`` halfway, SIGTERM ``service`` while each is mid-body, let them
    finish once the service has stopped accepting; returns its exit code (restarted)."""
    threads = _send_halfway(platform.headers, requests)
    try:
        for r in requests:
            until("every request has sent half its body", r.sent_half.is_set, timeout=60)
        proc = platform.procs[service]
        proc.send_signal(signal.SIGTERM)
        base = platform.ingest_url if service == "ingest" else platform.api_url
        until(f"{service} stops accepting connections", lambda: _refuses_connections(base), timeout=30)
        assert proc.poll() is None, f"{service} exited with requests mid-body (exit {proc.returncode})"
    finally:
        for r in requests:
            r.resume.set()
        for thread in threads:
            thread.join(150)
    code = platform.procs[service].wait(60)
    platform.stop(service)  # already gone: only the bookkeeping
    args, ready_url = platform.started_with[service]
    platform.start(service, *args, ready_url=ready_url)
    return code


def test_sigterm_to_ingest_with_uploads_mid_body(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    """Uploads whose bodies are half sent when ingest gets SIGTERM: each must be answered
    202 (uvicorn finishes in-flight requests), and each image must then be processed."""
    photos = _photos(faces_dir, 6)
    requests = [HalfSent(f"{platform.ingest_url}/v1/images", *_multipart("files", p)) for p in photos]
    code = _sigterm_mid_body(platform, "ingest", requests)
    outcomes = [r.error or (r.response.status_code if r.response else None) for r in requests]
    print(f"\n[SIGTERM ingest] {len(requests)} uploads mid-body at the signal: {outcomes}")
    assert code in (0, -signal.SIGTERM), f"ingest did not shut down cleanly on SIGTERM (exit {code})"
    assert all(r.response is not None and r.response.status_code == 202 for r in requests), outcomes
    ids = [r.response.json()["data"][0]["id"] for r in requests if r.response is not None]
    _check(database_url, ids, "SIGTERM ingest", _settle(database_url, ids), kafka_bootstrap)


def test_sigterm_to_the_api_with_enrollments_mid_body(platform: Platform, faces_dir: Path) -> None:
    """Enrollment photos half uploaded when the api gets SIGTERM: each must be enrolled."""
    photos = _photos(faces_dir, 3)
    with httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api:
        people = []
        for photo in photos:
            r = api.post("/v1/people", json={"name": f"SIGTERM {photo.parent.name}"})
            assert r.status_code == 201, r.text
            people.append(r.json()["id"])
    requests = [
        HalfSent(f"{platform.api_url}/v1/people/{pid}/faces", *_multipart("file", photo))
        for pid, photo in zip(people, photos, strict=True)
    ]
    code = _sigterm_mid_body(platform, "api", requests)
    outcomes = [r.error or (r.response.status_code if r.response else None) for r in requests]
    print(f"\n[SIGTERM api] {len(requests)} enrollments mid-body at the signal: {outcomes}")
    assert code in (0, -signal.SIGTERM), f"api did not shut down cleanly on SIGTERM (exit {code})"
    assert all(r.response is not None and r.response.status_code == 201 for r in requests), outcomes
    with httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api:
        for pid in people:  # later tests expect these photos' people unknown
            assert api.delete(f"/v1/people/{pid}").status_code == 200


def test_stream_worker_restarted_during_a_rebalance(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    """A second stream worker joins (the group rebalances) and, mid-rebalance, the first is
    restarted: partitions move twice while dispatch and projection are under way."""
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        ids = list(submit(ingest, _photos(faces_dir, 24)))
        port = int(platform.stream_url.rsplit(":", 1)[1]) + 1
        platform.start("stream-b", ready_url=None, module="stream", env={"STREAM_WEB_PORT": str(port)})
        try:
            until("stream-b joins the stream's group", lambda: _members(kafka_bootstrap, STREAM_GROUP) >= 2)
            ids += submit(ingest, _photos(faces_dir, 36)[24:])
            code = platform.restart("stream", signal.SIGTERM)
            assert code in (0, -signal.SIGTERM), f"stream did not shut down cleanly (exit {code})"
            ids += submit(ingest, _photos(faces_dir, 48)[36:])
            recovered = _settle(database_url, ids)
        finally:
            platform.stop("stream-b")
    _check(database_url, ids, "stream restarted mid-rebalance", recovered, kafka_bootstrap)


def _members(kafka: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": kafka})
    [described] = admin.describe_consumer_groups([group]).values()
    return len(described.result(timeout=10).members)

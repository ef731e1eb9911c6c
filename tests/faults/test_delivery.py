"""Nothing the stream worker is told to do is committed before it is done.

Faults are real: errors raised by PostgreSQL itself (triggers that refuse the first
writes with a deadlock, a read-only error and an internal error), PostgreSQL stopped,
and the stream worker stopped with SIGTERM or SIGKILL mid-event. After each, every image
must reach a final status, none failed because of the fault, no face stored twice.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from common.kafka import watermarks
from schemas import codec, topics
from schemas import events as ev
from stream import reconciler
from tests.e2e.test_lfw import submit
from tests.faults.test_faults import FINAL, _check, _native, _photos, _script, _settle
from tests.platform import Platform

pytestmark = pytest.mark.faults

#: (table the handler writes, SQLSTATE raised): a deadlock and a read-only standby are
#: transient refusals; XX000 (internal_error) is an error the stream has no name for.
FAULTS = {
    "image_blobs": "40P01",  # on_submitted
    "faces": "25006",  # on_result
    "retries": "XX000",  # on_failure
    "people": "40P01",  # on_gallery
}
PER_TABLE = 3


def _until(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


def _sql(database_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def refusing_database(database_url: str) -> Iterator[None]:
    """Triggers that make PostgreSQL refuse the first PER_TABLE writes of each table the
    stream handlers write, each with its SQLSTATE (a sequence counts: it is not rolled back)."""
    statements = []
    for table, state in FAULTS.items():
        statements += [
            f"CREATE SEQUENCE IF NOT EXISTS fault_{table}",
            # the services log in as their own roles (tests/platform.py): let them count
            f"GRANT USAGE ON SEQUENCE fault_{table} TO PUBLIC",
            f"""CREATE OR REPLACE FUNCTION fault_{table}() RETURNS trigger AS $$
                BEGIN
                  IF nextval('fault_{table}') <= {PER_TABLE} THEN
                    RAISE EXCEPTION 'injected fault on {table}' USING ERRCODE = '{state}';
                  END IF;
                  RETURN NEW;
                END $$ LANGUAGE plpgsql""",
            f"CREATE TRIGGER fault_{table} BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION fault_{table}()",
        ]
    for statement in statements:
        _sql(database_url, statement)
    try:
        yield
    finally:
        for table in FAULTS:
            _sql(database_url, f"DROP TRIGGER IF EXISTS fault_{table} ON {table}")
            _sql(database_url, f"DROP FUNCTION IF EXISTS fault_{table}()")
            _sql(database_url, f"DROP SEQUENCE IF EXISTS fault_{table}")


def _retry_request(database_url: str, image_id: str, run: int, not_before: datetime) -> bytes:
    """A retry of run ``run`` of a stored image, as the stream hands retries on."""
    row = _sql(
        database_url,
        "SELECT i.*, b.content FROM images i JOIN image_blobs b ON b.image_id = i.id WHERE i.id = $1",
        image_id,
    )[0]
    image = reconciler.resubmission(row).model_copy(update={"run": run})
    request = ev.RecognitionRequested(image=image, attempt=2, not_before=not_before, last_error="test")
    return codec.encode_data(request, source="test")


def _publish(kafka: str, topic: str, key: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0


def _results_end(kafka: str) -> int:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": "fault-test-offsets"})
    try:
        parts = consumer.list_topics(topics.RESULTS, timeout=10).topics[topics.RESULTS].partitions
        return sum(watermarks(consumer, TopicPartition(topics.RESULTS, p))[1] for p in parts)
    finally:
        consumer.close()


def _restart_stream(platform: Platform, sig: int) -> None:
    platform.stop("stream", sig)
    args, ready_url = platform.started_with["stream"]
    platform.start("stream", *args, ready_url=ready_url)


def test_errors_raised_inside_every_handler_lose_nothing(
    platform: Platform, database_url: str, kafka_bootstrap: str, faces_dir: Path, refusing_database: None
) -> None:
    """Each handler meets PER_TABLE refusals from PostgreSQL; each retries in place."""
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        ids = list(submit(ingest, _photos(faces_dir, 8)))
    settled = _settle(database_url, ids)
    person = ev.PersonEnrolled(
        person_id=str(uuid.uuid4()), name="Fault Injection", enrolled_at=datetime.now(UTC)
    )
    _publish(
        kafka_bootstrap,
        topics.GALLERY,
        topics.person_key(person.person_id),
        codec.encode_data(person, source="test"),
    )
    request = codec.decode_as(
        _retry_request(database_url, ids[0], 1, datetime.now(UTC)), ev.RecognitionRequested
    )[1]
    failure = ev.RecognitionFailed(
        image_id=ids[0],
        run=1,
        attempt=1,
        reason=ev.FailureReason.INTERNAL_ERROR,
        detail="injected",
        retryable=True,
        request=request,
    )
    _publish(kafka_bootstrap, topics.FAILURES, ids[0], codec.encode_data(failure, source="test"))

    def retried() -> bool:
        rows = _sql(database_url, "SELECT run, status FROM images WHERE id = $1", ids[0])
        return rows[0]["run"] == 1 and rows[0]["status"] in FINAL

    _until("the retried run is recognized", retried)
    _until(
        "the person is stored",
        lambda: bool(_sql(database_url, "SELECT 1 FROM people WHERE id = $1", person.person_id)),
    )
    for table in FAULTS:
        used = _sql(database_url, f"SELECT last_value FROM fault_{table}")[0]["last_value"]
        assert used > PER_TABLE, f"the {table} writes never met their injected faults"
    _check(database_url, ids, "errors raised in every handler", settled)


def test_sigterm_to_the_stream_worker_during_a_database_outage_loses_nothing(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    """The worker is stopped while its agents wait for PostgreSQL mid-event."""
    _native(kafka_bootstrap, database_url)
    photos = _photos(faces_dir, 16)
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        ids = list(submit(ingest, photos[:1]))  # the key is now verified (and cached)
        before = _results_end(kafka_bootstrap)
        _script("postgres.sh", "stop")
        try:
            ids += submit(ingest, photos[1:])
            _until(
                "the recognizers published every result", lambda: _results_end(kafka_bootstrap) >= before + 15
            )
            platform.stop("stream", signal.SIGTERM)
        finally:
            _script("postgres.sh", "start")
    args, ready_url = platform.started_with["stream"]
    platform.start("stream", *args, ready_url=ready_url)
    _check(database_url, ids, "SIGTERM stream during a database outage", _settle(database_url, ids))


def test_sigkill_to_the_stream_worker_mid_flow_loses_nothing(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        before = _results_end(kafka_bootstrap)
        ids = list(submit(ingest, _photos(faces_dir, 24)))
        _until("some results are out", lambda: _results_end(kafka_bootstrap) >= before + 4)
    _restart_stream(platform, signal.SIGKILL)
    _check(database_url, ids, "SIGKILL stream mid-flow", _settle(database_url, ids))


def test_sigterm_during_a_retry_wait_loses_no_retry(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    """A retry due in a few seconds (as an older stream worker hands it on, on
    images.retry) survives the worker being stopped while it waits."""
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        image_id = next(iter(submit(ingest, _photos(faces_dir, 1))))
    _settle(database_url, [image_id])
    due = datetime.now(UTC) + timedelta(seconds=6)
    _publish(kafka_bootstrap, topics.RETRY, image_id, _retry_request(database_url, image_id, 1, due))
    _until(
        "the retry is waiting",
        lambda: bool(_sql(database_url, "SELECT 1 FROM retries WHERE image_id = $1", image_id)),
    )
    _restart_stream(platform, signal.SIGTERM)

    def retried() -> bool:
        rows = _sql(database_url, "SELECT run, status FROM images WHERE id = $1", image_id)
        return rows[0]["run"] == 1 and rows[0]["status"] in FINAL

    _until("the retried run is final", retried)


def test_the_reconciler_redispatches_an_image_whose_event_was_lost(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    """An image left pending with the recognizers past it (its event lost, as a consumer
    that committed without finishing would leave it) is sent again, counted, and ends final."""
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        done = next(iter(submit(ingest, _photos(faces_dir, 1))))
    _settle(database_url, [done])
    # A copy of that image whose submission "was lost": pending, its bytes stored, and its
    # offset one below the finished image's (the recognizers committed past both).
    lost = str(uuid.uuid4())
    _sql(
        database_url,
        """INSERT INTO images (id, run, status, filename, content_type, size_bytes, sha256, source, camera,
                              metadata, submitted_at, trace_id, kafka_partition, kafka_offset, updated_at)
           SELECT $1, 0, 'pending', filename, content_type, size_bytes, sha256, source, camera, metadata,
                  now(), trace_id, kafka_partition, kafka_offset - 1, now() - interval '1 hour'
           FROM images WHERE id = $2""",
        lost,
        done,
    )
    _sql(
        database_url,
        "INSERT INTO image_blobs (image_id, content) SELECT $1, content FROM image_blobs WHERE image_id = $2",
        lost,
        done,
    )
    platform.stop("stream")
    args, ready_url = platform.started_with["stream"]
    fast = {"RECONCILE_AFTER_S": "5", "RECONCILE_INTERVAL_S": "1"}
    platform.start("stream", *args, ready_url=ready_url, env=fast)
    try:
        recovered = _settle(database_url, [lost], timeout=120)
        metrics = httpx.get(f"{platform.stream_url}/metrics", timeout=10).text
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith("facestream_reconciler_redispatched_total ")
        ]
        assert counted, "facestream_reconciler_redispatched_total is not exported"
        assert float(counted[0].split()[1]) >= 1
        redispatches = _sql(database_url, "SELECT redispatches FROM images WHERE id = $1", lost)[0][
            "redispatches"
        ]
        assert redispatches == 1
        print(f"\n[reconciler] a lost image re-dispatched and final after {recovered:.1f}s")
    finally:
        platform.stop("stream")
        platform.start("stream", *args, ready_url=ready_url)

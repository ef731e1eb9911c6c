"""Fault injection: break the real broker, database and services while images flow.

After each fault every submitted image must reach exactly one final status, every face
be stored exactly once, and nothing be dead-lettered because a dependency was down.
Each test prints its figures: images in flight, faults injected, lost, duplicated, and
the time to recover. Run alone with ``make faults``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import KAFKA_PORT, PG_DIR, PG_PORT, ROOT, TEST_RUN_DIR
from tests.e2e.test_lfw import submit
from tests.platform import Platform

pytestmark = pytest.mark.faults

FINAL = ("processed", "unresolved", "failed")


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


async def _ledger(database_url: str, ids: list[str]) -> tuple[dict[str, str], int, int]:
    """(status per image, face rows, sum of face_count) for ``ids``."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id::text, status, face_count FROM images WHERE id = ANY($1::uuid[])", ids
        )
        faces = await conn.fetchval("SELECT count(*) FROM faces WHERE image_id = ANY($1::uuid[])", ids)
    finally:
        await conn.close()
    return {r["id"]: r["status"] for r in rows}, faces, sum(r["face_count"] or 0 for r in rows)


def _settle(database_url: str, ids: list[str], timeout: float = 240) -> float:
    """Wait until every image is final; returns how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            statuses, _, _ = asyncio.run(_ledger(database_url, ids))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            statuses = {}
        if len(statuses) == len(ids) and all(s in FINAL for s in statuses.values()):
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"images not final after {timeout}s")


def _check(database_url: str, ids: list[str], fault: str, recovered_s: float) -> None:
    statuses, face_rows, face_count = asyncio.run(_ledger(database_url, ids))
    lost = len(ids) - sum(1 for s in statuses.values() if s in FINAL)
    failed = sum(1 for s in statuses.values() if s == "failed")
    duplicates = face_rows - face_count
    print(
        f"\n[{fault}] in flight {len(ids)}, faults 1, lost {lost}, failed {failed}, "
        f"duplicate faces {duplicates}, recovered in {recovered_s:.1f}s"
    )
    assert lost == 0
    assert failed == 0  # a dependency being down is never a reason to fail an image
    assert duplicates == 0


def _outage(platform: Platform, photos: list[Path], script: str, seconds: float) -> list[str]:
    """Submit ``photos``, then stop the service of ``script`` for ``seconds`` mid-flow."""
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        ids = list(submit(ingest, photos))
    time.sleep(1)
    _script(script, "stop")
    try:
        time.sleep(seconds)
    finally:
        _script(script, "start")
    return ids


def test_postgres_down_for_30_seconds_while_results_flow(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    _native(kafka_bootstrap, database_url)
    ids = _outage(platform, _photos(faces_dir, 24), "postgres.sh", seconds=30)
    _check(database_url, ids, "postgres down 30 s", _settle(database_url, ids))


def test_broker_restart_while_images_flow(
    platform: Platform, kafka_bootstrap: str, database_url: str, faces_dir: Path
) -> None:
    _native(kafka_bootstrap, database_url)
    ids = _outage(platform, _photos(faces_dir, 24)[::-1], "kafka.sh", seconds=5)
    _check(database_url, ids, "broker restart", _settle(database_url, ids))


@pytest.mark.parametrize("service", ["recognizer", "stream", "ingest", "api"])
def test_sigterm_to_each_service_hands_work_back(
    platform: Platform, database_url: str, faces_dir: Path, service: str
) -> None:
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        ids = list(submit(ingest, _photos(faces_dir, 12)))
    code = platform.restart(service, signal.SIGTERM)
    # uvicorn re-raises the signal once it has shut down gracefully (exit -15); -9 would
    # mean it had to be killed after the grace period.
    assert code in (0, -signal.SIGTERM), f"{service} did not shut down cleanly on SIGTERM (exit {code})"
    _check(database_url, ids, f"SIGTERM {service}", _settle(database_url, ids))


def test_stream_worker_restarted_during_a_rebalance(
    platform: Platform, database_url: str, faces_dir: Path
) -> None:
    """A second stream worker joins (the group rebalances) and, mid-rebalance, the first is
    restarted: partitions move twice while dispatch and projection are under way."""
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        ids = list(submit(ingest, _photos(faces_dir, 24)))
        port = int(platform.stream_url.rsplit(":", 1)[1]) + 1
        platform.start("stream-b", ready_url=None, module="stream", env={"STREAM_WEB_PORT": str(port)})
        try:
            time.sleep(2)  # stream-b has joined: the rebalance is under way
            ids += submit(ingest, _photos(faces_dir, 36)[24:])
            code = platform.restart("stream", signal.SIGTERM)
            assert code in (0, -signal.SIGTERM), f"stream did not shut down cleanly (exit {code})"
            ids += submit(ingest, _photos(faces_dir, 48)[36:])
            recovered = _settle(database_url, ids)
        finally:
            platform.stop("stream-b")
    _check(database_url, ids, "stream restarted mid-rebalance", recovered)

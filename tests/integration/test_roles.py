"""Per-service PostgreSQL roles (common/migrations/0001_roles.sql) and the schema check.

The test platform runs each service as a login user of its own service's group role
(tests/platform.py), so every platform test exercises the grants; these tests show
that it does, and that a role holds no more than its service needs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from common.db import MIGRATE_COMMAND, SchemaBehind, create_pool, require_schema, shipped_migrations
from common.migrate import credentials
from tests.e2e.test_lfw import enroll, submit, wait_final
from tests.platform import ADMIN_KEY, ROLE_USERS, Platform, role_urls, wait_gallery_applied
from tests.tcp_relay import TcpRelay, relay_to, url_through

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def _as(url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def run() -> T:
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def _refused(url: str, statement: str, *args: Any) -> bool:
    """Whether ``statement`` is refused for lack of privilege (it is rolled back either way)."""

    async def attempt(conn: asyncpg.Connection) -> bool:
        try:
            async with conn.transaction():
                await conn.execute(statement, *args)
                raise _RolledBack
        except asyncpg.InsufficientPrivilegeError:
            return True
        except _RolledBack:
            return False

    return _as(url, attempt)


class _RolledBack(Exception):
    pass


def test_ingest_cannot_write_api_keys_nor_read_results(database_url: str) -> None:
    urls = role_urls(database_url)
    ingest, api, stream = urls["ingest"], urls["api"], urls["stream"]
    insert_key = "INSERT INTO api_keys (id, name, scopes, key_sha256) VALUES ($1, 'x', '{admin}', $1)"
    key_id = uuid.uuid4().hex[:12]
    assert _refused(ingest, insert_key, key_id)
    assert _refused(ingest, "UPDATE api_keys SET revoked_at = now()")
    assert _refused(ingest, "DELETE FROM api_keys")
    assert not _refused(ingest, "SELECT count(*) FROM api_keys")  # the door verifies keys
    assert _refused(ingest, "SELECT status FROM images")  # it writes pending rows only (reads ids)
    assert _refused(ingest, "UPDATE images SET status = 'failed'")
    assert _refused(ingest, "SELECT count(*) FROM faces")
    # the stream never needs keys; the api manages them
    assert _refused(stream, "SELECT count(*) FROM api_keys")
    assert not _refused(api, insert_key, key_id)
    # nobody but the owner changes the schema
    for url in urls.values():
        assert _refused(url, "ALTER TABLE images ADD COLUMN sneaky text")
        assert _refused(url, "DROP TABLE retries")


def test_each_service_works_under_its_own_role(
    platform: Platform, database_url: str, faces_dir: Path
) -> None:
    """A real enrollment, submission -> result and erasure, with every service logged in as
    its own role's user (which the database confirms)."""
    owner, _ = credentials(database_url)
    for service, user in ROLE_USERS.items():
        url = platform.service_env[service]["DATABASE_URL"]
        assert credentials(url)[0] == user != owner
    logs = {name: platform.log_dir / f"{name}.log" for name in ROLE_USERS}
    log_start = {name: path.stat().st_size if path.exists() else 0 for name, path in logs.items()}
    person_dir = sorted(p for p in (faces_dir / "lfw-dev/known").iterdir() if len(list(p.iterdir())) >= 2)[0]
    photos = sorted(person_dir.iterdir())
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        person_id = enroll(api, f"{person_dir.name} {uuid.uuid4().hex[:6]}", photos[0])
        try:
            wait_gallery_applied(platform)
            [image_id] = submit(ingest, [photos[1]])
            [result] = wait_final(api, [image_id], timeout=180).values()
            assert result["status"] == "processed", result
            assert result["faces"][0]["person_id"] == person_id
            # keys: created by the api (its role writes api_keys), verified by ingest (reads them)
            r = api.post("/v1/admin/keys", json={"name": "roles-test", "scopes": ["submit", "query"]})
            assert r.status_code == 201, r.text
            key = r.json()["key"]
            r = ingest.post(
                "/v1/images",
                headers={"X-API-Key": key},
                files={"files": (photos[1].name, photos[1].read_bytes())},
            )
            assert r.status_code == 202, r.text
            second = r.json()["data"][0]["id"]
            wait_final(api, [second], timeout=180)
        finally:  # left enrolled, the person would make later tests' photos of them ambiguous
            erased = api.delete(f"/v1/people/{person_id}")
        # erasure: a person (api) and an image (api), then the projector's own erasure work
        assert erased.status_code == 200, erased.text
        r = api.delete(f"/v1/images/{image_id}")
        assert r.status_code == 200, r.text
        assert api.get(f"/v1/images/{image_id}").status_code == 404
        assert api.get(f"/v1/images/{second}").json()["faces"][0]["person_id"] is None

    async def connected_users(conn: asyncpg.Connection) -> set[str]:
        rows = await conn.fetch(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()"
        )
        return {r["usename"] for r in rows}

    assert set(ROLE_USERS.values()) <= _as(database_url, connected_users)
    for name, path in logs.items():  # what this test made each service write
        with path.open("rb") as f:
            f.seek(log_start[name])
            written = f.read().decode(errors="replace")
        assert "permission denied" not in written, f"{name} was refused something: see {path}"


def test_a_service_refuses_to_start_while_the_schema_is_behind(
    database_url: str, kafka_bootstrap: str
) -> None:
    """No DDL at start-up: ingest, given a database without the migrations (an empty schema
    first on its search path), exits naming the command that applies them."""
    schema = f"behind_{uuid.uuid4().hex[:8]}"

    async def make(conn: asyncpg.Connection) -> None:
        await conn.execute(f"CREATE SCHEMA {schema}")

    async def drop(conn: asyncpg.Connection) -> None:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")

    _as(database_url, make)
    try:
        behind = f"{database_url}{'&' if '?' in database_url else '?'}search_path={schema}"
        with pytest.raises(SchemaBehind, match="no migration was ever applied"):
            asyncio.run(create_pool(behind))
        done = subprocess.run(
            [sys.executable, "-m", "ingest"],
            cwd=ROOT,
            env={
                **os.environ,
                "DATABASE_URL": behind,
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "ADMIN_API_KEY": ADMIN_KEY,
                "INGEST_PORT": "0",
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode != 0
        assert MIGRATE_COMMAND in done.stdout + done.stderr
    finally:
        _as(database_url, drop)


def test_the_check_names_a_migration_that_is_not_applied(database_url: str) -> None:
    async def check(conn: asyncpg.Connection) -> None:
        await require_schema(conn)  # the session's database is current
        with pytest.raises(SchemaBehind, match="9999_from_the_future"):
            await require_schema(conn, [*shipped_migrations(), "9999_from_the_future"])

    _as(database_url, check)


async def test_migrate_waits_for_a_database_that_is_still_starting(database_url: str) -> None:
    """Compose under podman and Kubernetes start the database and `migrate` at once: it
    waits (MIGRATE_WAIT_S) instead of failing on the first refused connection."""
    async with relay_to(database_url) as relay:
        await relay.cut()  # the port refuses, as a database that is not listening yet
        await _migrate_once_the_database_listens(relay, url_through(database_url, relay))


async def _migrate_once_the_database_listens(relay: TcpRelay, url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "MIGRATE_WAIT_S": "60"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "common.migrate", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    first = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert b"waiting up to 60 s for the database" in first, first
    await relay.restore()  # the database comes up
    rest = await asyncio.wait_for(proc.stderr.read(), 60)
    assert await proc.wait() == 0, rest.decode()
    assert b"nothing to apply" in rest


def test_migrate_gives_up_on_a_database_that_never_answers(tmp_path: Path) -> None:
    """After MIGRATE_WAIT_S it fails, naming the connection error (exit status not 0)."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": f"postgresql://u:p@127.0.0.1:{port}/db", "MIGRATE_WAIT_S": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "common.migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Connection refused" in done.stderr or "connection failed" in done.stderr

"""Versioned migrations (common/migrations, common/migrate.py) and the start-up check
(common/db.py), without a database."""

from __future__ import annotations

import base64
import re
import shutil
import socket
from pathlib import Path

import psycopg
import pytest
from yoyo import read_migrations
from yoyo.migrations import topological_sort

from common.db import MIGRATE_COMMAND, MIGRATIONS_DIR, SchemaBehind, missing_migrations, shipped_migrations
from common.migrate import (
    SERVICE_ROLES,
    MigrateSettings,
    credentials,
    scram_sha256_verifier,
    wait_for_database,
    with_credentials,
    yoyo_uri,
)

ROOT = Path(__file__).resolve().parents[2]


def _sql() -> str:
    return "\n".join(p.read_text() for p in sorted(MIGRATIONS_DIR.glob("*.sql")))


def test_the_services_ship_the_migrations_yoyo_applies_in_order() -> None:
    shipped = shipped_migrations()
    assert shipped[:2] == ["0001_initial", "0001_roles"]
    ordered = [m.id for m in topological_sort(read_migrations(str(MIGRATIONS_DIR)))]
    assert sorted(ordered) == shipped
    assert ordered.index("0001_initial") < ordered.index("0001_roles")


def test_a_later_file_is_picked_up_after_what_it_depends_on(tmp_path: Path) -> None:
    for p in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(p, tmp_path)
    (tmp_path / "9999_later_extra.sql").write_text("-- depends: 0001_roles\nSELECT 1;\n")
    (tmp_path / "9999_later_extra.rollback.sql").write_text("SELECT 1;\n")
    assert shipped_migrations(tmp_path)[-1] == "9999_later_extra"
    assert len(shipped_migrations(tmp_path)) == len(shipped_migrations()) + 1  # a rollback is no migration
    ordered = [m.id for m in topological_sort(read_migrations(str(tmp_path)))]
    assert ordered[-1] == "9999_later_extra"


def test_missing_migrations_are_the_shipped_ones_not_applied() -> None:
    shipped = ["0001_initial", "0001_roles", "0002_x"]
    assert missing_migrations(shipped, []) == shipped
    assert missing_migrations(shipped, ["0001_roles", "0001_initial"]) == ["0002_x"]
    # a newer release's migration, applied during a rolling upgrade, is no problem
    assert missing_migrations(shipped, [*shipped, "0003_newer"]) == []


def test_schema_behind_names_what_is_missing_and_the_command() -> None:
    message = str(SchemaBehind(["0002_x"]))
    assert "0002_x" in message
    assert MIGRATE_COMMAND in message


def test_no_service_runs_ddl_or_reads_a_schema_file() -> None:
    code = "\n".join(
        p.read_text() for d in ("ingest", "api", "stream", "common") for p in (ROOT / d).rglob("*.py")
    )
    assert "schema.sql" not in code
    assert not re.search(r"\b(CREATE|ALTER|DROP) (TABLE|INDEX)\b", code)
    assert not (ROOT / "common/schema.sql").exists()


def test_every_table_is_granted_to_the_roles_that_use_it() -> None:
    """Least privilege is granted table by table, in the migration that creates the table
    (no default privileges): a table no service role may touch is a forgotten grant."""
    sql = _sql()
    tables = set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql))
    granted: set[str] = set()
    for target, roles in re.findall(r"GRANT [A-Z, ]+ ON\s+([\w,\s]+?)\s+TO\s+([\w, ]+);", sql):
        assert set(r.strip() for r in roles.split(",")) <= set(SERVICE_ROLES.values())
        granted |= {t.strip() for t in target.split(",")}
    assert tables <= granted, f"no role is granted {sorted(tables - granted)}"


def test_ingest_may_not_write_api_keys() -> None:
    grants = re.findall(r"GRANT ([A-Z, ]+) ON\s+([\w,\s]+?)\s+TO\s+([\w, ]+);", _sql())
    for privileges, target, roles in grants:
        if "api_keys" in target and "facestream_ingest" in roles:
            assert privileges.strip() == "SELECT"


def test_yoyo_gets_the_psycopg_3_driver() -> None:
    assert (
        yoyo_uri("postgresql://u:p@h:5/d?sslmode=verify-full")
        == "postgresql+psycopg://u:p@h:5/d?sslmode=verify-full"
    )
    assert yoyo_uri("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    with pytest.raises(ValueError, match="postgresql://"):
        yoyo_uri("mysql://u@h/d")


def test_a_service_url_is_the_owner_url_with_other_credentials() -> None:
    owner = "postgresql://facestream:facestream@127.0.0.1:5432/facestream?sslmode=require"
    url = with_credentials(owner, "ingest", "p@ss:w/rd")
    assert url == "postgresql://ingest:p%40ss%3Aw%2Frd@127.0.0.1:5432/facestream?sslmode=require"
    assert credentials(url) == ("ingest", "p@ss:w/rd")
    assert credentials("postgresql://only@h/d") == ("only", None)


def test_scram_verifier_has_postgres_format_and_a_fresh_salt_changes_it() -> None:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_sha256_verifier("pencil", salt)
    assert re.fullmatch(
        r"SCRAM-SHA-256\$4096:W22ZaJ0SNY7soEsUEjb6gQ==\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}", verifier
    )
    assert scram_sha256_verifier("pencil", salt) == verifier
    assert scram_sha256_verifier("pencil", b"other-salt-16byt") != verifier
    assert "pencil" not in verifier


def test_login_users_come_from_each_services_own_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_DATABASE_URL", "postgresql://ing:x@h/d")
    monkeypatch.setenv("STREAM_DATABASE_URL", "postgresql://str:y@h/d")
    monkeypatch.delenv("API_DATABASE_URL", raising=False)
    assert MigrateSettings().service_urls() == {
        "ingest": "postgresql://ing:x@h/d",
        "stream": "postgresql://str:y@h/d",
    }


async def test_the_stream_waits_not_ready_while_the_schema_is_behind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream worker does not exit: it waits, unready, as during a database outage, and
    carries on once the migrations are applied."""
    from contextlib import asynccontextmanager
    from typing import Any

    import stream.database as database

    opened: list[str] = []

    class Pool:
        @asynccontextmanager
        async def acquire(self, **kwargs: Any) -> Any:
            yield "connection"

        async def close(self) -> None:
            pass

    async def create_pool(dsn: str, **kwargs: Any) -> Pool:
        opened.append(dsn)
        if len(opened) < 3:
            raise SchemaBehind(["0001_roles"])
        return Pool()

    monkeypatch.setattr(database, "create_pool", create_pool)
    db = database.Database("postgresql://x", max_delay=0.05)
    seen: list[bool] = []

    async def work(conn: Any) -> str:
        seen.append(db.available)
        return str(conn)

    assert await db.run(work) == "connection"
    assert len(opened) == 3
    assert db.available
    assert MIGRATE_COMMAND in caplog.text


def test_the_image_ships_the_migrations() -> None:
    """The migration Job and compose service run the services' image: it must carry them."""
    copies = [
        line.split()[1:]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    ]
    shipped = {Path(src) for src, *_ in copies}
    assert any(MIGRATIONS_DIR.relative_to(ROOT).is_relative_to(src) for src in shipped)
    assert not (ROOT / ".dockerignore").exists() or "migrations" not in (ROOT / ".dockerignore").read_text()


def test_migrate_waits_for_the_database_then_gives_up_with_its_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:  # a port nobody listens on: every connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    now = [0.0]
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    with pytest.raises(psycopg.OperationalError):
        wait_for_database(f"postgresql://u:p@127.0.0.1:{port}/db", 3, clock=lambda: now[0], pause=pause)
    assert pauses == [1.0, 1.0, 1.0]  # tried at 0, 1, 2 and 3 s, then gave up
    assert capsys.readouterr().err.count("waiting up to 3 s for the database at 127.0.0.1") == 1

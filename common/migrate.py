"""``python -m common.migrate``: apply the schema migrations, once, as the schema's owner.

The schema changes as versioned migrations, plain SQL files in ``common/migrations``
applied in order by yoyo-migrations, each exactly once per database (yoyo records them in
``_yoyo_migration``). Why yoyo: migrations stay plain SQL (the services speak raw SQL
through asyncpg and have no ORM models an autogenerating tool such as alembic could diff
against), dependencies between files are a ``-- depends:`` header, it is a small library
driven from Python, and it works on PostgreSQL through psycopg 3 with transactional DDL
(a migration that fails leaves nothing behind).

Who runs it, before any service starts: ``make up`` (scripts/up.sh), the test fixtures
(once per session), the compose service ``migrate`` and the Kubernetes Job ``migrate``.
The services never run DDL; at start-up they check that every migration they ship is
applied and refuse to start otherwise (:func:`common.db.require_schema`).

Usage::

    DATABASE_URL=postgresql://owner:...@host/db python -m common.migrate          # apply
    DATABASE_URL=... python -m common.migrate --check   # exit 1, naming them, if some are missing

``DATABASE_URL`` is the schema owner's (it creates tables, and the services' group roles:
it needs CREATEROLE). Optionally, ``INGEST_DATABASE_URL``, ``API_DATABASE_URL``,
``STREAM_DATABASE_URL`` and ``NOTIFY_DATABASE_URL`` (each service's own URL) make it create
or update each service's login user, with that URL's user name and password, as a member
of the service's group role (migrations 0001_roles, 0003_webhooks): one place, each
service's secret, says who the service is.
The password reaches PostgreSQL only as a SCRAM-SHA-256 verifier made here, so it never
appears in the server's statement log.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from pydantic import Field, SecretStr
from yoyo import get_backend, read_migrations

from common.db import MIGRATION_TABLE, MIGRATIONS_DIR, missing_migrations, shipped_migrations
from common.settings import DatabaseSettings

#: The group role of each service that uses the database (created by 0001_roles).
SERVICE_ROLES = {
    "ingest": "facestream_ingest",
    "api": "facestream_api",
    "stream": "facestream_stream",
    "notify": "facestream_notify",  # created by 0003_webhooks
}
#: Session advisory lock held while migrating: one migrator at a time, released by the
#: server if the migrator dies (yoyo's own lock is a table row, which a crash leaves behind).
MIGRATE_LOCK = 0x66730002


class MigrateSettings(DatabaseSettings):
    """The migration command's one settings object (DATABASE_URL: the schema owner)."""

    ingest_database_url: SecretStr | None = Field(
        default=None, description="ingest's own URL: its login user is created in facestream_ingest."
    )
    api_database_url: SecretStr | None = Field(
        default=None, description="The results API's own URL: its login user is created in facestream_api."
    )
    stream_database_url: SecretStr | None = Field(
        default=None, description="The stream's own URL: its login user is created in facestream_stream."
    )
    notify_database_url: SecretStr | None = Field(
        default=None, description="notify's own URL: its login user is created in facestream_notify."
    )
    migrate_wait_s: float = Field(
        default=60,
        ge=0,
        description="How long to wait for the database to accept connections before giving up "
        "(it may still be starting: compose under podman and Kubernetes start both at once).",
    )

    def service_urls(self) -> dict[str, str]:
        """service -> its own DATABASE_URL, for those given."""
        given = {
            "ingest": self.ingest_database_url,
            "api": self.api_database_url,
            "stream": self.stream_database_url,
            "notify": self.notify_database_url,
        }
        return {name: url.get_secret_value() for name, url in given.items() if url is not None}


def yoyo_uri(dsn: str) -> str:
    """yoyo's URI for a DATABASE_URL (``postgresql://`` or ``postgres://``, as asyncpg takes
    it): the same URI, naming the psycopg 3 driver."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    return f"postgresql+psycopg://{rest}"


def with_credentials(dsn: str, user: str, password: str) -> str:
    """``dsn`` with another user name and password (host, database and options kept)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


def credentials(dsn: str) -> tuple[str, str | None]:
    """The user name and password in a DATABASE_URL."""
    parts = urlsplit(dsn)
    if not parts.username:
        raise ValueError("the URL names no user")
    return unquote(parts.username), unquote(parts.password) if parts.password is not None else None


def scram_sha256_verifier(password: str, salt: bytes, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802, 7677), in its format
    ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``. Given as the password of
    CREATE/ALTER ROLE it is stored as it is, so the password itself is never sent.
    (PostgreSQL normalises passwords with SASLprep, which leaves ASCII ones unchanged: use
    ASCII passwords.)"""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR, lock_timeout_s: float = 300) -> list[str]:
    """Apply the migrations in ``directory`` not applied yet (in filename order, after what
    each ``-- depends:`` on); returns their ids. Each runs in a transaction of its own."""
    backend = get_backend(yoyo_uri(dsn), migration_table=MIGRATION_TABLE)
    try:
        backend.connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        # Under that lock no other migrator runs: a row in yoyo's lock table is a dead one's.
        backend.break_lock()
        migrations = read_migrations(str(directory))
        with backend.lock(timeout=lock_timeout_s):
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()


def wait_for_database(
    dsn: str,
    wait_s: float,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Return once ``dsn`` accepts a connection; raise the last connection error after
    ``wait_s`` seconds of refusals. Says once, on stderr, that it waits."""
    deadline = clock() + wait_s
    said = False
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if clock() >= deadline:
                raise
            if not said:
                at = urlsplit(dsn)
                print(
                    f"[migrate] waiting up to {wait_s:g} s for the database at {at.hostname}:{at.port}",
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            pause(1.0)


def applied_migrations(dsn: str) -> list[str]:
    """The ids yoyo recorded as applied (none if it never ran)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (MIGRATION_TABLE,)).fetchone()
        if row is None or row[0] is None:
            return []
        query = sql.SQL("SELECT migration_id FROM {}").format(sql.Identifier(MIGRATION_TABLE))
        return [r[0] for r in conn.execute(query).fetchall()]


def ensure_login(
    conn: psycopg.Connection[tuple[object, ...]], role: str, user: str, password: str | None
) -> None:
    """Create login user ``user`` (or update its password) as a member of group ``role``."""
    verifier = scram_sha256_verifier(password, os.urandom(16)) if password is not None else None
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))  # CREATE ROLE races
        if conn.execute("SELECT current_user = %s", (user,)).fetchone() == (True,):
            raise ValueError(f"{user} is the schema owner's user: give each service a user of its own")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is not None
        # Only LOGIN and the password: a new role gets no other attribute (NOSUPERUSER and
        # the rest are the defaults), and naming them at all in ALTER ROLE needs a superuser.
        statement = sql.SQL("{verb} ROLE {user} LOGIN").format(
            verb=sql.SQL("ALTER" if exists else "CREATE"), user=sql.Identifier(user)
        )
        if verifier is not None:
            statement = sql.SQL("{} PASSWORD {}").format(statement, sql.Literal(verifier))
        conn.execute(statement)
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(user)))


def provision_logins(dsn: str, service_urls: Mapping[str, str]) -> list[str]:
    """For each ``service -> its own URL``, ensure that URL's user logs in as a member of the
    service's group role (:data:`SERVICE_ROLES`); ``dsn`` is the owner's. Returns the users."""
    users = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for service, url in service_urls.items():
            user, password = credentials(url)
            ensure_login(conn, SERVICE_ROLES[service], user, password)
            users.append(user)
    return users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="apply nothing; exit 1, naming them, if migrations are missing"
    )
    args = parser.parse_args(argv)
    settings = MigrateSettings()
    dsn = settings.database_url.get_secret_value()
    shipped = shipped_migrations()
    wait_for_database(dsn, settings.migrate_wait_s)
    if args.check:
        missing = missing_migrations(shipped, applied_migrations(dsn))
        if missing:
            print(f"[migrate] not applied: {', '.join(missing)}", file=sys.stderr)
            return 1
        print(f"[migrate] the schema is current ({len(shipped)} migrations)", file=sys.stderr)
        return 0
    applied = apply_migrations(dsn)
    if applied:
        print(f"[migrate] applied {', '.join(applied)}", file=sys.stderr)
    else:
        print(f"[migrate] nothing to apply ({len(shipped)} migrations applied)", file=sys.stderr)
    for user in provision_logins(dsn, settings.service_urls()):
        print(f"[migrate] login user {user} ready", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PostgreSQL connection pool (asyncpg), and the start-up check that the schema is current.

The schema is not created here: versioned migrations (``common/migrations``) are applied
once per release by ``python -m common.migrate`` (:mod:`common.migrate`), as the
schema's owner, before the services start. A service only checks that every migration
it ships is applied, and refuses to start (:class:`SchemaBehind`) otherwise: it would
otherwise fail later, on the first statement that needs what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import asyncpg

from common.errors import FacestreamError

#: The migrations this code needs, as yoyo-migrations reads them (one ``.sql`` file each).
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Where yoyo-migrations records the applied migrations (its default table).
MIGRATION_TABLE = "_yoyo_migration"
MIGRATE_COMMAND = "python -m common.migrate"

#: Errors that mean "the database is not reachable right now": wait and try again.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,  # the server is shutting down or restarting
    asyncpg.InternalClientError,  # a connection left mid-transaction when the server went away
)


class SchemaBehind(FacestreamError):
    """The database lacks migrations that this code ships; ``missing`` names them."""

    def __init__(self, missing: list[str], detail: str = "") -> None:
        self.missing = missing
        super().__init__(
            f"the database schema is behind this code: migration(s) {', '.join(missing)} not applied"
            f"{f' ({detail})' if detail else ''}. Run `{MIGRATE_COMMAND}` with DATABASE_URL set to "
            "the schema owner's URL (make up, the compose service `migrate` and the Kubernetes Job "
            "`migrate` do), then start this service again."
        )


def shipped_migrations(directory: Path = MIGRATIONS_DIR) -> list[str]:
    """The ids of the migrations in ``directory``, sorted, as yoyo names them: each ``.sql``
    file's name without the suffix (``.rollback.sql`` files and post-apply hooks are not
    migrations of their own)."""
    return sorted(
        p.name.removesuffix(".sql")
        for p in directory.glob("*.sql")
        if not p.name.endswith(".rollback.sql") and not p.name.startswith("post-apply")
    )


def missing_migrations(shipped: Iterable[str], applied: Iterable[str]) -> list[str]:
    """The shipped migrations not applied yet, in order. Migrations applied but not shipped
    (a newer release's, during a rolling upgrade) are fine: each is backwards compatible."""
    done = set(applied)
    return [m for m in shipped if m not in done]


async def require_schema(db: asyncpg.Pool | asyncpg.Connection, shipped: Iterable[str] | None = None) -> None:
    """Raise :class:`SchemaBehind` unless every shipped migration is applied. One cheap query
    (yoyo's table is as long as the list of migrations)."""
    wanted = shipped_migrations() if shipped is None else list(shipped)
    try:
        if await db.fetchval("SELECT to_regclass($1)", MIGRATION_TABLE) is None:
            raise SchemaBehind(missing_migrations(wanted, []), "no migration was ever applied")
        rows = await db.fetch(f"SELECT migration_id FROM {MIGRATION_TABLE}")
    except asyncpg.InsufficientPrivilegeError as exc:
        # The grant comes with 0001_roles: a role that cannot read the table is one made
        # before the migrations ran, or a login user outside the services' group roles.
        raise SchemaBehind(wanted, f"this user cannot read {MIGRATION_TABLE}: {exc}") from exc
    if missing := missing_migrations(wanted, (r["migration_id"] for r in rows)):
        raise SchemaBehind(missing)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool (jsonb as Python objects) once the schema is current. Raises on failure:
    :class:`SchemaBehind` if migrations are missing (no DDL is ever run here)."""
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection)
    try:
        await require_schema(pool)
    except BaseException:
        await pool.close()
        raise
    return pool


async def database_answers(pool: asyncpg.Pool) -> bool:
    """Whether the database answers a query within 2 s now (a readiness check)."""
    try:
        async with pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
        return True
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False

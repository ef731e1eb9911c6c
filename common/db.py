"""PostgreSQL connection pool and schema (asyncpg)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

SCHEMA = (Path(__file__).with_name("schema.sql")).read_text()

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


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool (jsonb as Python objects) and apply the schema. Raises on failure."""
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection)
    # One session at a time creates the schema (several services start together).
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(727274)")
        await conn.execute(SCHEMA)
    return pool

"""Where the PostgreSQL tests find their server, and a fresh schema per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import pytest

POSTGRES_DSN = os.environ.get("AUDITMW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_reachable: bool | None = None


def require_postgres() -> None:
    """Skip (or fail, under AUDITMW_REQUIRE_POSTGRES) when no server answers."""
    global _reachable
    if _reachable is None:
        _reachable = asyncio.run(_ping())
    if not _reachable:
        message = f"PostgreSQL not reachable at {POSTGRES_DSN} (set AUDITMW_TEST_POSTGRES)"
        if os.environ.get("AUDITMW_REQUIRE_POSTGRES"):
            pytest.fail(message + "; AUDITMW_REQUIRE_POSTGRES is set")
        pytest.skip(message)


async def _ping() -> bool:
    try:
        conn = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def stored_schema_version(conn: asyncpg.Connection) -> str | None:
    """The schema version as stored, read with plain SQL (not the library's reader)."""
    version: str | None = await conn.fetchval(
        "SELECT value FROM auditmw_meta WHERE key = 'schema_version'"
    )
    return version


def new_schema_name() -> str:
    return f"auditmw_test_{uuid.uuid4().hex[:12]}"


async def drop_schema(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@contextmanager
def fresh_schema() -> Iterator[str]:
    """The name of a new schema (skipped without a server), dropped afterwards."""
    require_postgres()
    name = new_schema_name()
    try:
        yield name
    finally:
        asyncio.run(drop_schema(name))


def store_url(schema: str) -> str:
    return f"{POSTGRES_DSN}?schema={schema}"

"""A framework's app as docs/frameworks.md shows it, served by uvicorn in a child process
(``_servers.UvicornProcess``), and the audit store it writes: what the Django and Quart
tests share. How a user signs in is each framework's own (``Site.start_session``)."""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx

from auditmw import Event, EventFilter, open_store

from ._paths import DOCS
from ._postgres import fresh_schema, store_url
from ._servers import UvicornProcess

_NAMED_BLOCK = re.compile(r"^```python (\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def named_blocks(document: str) -> dict[str, str]:
    """The ```` ```python path ```` blocks of ``docs/<document>``, by path."""
    text = (DOCS / document).read_text(encoding="utf-8")
    return {name: body for name, body in _NAMED_BLOCK.findall(text)}


class Site:
    """A running server and the store it writes."""

    user_agent = "auditmw-test"

    def __init__(self, server: UvicornProcess, store: str) -> None:
        self.server = server
        self.store = store

    @asynccontextmanager
    async def client(self, user: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
        """A client with the site's user agent, signed in as ``user`` when given."""
        headers = {"user-agent": self.user_agent}
        # Generous: a store waiting for a write lock answers after its busy_timeout (5 s).
        async with httpx.AsyncClient(
            base_url=self.server.base_url, headers=headers, timeout=30
        ) as client:
            await self.start_session(client, user)
            yield client

    async def start_session(self, client: httpx.AsyncClient, user: str | None) -> None:
        """Sign ``client`` in as ``user``; None: leave it anonymous."""
        raise NotImplementedError

    async def events_of(self, request_id: str) -> list[Event]:
        async with open_store(self.store) as store:
            return [e async for e in store.iter_events(EventFilter()) if e.request_id == request_id]


@contextmanager
def empty_store(backend: str, directory: Path) -> Iterator[str]:
    """Where a server in another process keeps an empty store of ``backend``: a SQLite
    file in ``directory``, or a fresh PostgreSQL schema (dropped afterwards)."""
    if backend == "sqlite":
        yield str(directory / "audit.db")
        return
    with fresh_schema() as schema:
        yield store_url(schema)


def new_request_id() -> str:
    return f"test-{uuid.uuid4()}"


def with_id(request_id: str) -> dict[str, str]:
    """The headers that give a request the id ``request_id`` (the events it records carry it)."""
    return {"x-request-id": request_id}


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``path`` as another process's long transaction would."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()

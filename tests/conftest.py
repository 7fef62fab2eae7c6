from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from auditmw import AuditStore, SQLiteStore, open_store
from auditmw.testing import MemoryStore

from ._node import install_verify_mjs
from ._pg_server import ThrowawayPostgres, throwaway_postgres
from ._postgres import fresh_schema, store_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser

BACKENDS = ["sqlite", "postgres"]
# The contract suites (tests/test_store_contract.py, tests/test_query_contract.py) also run
# the in-memory reference backend.
CONTRACT_BACKENDS = [*BACKENDS, "memory"]
StoreFactory = Callable[..., AuditStore]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
async def store(store_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(store_path) as opened:
        yield opened


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped after the test."""
    with fresh_schema() as name:
        yield name


@pytest.fixture(scope="module")
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL server of the module's own, for tests that stop or freeze it
    (tests/_pg_server.py); one per module, as it takes a second or two to start."""
    with throwaway_postgres() as server:
        yield server


@pytest.fixture
def pg_server(throwaway_pg: ThrowawayPostgres) -> Iterator[ThrowawayPostgres]:
    """The module's throwaway server, running and thawed when the test starts and again
    after it, whatever the test did to it."""
    throwaway_pg.recover()
    yield throwaway_pg
    throwaway_pg.recover()


@pytest.fixture(params=BACKENDS)
def store_url_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """``make()`` gives the URL of one empty store of the parametrized backend."""
    if request.param == "sqlite":
        return lambda: str(tmp_path / "audit.db")
    schema = request.getfixturevalue("pg_schema")
    return lambda: store_url(schema)


@pytest.fixture
async def any_store(store_url_factory: Callable[[], str]) -> AsyncIterator[AuditStore]:
    """An open store of each backend: the shared store test suite uses this."""
    async with open_store(store_url_factory()) as opened:
        yield opened


@pytest.fixture(params=CONTRACT_BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """``make(**options)`` gives an unopened store of the parametrized backend; all the
    stores it makes hold one log (one file, one schema, one set of in-memory tables)."""
    if request.param == "memory":
        first = MemoryStore()
        return lambda **options: MemoryStore(shared_with=first, **options)
    if request.param == "sqlite":
        url = str(tmp_path / "audit.db")
    else:
        url = store_url(request.getfixturevalue("pg_schema"))
    return lambda **options: open_store(url, **options)


@pytest.fixture
async def contract_store(store_factory: StoreFactory) -> AsyncIterator[AuditStore]:
    """An open store of each backend, the in-memory one included (the contract suites)."""
    async with store_factory() as opened:
        yield opened


@pytest.fixture(scope="session")
def verify_mjs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/verify_jsonl.mjs, ready to run with node (skipped without node; see tests/_node)."""
    return install_verify_mjs(tmp_path_factory.mktemp("verify-mjs"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium, driven by Playwright (see tests/_browser.py), for one test module."""
    from ._browser import launched_chromium  # Playwright is imported only where it is used

    with launched_chromium() as launched:
        yield launched

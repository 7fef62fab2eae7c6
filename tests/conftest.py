from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from auditmw import SQLiteStore


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
async def store(store_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(store_path) as opened:
        yield opened

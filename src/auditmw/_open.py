"""Open a store from a URL or path, as the CLI and the configuration do."""

from __future__ import annotations

import os
from typing import Any

from ._sqlite import SQLiteStore
from ._store import AuditStore


def open_store(target: str | os.PathLike[str], **options: Any) -> AuditStore:
    """The store named by ``target``, not yet opened (use ``async with``).

    ``target`` is a file path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path``
    (the SQLAlchemy convention). Keyword options go to the store's constructor.
    """
    text = os.fspath(target)
    if text.startswith(("postgresql://", "postgres://")):
        raise ValueError("the PostgreSQL store is not available in this version")
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    elif "://" in text:
        raise ValueError(f"unsupported store URL {text!r}: use a path or sqlite:///path")
    if not text:
        raise ValueError("the store path is empty")
    return SQLiteStore(text, **options)

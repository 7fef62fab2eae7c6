"""Open a store from a URL or path, as the CLI and the configuration do."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._sqlite import SQLiteStore
from ._store import AuditStore


def open_store(target: str | os.PathLike[str], **options: Any) -> AuditStore:
    """The store named by ``target``, not yet opened (use ``async with``).

    ``target`` is a file path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path``
    (the SQLAlchemy convention), or ``postgresql://user@host/db`` with an optional
    ``?schema=name`` (default ``public``). Keyword options go to the store's constructor.
    """
    text = os.fspath(target)
    if text.startswith(("postgresql://", "postgres://")):
        return _postgres_store(text, options)
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    elif "://" in text:
        raise ValueError(f"unsupported store URL {text!r}: use a path or sqlite:///path")
    if not text:
        raise ValueError("the store path is empty")
    return SQLiteStore(text, **options)


def _postgres_store(url: str, options: dict[str, Any]) -> AuditStore:
    try:
        from ._postgres import PostgresStore
    except ImportError:  # asyncpg is the optional "postgres" extra
        raise ValueError(
            "PostgreSQL stores need asyncpg: pip install 'auditmw[postgres]'"
        ) from None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = [value for key, value in query if key == "schema"]
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    if schema:
        options = {**options, "schema": schema[-1]}
    return PostgresStore(urlunsplit(parts._replace(query=rest)), **options)

"""Open a store from a URL or path, as the CLI and the configuration do."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from auditmw._stores.sqlite import SQLiteStore
from auditmw._stores.store import AuditStore


def open_store(target: str | os.PathLike[str], **options: Any) -> AuditStore:
    """The store named by ``target``, not yet opened (use ``async with``).

    ``target`` is a file path, or ``sqlite:///relative/path`` / ``sqlite:////absolute/path``
    (the SQLAlchemy convention), or ``postgresql://user@host/db`` with an optional
    ``?schema=name`` (default ``public``) and the time limits ``retry_for``,
    ``connect_timeout`` and ``command_timeout`` in seconds (``?schema=audit&retry_for=5``;
    other parameters go to asyncpg). Keyword options go to the store's constructor; those
    in the URL take precedence.
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
        from auditmw._stores.postgres import PostgresStore
    except ImportError:  # asyncpg is the optional "postgres" extra
        raise ValueError(
            "PostgreSQL stores need asyncpg: pip install 'auditmw[postgres]'"
        ) from None
    parts = urlsplit(url)
    rest = []
    options = dict(options)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            options["schema"] = value
        elif key in URL_TIMEOUTS:
            options[key] = _seconds(key, value)
        else:
            rest.append((key, value))
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
    return PostgresStore(dsn, **options)


# PostgresStore's time limits, settable in the URL (for the CLI and settings read from the
# environment).
URL_TIMEOUTS = ("retry_for", "connect_timeout", "command_timeout")


def _seconds(name: str, text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{name} in the store URL must be a positive number of seconds")
    return seconds

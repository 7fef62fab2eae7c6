"""An ASGI app called in this process, without a socket (httpx's ``ASGITransport``), and
what it recorded: the helpers of the tests that do not need a real server (for those, see
tests/_servers.py)."""

from __future__ import annotations

from typing import Any

import httpx

from auditmw import AuditStore, Event


def client_for(
    app: Any,
    *,
    peer: str = "127.0.0.1",
    base_url: str = "http://test",
    root_path: str = "",
    raise_app_exceptions: bool = True,
    **options: Any,
) -> httpx.AsyncClient:
    """A client whose requests reach ``app`` directly, from the address ``peer`` (the ASGI
    scope's ``client``), with the ASGI ``root_path`` given. ``raise_app_exceptions=False``:
    an exception the app lets out becomes a 500 instead of failing the request.
    ``options``: more of ``httpx.AsyncClient``'s (``auth``, ``headers``...)."""
    transport = httpx.ASGITransport(
        app,
        raise_app_exceptions=raise_app_exceptions,
        root_path=root_path,
        client=(peer, 50000),
    )
    return httpx.AsyncClient(transport=transport, base_url=base_url, **options)


async def stored(store: AuditStore) -> list[Event]:
    """Every event of ``store``, read from its chain rows (every log, in chain order)."""
    return [
        Event.from_entry(row.entry, row.hash, row.personal) async for row in store.iter_chain_rows()
    ]

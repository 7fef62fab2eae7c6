"""Helpers of the stream tests: a store with events, read and written as a test reads it."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

import orjson

from auditmw import EventFilter, NewEvent
from auditmw._admin.export import export_chunks
from auditmw._stores.open import open_store


def append_events(
    url: str, count: int, *, log: str = "default", action: str = "item.created"
) -> None:
    """Append ``count`` events to the store at ``url`` (created if missing)."""

    async def run() -> None:
        async with open_store(url) as store:
            # Concurrently, a thousand at a time: group commit makes them few transactions,
            # and each is still appended in the order of its number.
            for start in range(0, count, 1000):
                await asyncio.gather(
                    *(
                        store.append(
                            NewEvent(action=action, resource="item", resource_id=str(n), log=log)
                        )
                        for n in range(start, min(start + 1000, count))
                    )
                )

    asyncio.run(run())


def export_lines(url: str, f: EventFilter | None = None) -> list[bytes]:
    """The JSON Lines export of the store, line by line (with their line ends)."""

    async def run() -> bytes:
        async with open_store(url, create=False) as store:
            chunks = export_chunks(store.iter_events(f or EventFilter()), "jsonl")
            return b"".join([chunk async for chunk in chunks])

    return asyncio.run(run()).splitlines(keepends=True)


def segment_lines(directory: Path) -> list[bytes]:
    """Every line of every segment in ``directory``, segments in name order."""
    lines: list[bytes] = []
    for segment in sorted(directory.glob("*.jsonl.gz")):
        lines += gzip.decompress(segment.read_bytes()).splitlines(keepends=True)
    return lines


def stream_json(output: str) -> dict[str, Any]:
    """The one stream of ``auditmw streams --json``'s output."""
    [stream] = orjson.loads(output)["streams"]
    result: dict[str, Any] = stream
    return result

"""The file destination, ``file:///dir``: each batch becomes one gzip-compressed JSON Lines
segment in ``dir``, named by log and seq range (``default-000000000001-000000001000.jsonl.gz``,
the log name percent-encoded).

A segment is written to a hidden temporary name, fsynced, renamed into place, and the
directory fsynced: a segment that exists is whole, and the batch counts as delivered only
then. A batch delivered again after a crash (at least once) has the same range, so it
replaces its earlier copy. In the native format every segment verifies with
``auditmw verify --jsonl SEGMENT`` (which reads .gz files).
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Self
from urllib.parse import quote, unquote, urlsplit

from auditmw._streams.destination import (
    DeliveryBatch,
    Destination,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)

# Failures that may pass by themselves (a full disk gets space, a busy device frees up);
# every other OSError (no permission, read-only, not a directory...) will happen again.
TEMPORARY_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.EMFILE}
)
SEQ_DIGITS = 12


def segment_name(log: str, first: int, last: int) -> str:
    """The file name of the segment of ``log`` from seq ``first`` to ``last``."""
    return f"{quote(log, safe='')}-{first:0{SEQ_DIGITS}d}-{last:0{SEQ_DIGITS}d}.jsonl.gz"


class FileDestination(Destination):
    """Rotated, compressed JSON Lines segments in ``directory`` (see the module docstring)."""

    scheme = "file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def from_url(cls, url: str, settings: Mapping[str, str]) -> Self:
        parts = urlsplit(url)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ValueError(f"a file destination is file:///absolute/directory, not {url!r}")
        return cls(Path(path))

    def describe(self) -> str:
        return self.directory.as_uri()

    async def open(self) -> None:
        await asyncio.to_thread(self._guarded, self._make_directory)

    def _make_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def deliver(self, batch: DeliveryBatch) -> None:
        await asyncio.to_thread(self._guarded, lambda: self._write(batch))

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run ``action``; its OSError as a delivery error (temporary or permanent)."""
        try:
            action()
        except OSError as exc:
            message = f"file destination {self.directory}: {exc.strerror or exc}"
            if exc.filename:
                message += f": {exc.filename}"
            if exc.errno in TEMPORARY_ERRNOS:
                raise TemporaryDeliveryError(message) from exc
            raise PermanentDeliveryError(message) from exc

    def _write(self, batch: DeliveryBatch) -> None:
        final = self.directory / segment_name(batch.log, batch.first_seq, batch.last_seq)
        temporary = self.directory / f".{final.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(temporary, "xb") as raw:
                # mtime=0: the same batch compresses to the same bytes every time.
                with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as compressed:
                    for record in batch.records:
                        compressed.write(record)
                        compressed.write(b"\n")
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)

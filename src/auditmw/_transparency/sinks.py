"""Where signed checkpoints go besides the store: somewhere its writers cannot rewrite.

A checkpoint kept only in the database proves nothing against someone who can rewrite the
database: they would rewrite the checkpoints too (or delete the newest ones together with
the tail of the log). A *sink* receives every checkpoint after the store committed it:
any callable ``sink(log, size, note)``, plain or async, e.g. one that uploads to object
storage with a retention lock. ``DirectorySink`` writes them to files, typically on
another machine's mount or a directory that is shipped elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeAlias
from urllib.parse import quote

from auditmw._errors import AuditError

# sink(log, size, note): called once per committed checkpoint; may return an awaitable.
Sink: TypeAlias = Callable[[str, int, bytes], Awaitable[None] | None]

SUFFIX = ".checkpoint"
_TEMP_PREFIX = ".tmp-"


class SinkConflictError(AuditError):
    """The sink already holds a different checkpoint for this log and size: two
    signers disagree (or someone edited the file). Never resolved by overwriting."""


def checkpoint_file_name(log: str, size: int) -> str:
    """``<percent-encoded log>/<size, 20 digits>.checkpoint``, relative to the sink.

    The log name is percent-encoded as in origins (every byte but ``A-Z a-z 0-9 _ . - ~``)
    and a leading ``.`` too, so no log name gives ``.``, ``..`` or a hidden directory.
    The zero-padded size makes a directory listing sort in log order.
    """
    if size < 0:
        raise ValueError("a tree size is not negative")
    directory = quote(log, safe="")
    if directory.startswith("."):
        directory = "%2E" + directory[1:]
    return f"{directory}/{size:020d}{SUFFIX}"


class DirectorySink:
    """Writes each checkpoint to ``<path>/<log>/<size>.checkpoint`` (see
    ``checkpoint_file_name``), atomically and durably, and never replaces a file with
    different bytes: the same bytes again are a no-op, different ones raise
    ``SinkConflictError``.

    Calling it returns an awaitable (the file system work runs in a thread, off the
    event loop); ``write`` is the same, synchronous.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"DirectorySink({str(self.path)!r})"

    async def __call__(self, log: str, size: int, note: bytes) -> None:
        await asyncio.to_thread(self.write, log, size, note)

    def write(self, log: str, size: int, note: bytes) -> Path:
        """Write one checkpoint; returns its file's path."""
        target = self.path / checkpoint_file_name(log, size)
        _make_directory(target.parent)
        # Write a temporary file in the same directory, flush it to disk, then give it its
        # name with link(), which (unlike rename) fails when the name exists: a reader
        # never sees a partial file, and an existing checkpoint is never replaced.
        temp = target.parent / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(note)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temp, target)
            except FileExistsError:
                if target.read_bytes() != note:
                    raise SinkConflictError(
                        f"{target} already holds a different checkpoint for log {log!r} size {size}"
                    ) from None
                return target  # written before (a retry, or another process): done
            except OSError:
                # A file system without hard links: rename, after checking the name is
                # free (not atomic against a concurrent writer of the same size).
                if target.exists():
                    if target.read_bytes() != note:
                        raise SinkConflictError(
                            f"{target} already holds a different checkpoint"
                        ) from None
                    return target
                os.replace(temp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        _fsync_directory(target.parent)  # the new name itself must survive a crash
        return target


def read_sink(path: str | os.PathLike[str]) -> list[tuple[str, bytes]]:
    """Every ``*.checkpoint`` file under ``path`` (any depth), as ``(file path, bytes)``,
    sorted by path. The files are returned as they are: the caller verifies them."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    found = []
    for file in sorted(root.rglob(f"*{SUFFIX}")):
        if file.is_file() and not file.name.startswith(_TEMP_PREFIX):
            found.append((str(file), file.read_bytes()))
    return found


def _make_directory(directory: Path) -> None:
    """Create ``directory`` (and parents), making each new entry durable."""
    if directory.is_dir():
        return
    _make_directory(directory.parent)
    with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
        directory.mkdir()
    _fsync_directory(directory.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories: rename durability is the OS's
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

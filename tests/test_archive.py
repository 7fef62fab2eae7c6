"""``auditmw archive`` and ``auditmw verify --jsonl ARCHIVE``, on both backends.

Each test writes a real store (a SQLite file, or a fresh PostgreSQL schema) through the
API, archives it through the command line, and verifies or tampers with the archive as
someone holding the file would.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from auditmw import (
    ArchiveHeader,
    AuditStore,
    Checkpointing,
    Event,
    EventFilter,
    NewEvent,
    StoredCheckpoint,
    StoreUnavailableError,
    open_store,
)
from auditmw._cli.exit_codes import ExitCode
from auditmw._retention.archive import write_archive
from auditmw._retention.cuts import CutRecord
from auditmw._transparency.merkle import Frontier
from auditmw._transparency.notes import SigningKey, save_verifier_key
from auditmw.testing import append_at

from ._command import cli
from ._paths import DOCS

# Day d of May 2024 at noon; the archive's cut is a day, so its start.
DAYS = [1, 2, 3, 7, 4, 5, 8, 9]  # seq 4 came with a clock ahead: it ends a cut at day 5
OTHER_DAYS = [2, 6]
KEY_NAME = "audit.example.com/app"


def at(day: int) -> str:
    return f"2024-05-{day:02d}T12:00:00.000000Z"


def fill(url: str) -> None:
    """Log "default" at ``DAYS``, log "other" at ``OTHER_DAYS``."""

    async def run() -> None:
        async with open_store(url) as store:
            for log, days in (("default", DAYS), ("other", OTHER_DAYS)):
                events = [
                    (
                        NewEvent(action="doc.read", resource="doc", resource_id=str(i), log=log),
                        at(d),
                    )
                    for i, d in enumerate(days, 1)
                ]
                await append_at(store, events)

    asyncio.run(run())


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def header_of(path: Path) -> dict[str, object]:
    data = orjson.loads(lines_of(path)[0])
    assert isinstance(data, dict)
    return data


@pytest.fixture
def url(store_url_factory: Callable[[], str]) -> str:
    made = store_url_factory()
    fill(made)
    return made


@pytest.fixture
def archive(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The archive of ``url`` before May 5th: "default" seqs 1..3, "other" seq 1."""
    path = tmp_path / "old.jsonl"
    code, out, err = cli(capsys, "archive", url, "--before", "2024-05-05", "-o", str(path))
    assert (code, err) == (ExitCode.OK, "")
    assert out.startswith("archived 4 entries before 2024-05-05T00:00:00.000000Z")
    return path


def verify(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "verify", "--jsonl", str(path), *extra)


# --- writing and verifying ---------------------------------------------------------------


def test_the_cut_is_the_longest_prefix_before_the_date(archive: Path) -> None:
    header = header_of(archive)
    assert header["auditmw_archive"] == 1
    assert header["before"] == "2024-05-05T00:00:00.000000Z"
    logs = header["logs"]
    assert isinstance(logs, dict)
    assert {name: (cut["first_seq"], cut["last_seq"]) for name, cut in logs.items()} == {
        "default": (1, 3),  # seq 5 (day 4) is older than the cut, but seq 4 (day 7) is not
        "other": (1, 1),
    }
    entries = [orjson.loads(line) for line in lines_of(archive)[1:]]
    assert [(e["log"], e["seq"]) for e in entries] == [
        ("default", 1),
        ("default", 2),
        ("default", 3),
        ("other", 1),
    ]
    default = logs["default"]
    assert default["head"] == entries[2]["hash"]
    leaves = [bytes.fromhex(e["hash"]) for e in entries[:3]]
    assert default["frontier"] == Frontier.from_leaves(leaves).to_dict()
    assert default["checkpoint"] is None


def test_entries_are_written_as_the_export_writes_them(
    url: str, archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "all.jsonl"
    assert cli(capsys, "export", url, "--format", "jsonl", "-o", str(export))[0] == 0
    exported = set(lines_of(export))
    assert all(line in exported for line in lines_of(archive)[1:])


def test_an_archive_verifies_alone(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = verify(capsys, archive)
    assert code == ExitCode.OK
    assert out.startswith("OK: archive of 4 entries before 2024-05-05T00:00:00.000000Z")
    code, out, _ = verify(capsys, archive, "--json")
    report = orjson.loads(out)
    assert report["ok"] is True
    assert report["archive"] == header_of(archive)
    assert report["logs"]["default"]["last_seq"] == 3


def test_the_library_call_returns_the_header(url: str, tmp_path: Path) -> None:
    path = tmp_path / "lib.jsonl"

    async def run() -> ArchiveHeader:
        async with open_store(url, create=False) as store:
            return await store.archive(before=datetime(2024, 5, 3, tzinfo=UTC), output=path)

    header = asyncio.run(run())
    assert header.to_dict() == header_of(path)
    assert {log: cut.last_seq for log, cut in header.logs.items()} == {"default": 2, "other": 1}
    assert header.entries == 3


def test_a_date_before_every_entry_archives_nothing(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.jsonl"
    code, out, _ = cli(capsys, "archive", url, "--before", "2024-04-01", "-o", str(path))
    assert code == ExitCode.OK
    assert "archived 0 entries" in out
    assert len(lines_of(path)) == 1
    assert verify(capsys, path)[0] == ExitCode.OK


# --- tampering ---------------------------------------------------------------------------


def rewrite(path: Path, edit: Callable[[list[bytes]], list[bytes]]) -> None:
    path.write_bytes(b"".join(edit(lines_of(path))))


def edit_header(path: Path, change: Callable[[dict[str, object]], None]) -> None:
    def edit(lines: list[bytes]) -> list[bytes]:
        header = orjson.loads(lines[0])
        change(header)
        return [orjson.dumps(header) + b"\n", *lines[1:]]

    rewrite(path, edit)


def test_an_edited_entry_is_damage(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rewrite(
        archive,
        lambda ls: [ls[0], ls[1].replace(b'"resource_id":"1"', b'"resource_id":"9"'), *ls[2:]],
    )
    code, out, _ = verify(capsys, archive)
    assert code == ExitCode.DAMAGED
    assert out.startswith("DAMAGED")
    assert "seq 1" in out


def test_a_dropped_entry_is_damage(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rewrite(archive, lambda ls: [ls[0], ls[1], *ls[3:]])  # default seq 2
    code, out, _ = verify(capsys, archive)
    assert code == ExitCode.DAMAGED
    assert "entries missing from the archive" in out
    assert "'default' seq 2 not in the file" in out


def test_a_dropped_last_entry_is_damage(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rewrite(archive, lambda ls: [*ls[:3], ls[4]])  # default seq 3, the cut's head
    code, out, _ = verify(capsys, archive)
    assert code == ExitCode.DAMAGED
    assert "log 'default': the file ends at seq 2, the header says 3" in out


def test_a_dropped_log_is_damage(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rewrite(archive, lambda ls: ls[:4])
    code, out, _ = verify(capsys, archive)
    assert code == ExitCode.DAMAGED
    assert "log 'other': the header lists seqs 1..1, the file holds none" in out


def test_a_forged_head_is_damage(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def forge(header: dict[str, object]) -> None:
        header["logs"]["default"]["head"] = "ab" * 32  # type: ignore[index]

    edit_header(archive, forge)
    code, out, _ = verify(capsys, archive)
    assert code == ExitCode.DAMAGED
    assert f"log 'default': the header's head {'ab' * 32} is not the last entry's hash" in out


def test_a_forged_frontier_is_damage(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def forge(header: dict[str, object]) -> None:
        header["logs"]["default"]["frontier"]["nodes"][0] = "cd" * 32  # type: ignore[index]

    edit_header(archive, forge)
    code, out, _ = verify(capsys, archive)
    assert code == ExitCode.DAMAGED
    assert "log 'default': the header's frontier is not the one of the entries' hashes" in out


def test_an_unknown_version_is_damage(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_header(archive, lambda header: header.update(auditmw_archive=2))
    code, out, _ = verify(capsys, archive)
    assert code == ExitCode.DAMAGED
    assert "line 1: archive format 2 is not supported" in out


# --- bad input ---------------------------------------------------------------------------


def test_a_bad_date_is_a_usage_error(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.jsonl"
    code, out, err = cli(capsys, "archive", url, "--before", "2024-13-01", "-o", str(path))
    assert (code, out) == (ExitCode.USAGE, "")
    assert err.startswith("auditmw archive: --before: '2024-13-01' is not an ISO 8601 date")
    assert not path.exists()


def test_an_existing_file_is_never_replaced(
    url: str, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = archive.read_bytes()
    code, out, err = cli(capsys, "archive", url, "--before", "2024-05-09", "-o", str(archive))
    assert (code, out) == (ExitCode.USAGE, "")
    assert err == f"auditmw archive: {archive} exists; an archive never replaces a file\n"
    assert archive.read_bytes() == before
    assert sorted(p.name for p in archive.parent.iterdir() if p.name.startswith(".")) == []


def test_a_missing_store_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    path = tmp_path / "x.jsonl"
    code, _, err = cli(capsys, "archive", str(missing), "--before", "2024-05-01", "-o", str(path))
    assert code == ExitCode.USAGE
    assert err.startswith("auditmw archive: ") and err.count("\n") == 1
    assert not missing.exists() and not path.exists()


def test_a_public_key_with_a_plain_export_is_a_usage_error(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export, key = tmp_path / "all.jsonl", tmp_path / "key.pub"
    save_verifier_key(SigningKey.generate(KEY_NAME).verifier, key)
    assert cli(capsys, "export", url, "--format", "jsonl", "-o", str(export))[0] == 0
    code, _, err = verify(capsys, export, "--public-key", str(key))
    assert code == ExitCode.USAGE
    assert "--public-key with --jsonl checks an archive" in err


def test_exit_codes_of_the_installed_command(url: str, archive: Path, tmp_path: Path) -> None:
    def auditmw(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "auditmw", *argv], capture_output=True, text=True, timeout=60
        )

    assert auditmw("verify", "--jsonl", str(archive)).returncode == ExitCode.OK
    again = auditmw("archive", url, "--before", "2024-05-05", "-o", str(archive))
    assert again.returncode == ExitCode.USAGE
    assert "Traceback" not in again.stderr
    bad_date = auditmw("archive", url, "--before", "May 5th", "-o", str(tmp_path / "y.jsonl"))
    assert bad_date.returncode == ExitCode.USAGE
    rewrite(archive, lambda ls: [ls[0], *ls[2:]])
    assert auditmw("verify", "--jsonl", str(archive)).returncode == ExitCode.DAMAGED


# --- linked to a signed checkpoint -------------------------------------------------------


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate(KEY_NAME)


@pytest.fixture
def checkpointed(
    store_url_factory: Callable[[], str], key: SigningKey
) -> tuple[str, str, int, int]:
    """A store with checkpoints every 5 entries (and on close) over 12 events; a cut two
    entries before its second checkpoint, how many entries it archives, and the size of
    the smallest checkpoint covering them."""
    made = store_url_factory()

    async def run() -> tuple[str, str, int, int]:
        checkpointing = Checkpointing(key, every=5, interval=None)
        async with open_store(made, checkpointing=checkpointing) as store:
            for i in range(12):
                await store.append(NewEvent(action="a.b", resource="r", resource_id=str(i)))
        async with open_store(made, create=False) as store:
            events = [event async for event in store.iter_events(EventFilter())]
            sizes = sorted({checkpoint.size for checkpoint in await store.checkpoints()})
        cut = events[sizes[1] - 2].timestamp  # seq sizes[1] - 1 is the first not archived
        archived = next(i for i, event in enumerate(events) if event.timestamp >= cut)
        return made, cut, archived, min(size for size in sizes if size >= archived)

    return asyncio.run(run())


def test_an_archive_links_to_the_signed_checkpoint(
    checkpointed: tuple[str, str, int, int],
    key: SigningKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, cut, archived, covering = checkpointed
    path, public = tmp_path / "old.jsonl", tmp_path / "key.pub"
    save_verifier_key(key.verifier, public)
    assert cli(capsys, "archive", url, "--before", cut, "-o", str(path))[0] == ExitCode.OK
    default = header_of(path)["logs"]["default"]  # type: ignore[index]
    assert default["last_seq"] == archived
    note = default["checkpoint"]["note"]
    checkpoint_size = int(note.split("\n")[1])
    assert checkpoint_size == covering > archived  # the smallest covering, not the cut
    assert default["checkpoint"]["consistency_proof"]

    code, out, _ = verify(capsys, path, "--public-key", str(public))
    assert code == ExitCode.OK, out
    assert f"linked to the checkpoint of size {checkpoint_size}, signed by {KEY_NAME}+" in out
    code, out, _ = verify(capsys, path)
    assert code == ExitCode.OK
    assert "(signature not checked: give --public-key)" in out

    other = tmp_path / "other.pub"
    save_verifier_key(SigningKey.generate(KEY_NAME).verifier, other)
    code, out, _ = verify(capsys, path, "--public-key", str(other))
    assert code == ExitCode.DAMAGED
    assert "the checkpoint does not open" in out


def test_a_wrong_consistency_proof_is_damage(
    checkpointed: tuple[str, str, int, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, cut, _, _ = checkpointed
    path = tmp_path / "old.jsonl"
    assert cli(capsys, "archive", url, "--before", cut, "-o", str(path))[0] == ExitCode.OK

    def forge(header: dict[str, object]) -> None:
        proof = header["logs"]["default"]["checkpoint"]["consistency_proof"]  # type: ignore[index]
        proof[0] = "ef" * 32

    edit_header(path, forge)
    code, out, _ = verify(capsys, path)
    assert code == ExitCode.DAMAGED
    assert "the consistency proof does not lead from the archived tree" in out


def test_the_documented_header_has_the_members_written(archive: Path) -> None:
    """docs/format.md shows the header's members in the order auditmw writes them."""
    text = (DOCS / "format.md").read_text(encoding="utf-8")
    shown = orjson.loads(text.split("```json archive-header\n")[1].split("\n")[0])
    written = header_of(archive)

    def shape(value: object) -> object:
        if isinstance(value, dict):
            return [(name, shape(member)) for name, member in value.items()]
        return type(value).__name__

    # The same members in the same order (the example shows one log, with a checkpoint).
    del written["logs"]["other"]  # type: ignore[attr-defined]
    shown["logs"]["default"]["checkpoint"] = None
    assert shape(shown) == shape(written)


def test_an_archive_verifies_from_standard_input(archive: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "auditmw", "verify", "--jsonl", "-"],
        input=archive.read_bytes(),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == ExitCode.OK
    assert result.stdout.startswith(b"OK: archive of 4 entries")


class FailingMidway:
    """A real store whose event stream breaks after two events, as when its database
    goes away in the middle of the archive."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    async def logs(self) -> list[str]:
        return await self.store.logs()

    async def iter_events_after(self, log: str, seq: int) -> AsyncIterator[Event]:
        count = 0
        async for event in self.store.iter_events_after(log, seq):
            if count == 2:
                raise StoreUnavailableError("the database went away")
            count += 1
            yield event

    async def checkpoints(self, log: str | None = None) -> list[StoredCheckpoint]:
        return await self.store.checkpoints(log)

    def leaf_hashes(self, log: str, start: int, end: int) -> AsyncIterator[bytes]:
        return self.store.leaf_hashes(log, start, end)

    async def cut_records(self) -> list[CutRecord]:
        return await self.store.cut_records()


def test_a_failure_leaves_no_file_behind(url: str, tmp_path: Path) -> None:
    path = tmp_path / "out" / "old.jsonl"
    path.parent.mkdir()

    async def run() -> None:
        async with open_store(url, create=False) as store:
            await write_archive(FailingMidway(store), before="2024-05-09", output=path)

    with pytest.raises(StoreUnavailableError):
        asyncio.run(run())
    assert list(path.parent.iterdir()) == []

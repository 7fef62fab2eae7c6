"""Adversarial tests: an attacker with write access to the database edits the log.

Each test gets a real store written through the public API (built once per backend, then
copied for each test), and tampers with the database directly, putting the append-only
triggers out of action first as an attacker would (``tests/_attacker.py``: raw
``sqlite3`` on the SQLite file, a superuser connection to PostgreSQL). Then
``store.verify()`` and ``auditmw verify`` must both report exactly the damage done: the
right log, seq and kind, and nothing spurious elsewhere.

Every scenario runs against both stores with the same expected findings, except where a
backend cannot hold the damage at all (said at each such test).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785

from auditmw import GENESIS_HASH, NewEvent, SQLiteStore, VerifyReport, open_store
from auditmw._stores.verify import (
    BROKEN_LINK,
    COLUMN_MISMATCH,
    DUPLICATE,
    GAP,
    MALFORMED,
    MODIFIED,
    REORDERED,
    verify_rows,
)

from ._attacker import PG_BYPASSES, PostgresTarget, SQLiteTarget, Target, leaf_hash
from ._command import cli
from ._postgres import drop_schema, new_schema_name
from .conftest import BACKENDS

N = 20
Expected = list[tuple[str, int, str]]  # (log, seq, kind) of every finding, in order

# ---------------------------------------------------------------------------------------
# Building a store, tampering with it, verifying it


def build(target: Target, n: int = N, logs: tuple[str, ...] = ("default",)) -> None:
    """A store holding ``n`` events in each of ``logs`` (interleaved), through the API."""

    async def fill() -> None:
        async with open_store(target.url) as store:
            for i in range(1, n + 1):
                for log in logs:
                    await store.append(
                        NewEvent(
                            action="document.updated",
                            resource="document",
                            resource_id=f"doc-{i}",
                            user_id=f"user-{i % 3}",
                            user_email=f"user{i % 3}@example.com",
                            details={"n": i, "note": f"revision {i}"},
                            ip_address="192.0.2.7",
                            log=log,
                        )
                    )

    asyncio.run(fill())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test; a test for one backend parametrizes ``backend`` itself."""
    return str(request.param)


sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])
postgres_only = pytest.mark.parametrize("backend", ["postgres"])


@pytest.fixture
def empty(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Target:
    """Where a store of ``backend`` goes (nothing created yet)."""
    if backend == "sqlite":
        return SQLiteTarget(tmp_path / "audit.db")
    return PostgresTarget(request.getfixturevalue("pg_schema"))


class Templates:
    """The store every test starts from, built through the API once per backend."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._built: dict[str, Target] = {}

    def get(self, backend: str) -> Target:
        if backend not in self._built:
            target: Target
            if backend == "sqlite":
                target = SQLiteTarget(self._directory / "template.db")
            else:
                target = PostgresTarget(new_schema_name())
            self._built[backend] = target  # before building: a half-built one is dropped too
            build(target)
        return self._built[backend]

    def drop(self) -> None:
        for target in self._built.values():
            if isinstance(target, PostgresTarget):
                asyncio.run(drop_schema(target.schema))


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    built = Templates(tmp_path_factory.mktemp("templates"))
    yield built
    built.drop()


@pytest.fixture
def db(empty: Target, templates: Templates) -> Target:
    """A store of N events in log "default", written through the API, all the test's own."""
    empty.copy_from(templates.get(empty.backend))
    return empty


def forge(template: bytes, **changes: Any) -> tuple[bytes, str, dict[str, Any]]:
    """A well-formed entry built from ``template`` with ``changes``, and its true hash."""
    data = orjson.loads(template)
    data.update(changes)
    entry = rfc8785.dumps(data)
    return entry, leaf_hash(entry), data


def verify(target: Target, *, create: bool = True) -> VerifyReport:
    async def run() -> VerifyReport:
        async with open_store(target.url, create=create) as store:
            return await store.verify()

    return asyncio.run(run())


def found(report: VerifyReport) -> Expected:
    return [(f.log, f.seq, f.kind) for f in report.findings]


def assert_detected(
    target: Target, capsys: pytest.CaptureFixture[str], expected: Expected
) -> VerifyReport:
    """``auditmw verify`` and ``store.verify()`` both report exactly ``expected``."""
    code, out, _ = cli(capsys, "verify", target.url)
    log, seq, kind = expected[0]
    assert code == 1, out
    assert out.startswith("DAMAGED: ")
    assert f"first: log {log!r} seq {seq}: {kind}: " in out.splitlines()[0]
    code, out, _ = cli(capsys, "verify", "--json", target.url)
    assert code == 1
    data = orjson.loads(out)
    assert [(f["log"], f["seq"], f["kind"]) for f in data["findings"]] == expected
    assert data["ok"] is False
    assert data["total_findings"] == len(expected)

    report = verify(target)
    assert not report.ok
    assert found(report) == expected
    assert report.total_findings == len(expected)
    assert report.first_finding is not None
    assert (report.first_finding.log, report.first_finding.seq) == (log, seq)
    return report


# ---------------------------------------------------------------------------------------
# The database itself refuses changes while the triggers are in place


def test_pristine_store_verifies(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    report = verify(db)
    assert report.ok
    assert report.findings == []
    assert report.warnings == []
    assert report.entries == N
    assert report.logs["default"].last_seq == N
    code, out, err = cli(capsys, "verify", db.url)
    assert code == 0
    assert out.startswith(f"OK: {N} entries intact")
    assert err == ""


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        pytest.param(statement, params, id=statement)
        for statement, params in [
            ("UPDATE auditmw_events SET action = 'x' WHERE seq = 3", ()),
            ("UPDATE auditmw_events SET entry = ?, hash = 'x'", (b"\x00",)),
            ("DELETE FROM auditmw_events WHERE seq = 3", ()),
            ("DELETE FROM auditmw_events", ()),
        ]
    ],
)
def test_triggers_refuse_update_and_delete(
    db: Target, statement: str, params: tuple[Any, ...]
) -> None:
    with db.attacker(drop_triggers=False) as conn:
        with pytest.raises(conn.refused, match="append-only"):
            conn.execute(statement, params)
        assert conn.count() == N
    assert verify(db).ok


@postgres_only
def test_triggers_refuse_truncate(db: Target) -> None:
    """SQLite has no TRUNCATE (a DELETE without WHERE is its truncate, and the DELETE
    trigger stops it); PostgreSQL's TRUNCATE fires no row trigger, so it has its own."""
    with db.attacker(drop_triggers=False) as conn:
        with pytest.raises(conn.refused, match="append-only"):
            conn.execute("TRUNCATE auditmw_events")
        assert conn.count() == N
    assert verify(db).ok


def read_entry(conn: sqlite3.Connection, seq: int) -> bytes:
    row = conn.execute("SELECT entry FROM auditmw_events WHERE seq = ?", (seq,)).fetchone()
    return bytes(row[0])


def replace_entry(conn: sqlite3.Connection, seq: int, entry: bytes, hash_: str) -> None:
    """Rewrite a row with INSERT OR REPLACE instead of UPDATE."""
    conn.execute("CREATE TEMP TABLE forged AS SELECT * FROM auditmw_events WHERE seq = ?", (seq,))
    conn.execute("UPDATE forged SET entry = ?, hash = ?", (entry, hash_))
    conn.execute("INSERT OR REPLACE INTO auditmw_events SELECT * FROM forged")


@sqlite_only
async def test_the_stores_own_connections_refuse_replace(db: SQLiteTarget) -> None:
    """SQL injected through the app's connections cannot rewrite history with REPLACE:
    the writer has recursive triggers on (REPLACE fires the DELETE trigger) and the
    reader is query-only."""
    async with SQLiteStore(db.path) as store:
        with closing(sqlite3.connect(db.path)) as reader:
            entry, hash_, _ = forge(read_entry(reader, 5), details={"n": 5, "note": "x"})
        writer = store.backend._write_conn
        assert writer is not None

        def replace() -> None:  # runs in the writer's own thread
            try:
                replace_entry(writer, 5, entry, hash_)
            finally:
                writer.execute("DROP TABLE IF EXISTS temp.forged")

        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await store.backend._in_write_thread(replace)
        read_conn = store.backend._read_conn
        assert read_conn is not None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await read_conn.execute("DELETE FROM auditmw_events")
        assert (await store.verify()).ok


@sqlite_only
def test_insert_or_replace_is_detected(
    db: SQLiteTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever the database lets through, verify catches."""
    with db.attacker(drop_triggers=False) as attacker:
        conn = attacker.conn
        entry, hash_, _ = forge(read_entry(conn, 5), details={"n": 5, "note": "rewritten"})
        try:
            replace_entry(conn, 5, entry, hash_)
        except sqlite3.IntegrityError as exc:
            assert "append-only" in str(exc)
            return  # the database refused it: nothing to detect
    assert_detected(db, capsys, [("default", 6, BROKEN_LINK)])


@postgres_only
def test_upsert_is_refused(db: Target) -> None:
    """PostgreSQL's REPLACE: INSERT ... ON CONFLICT DO UPDATE fires the UPDATE trigger."""
    with db.attacker(drop_triggers=False) as conn:
        entry, hash_, data = forge(conn.read_entry(5), details={"n": 5, "note": "rewritten"})
        columns = conn.columns()
        values = {**data, "hash": hash_, "entry": entry, "personal": None}
        with pytest.raises(conn.refused, match="append-only"):
            conn.execute(
                f"INSERT INTO auditmw_events ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))}) "
                "ON CONFLICT (log, seq) DO UPDATE SET entry = excluded.entry, hash = excluded.hash",
                [values[name] for name in columns],
            )
    assert verify(db).ok


@postgres_only
@pytest.mark.parametrize("bypass", list(PG_BYPASSES))
def test_every_way_past_the_postgres_triggers_is_caught(
    db: PostgresTarget, capsys: pytest.CaptureFixture[str], bypass: str
) -> None:
    """However the superuser gets past the triggers, the chain shows the damage, and the
    change it took to the schema is warned about."""
    db.bypass = bypass
    with db.attacker() as conn:
        conn.execute("DELETE FROM auditmw_events WHERE seq = 10")
        conn.execute("UPDATE auditmw_events SET action = 'x' WHERE seq = 12")
    report = assert_detected(db, capsys, [("default", 10, GAP), ("default", 12, COLUMN_MISMATCH)])
    assert len(report.warnings) == len(db.triggers)
    for name in db.triggers:
        assert any(name in warning for warning in report.warnings)


# ---------------------------------------------------------------------------------------
# Modified entries


def flip_value_byte(entry: bytes) -> bytes:
    """Change one byte inside the resource_id value: still valid JSON, different meaning."""
    at = entry.index(b'"resource_id":"doc-') + len(b'"resource_id":"doc')
    return entry[:at] + b"_" + entry[at + 1 :]


@pytest.mark.parametrize("seq", [1, N // 2, N])
def test_one_changed_byte_is_a_modified_entry(
    db: Target, capsys: pytest.CaptureFixture[str], seq: int
) -> None:
    with db.attacker() as conn:
        conn.write_entry(seq, flip_value_byte(conn.read_entry(seq)), rehash=False)
    report = assert_detected(db, capsys, [("default", seq, MODIFIED)])
    assert report.logs["default"].entries == N


@pytest.mark.parametrize("offset", [0, 1, 9, 50, 120, 200, 250, -30, -2, -1])
def test_any_flipped_bit_is_detected_at_that_seq(
    db: Target, capsys: pytest.CaptureFixture[str], offset: int
) -> None:
    """Wherever the flipped bit lands (a brace, a key, a digit of seq or prev_hash), the
    damage is reported at the changed row, as modified or malformed, and only there."""
    seq = 7
    with db.attacker() as conn:
        entry = bytearray(conn.read_entry(seq))
        entry[offset] ^= 0x01
        conn.write_entry(seq, bytes(entry), rehash=False)
    report = verify(db)
    assert [(f.seq, f.kind in (MODIFIED, MALFORMED)) for f in report.findings] == [(seq, True)]
    code, out, _ = cli(capsys, "verify", db.url)
    assert code == 1
    assert f"seq {seq}: " in out.splitlines()[0]


@pytest.mark.parametrize("seq", [1, 2, N // 2, N - 1])
def test_rewritten_entry_with_recomputed_hash_breaks_the_next_link(
    db: Target, capsys: pytest.CaptureFixture[str], seq: int
) -> None:
    """The attacker rewrites entry k and its hash column. Entry k is self-consistent, so
    the break shows between k and k+1 (k rewritten, or k+1 forged: the data cannot tell,
    and the finding says so)."""
    with db.attacker() as conn:
        entry, _, _ = forge(conn.read_entry(seq), details={"n": seq, "note": "nothing here"})
        conn.write_entry(seq, entry, rehash=True)
    report = assert_detected(db, capsys, [("default", seq + 1, BROKEN_LINK)])
    message = report.findings[0].message
    assert f"seq {seq} " in message
    assert "rewritten" in message
    assert "forged" in message


def test_rewritten_entry_with_recomputed_hash_and_columns(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    """A careful attacker also updates the index columns: still the link breaks."""
    with db.attacker() as conn:
        entry, hash_, data = forge(conn.read_entry(8), user_id="someone-else", action="x.y")
        conn.execute(
            "UPDATE auditmw_events SET entry = ?, hash = ?, user_id = ?, action = ? WHERE seq = 8",
            (entry, hash_, data["user_id"], data["action"]),
        )
    assert_detected(db, capsys, [("default", 9, BROKEN_LINK)])


def test_changed_hash_column_only_is_a_column_mismatch(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    with db.attacker() as conn:
        conn.execute("UPDATE auditmw_events SET hash = ? WHERE seq = 6", ("ab" * 32,))
    report = assert_detected(db, capsys, [("default", 6, COLUMN_MISMATCH)])
    assert "hash" in report.findings[0].message


def test_changed_hash_column_of_the_last_entry_is_reported(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing after the last entry vouches for it: the row is reported as modified."""
    with db.attacker() as conn:
        conn.execute("UPDATE auditmw_events SET hash = ? WHERE seq = ?", ("ab" * 32, N))
    assert_detected(db, capsys, [("default", N, MODIFIED)])


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("action", "document.read"),
        ("user_id", "user-9"),
        ("user_id", None),
        ("resource_id", "doc-1"),
        ("timestamp", "2020-01-01T00:00:00.000000Z"),
        ("prev_hash", "00" * 32),
        ("id", "01000000-0000-7000-8000-000000000000"),
    ],
)
def test_changed_index_column_is_a_column_mismatch(
    db: Target, capsys: pytest.CaptureFixture[str], column: str, value: str | None
) -> None:
    """Queries filter on the index columns: one that disagrees with its entry is named."""
    with db.attacker() as conn:
        conn.execute(f"UPDATE auditmw_events SET {column} = ? WHERE seq = 12", (value,))
    report = assert_detected(db, capsys, [("default", 12, COLUMN_MISMATCH)])
    assert column in report.findings[0].message


# ---------------------------------------------------------------------------------------
# Deleted, reordered and inserted entries


def test_deleted_middle_entry_is_a_gap(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    with db.attacker() as conn:
        conn.execute("DELETE FROM auditmw_events WHERE seq = 10")
    report = assert_detected(db, capsys, [("default", 10, GAP)])
    assert report.logs["default"].entries == N - 1


def test_deleted_run_of_entries_is_one_gap(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    with db.attacker() as conn:
        conn.execute("DELETE FROM auditmw_events WHERE seq BETWEEN 8 AND 11")
    report = assert_detected(db, capsys, [("default", 8, GAP)])
    assert "8..11" in report.findings[0].message


def test_chain_starting_at_seq_5_is_a_gap_at_seq_1(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    with db.attacker() as conn:
        conn.execute("DELETE FROM auditmw_events WHERE seq <= 4")
    report = assert_detected(db, capsys, [("default", 1, GAP)])
    assert "1..4" in report.findings[0].message


@postgres_only
def test_truncated_table_is_an_empty_log(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    """TRUNCATE with the triggers off empties the table: an empty store verifies (only
    checkpoints kept elsewhere can prove entries are missing), but the warnings remain."""
    with db.attacker() as conn:
        conn.execute("TRUNCATE auditmw_events")
    report = verify(db, create=False)
    assert report.ok
    assert report.entries == 0
    assert len(report.warnings) == len(db.triggers)


@pytest.mark.parametrize(("a", "b"), [(7, 8), (1, 2), (N - 1, N), (5, 12)])
def test_swapped_seq_columns_are_reordered(
    db: Target, capsys: pytest.CaptureFixture[str], a: int, b: int
) -> None:
    with db.attacker() as conn:
        conn.swap_seq(a, b)
    report = assert_detected(db, capsys, [("default", a, REORDERED), ("default", b, REORDERED)])
    assert f"seq {b}" in report.findings[0].message


def test_swapped_rows_hide_no_rewrite_next_to_them(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    """Swap 7 and 8, and rewrite entry 7 (with its hash): the link 7 -> 8 is still checked,
    even though entry 8 is read before entry 7."""
    with db.attacker() as conn:
        entry, _, _ = forge(conn.read_entry(7), details={"n": 7, "note": "nothing here"})
        conn.write_entry(7, entry, rehash=True)
        conn.swap_seq(7, 8)
    assert_detected(
        db,
        capsys,
        [("default", 7, REORDERED), ("default", 7, BROKEN_LINK), ("default", 8, REORDERED)],
    )


def test_swapped_rows_hide_no_rewrite_after_them(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    """Swap 7 and 8, and rewrite entry 8 (with its hash): the link 8 -> 9 is still checked."""
    with db.attacker() as conn:
        entry, _, _ = forge(conn.read_entry(8), details={"n": 8, "note": "nothing here"})
        conn.write_entry(8, entry, rehash=True)
        conn.swap_seq(7, 8)
    assert_detected(
        db,
        capsys,
        [("default", 7, REORDERED), ("default", 8, REORDERED), ("default", 9, BROKEN_LINK)],
    )


def test_forged_entry_appended_with_a_bogus_link(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    with db.attacker() as conn:
        entry, hash_, data = forge(
            conn.read_entry(N), seq=N + 1, prev_hash="cd" * 32, id="forged-id"
        )
        conn.insert_row(entry, hash_, data)
    report = assert_detected(db, capsys, [("default", N + 1, BROKEN_LINK)])
    assert report.logs["default"].last_seq == N + 1


def test_forged_entry_appended_with_the_right_link_extends_the_chain(db: Target) -> None:
    """Documented limit: a forger who links correctly to the head is not detectable from
    the database alone (only checkpoints kept elsewhere can tell); the chain stays valid."""
    with db.attacker() as conn:
        entry, hash_, data = forge(
            conn.read_entry(N), seq=N + 1, prev_hash=conn.read_hash(N), id="forged-id"
        )
        conn.insert_row(entry, hash_, data)
    assert verify(db).ok


@pytest.mark.parametrize("link", ["right", "bogus"])
@pytest.mark.parametrize("seq", [1, 9, N])
def test_forged_duplicate_seq(
    db: Target, capsys: pytest.CaptureFixture[str], seq: int, link: str
) -> None:
    with db.attacker() as conn:
        conn.rebuild_without_primary_key()
        prev_hash = GENESIS_HASH if seq == 1 else conn.read_hash(seq - 1)
        entry, hash_, data = forge(
            conn.read_entry(seq),
            id="forged-id",
            prev_hash=prev_hash if link == "right" else "cd" * 32,
            details={"n": seq, "note": "forged"},
        )
        conn.insert_row(entry, hash_, data)
    expected = [("default", seq, DUPLICATE)]
    if link == "bogus":
        expected.append(("default", seq, BROKEN_LINK))
    report = verify(db, create=False)  # an auditor's view: the store as the attacker left it
    assert sorted(found(report)) == sorted(expected)
    assert report.logs["default"].entries == N + 1
    code, out, _ = cli(capsys, "verify", db.url)
    assert code == 1
    assert f"seq {seq}: " in out.splitlines()[0]


# ---------------------------------------------------------------------------------------
# Garbage


GARBAGE = [
    b"",
    b"\xff\xfe\x00garbage",
    b"not json at all",
    b"{}",
    b"[1, 2, 3]",
    b"null",
    b'{"seq": 3}',
    b'{"action": "\xff\xfe"}',
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=repr)
def test_garbage_entry_is_reported_never_a_crash(
    db: Target, capsys: pytest.CaptureFixture[str], garbage: object
) -> None:
    assert_garbage_reported(db, capsys, garbage)


@sqlite_only
@pytest.mark.parametrize("garbage", [42, "text, not bytes"], ids=repr)
def test_garbage_of_another_type_is_reported_never_a_crash(
    db: Target, capsys: pytest.CaptureFixture[str], garbage: object
) -> None:
    """A PostgreSQL column holds one type in every row (bytea for the entry): a number or a
    text in one row's entry is damage only SQLite's dynamic typing can hold."""
    assert_garbage_reported(db, capsys, garbage)


def assert_garbage_reported(
    db: Target, capsys: pytest.CaptureFixture[str], garbage: object
) -> None:
    with db.attacker() as conn:
        conn.write_entry(4, garbage, rehash=False)
    report = verify(db)
    assert len(report.findings) == 1
    assert report.findings[0].seq == 4
    assert report.findings[0].kind in (MALFORMED, MODIFIED)
    code, out, err = cli(capsys, "verify", "--json", db.url)
    assert code == 1
    assert orjson.loads(out)["findings"][0]["seq"] == 4
    assert "Traceback" not in err


# PostgreSQL rejects text that is not valid UTF-8 in a UTF-8 database (and keeps the entry
# as bytea, never text): the three attacks with invalid UTF-8 in text are SQLite's alone.


@sqlite_only
def test_entry_with_invalid_utf8_stored_as_text(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    with db.attacker() as conn:
        conn.execute("UPDATE auditmw_events SET entry = CAST(x'7b22ff22' AS TEXT) WHERE seq = 4")
    assert_detected(db, capsys, [("default", 4, MALFORMED)])


def test_entry_with_wrong_field_types_is_reported(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    """Well-formed JSON with the right keys but nonsense values, self-consistently hashed."""
    with db.attacker() as conn:
        entry, hash_, _ = forge(conn.read_entry(4), seq="4", prev_hash=None, log=7)
        conn.execute("UPDATE auditmw_events SET entry = ?, hash = ? WHERE seq = 4", (entry, hash_))
    report = verify(db)
    assert [(f.seq, f.kind) for f in report.findings][:1] == [(4, MALFORMED)]
    code, _, _ = cli(capsys, "verify", db.url)
    assert code == 1


@sqlite_only
def test_invalid_utf8_in_index_columns(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    with db.attacker() as conn:
        conn.execute("UPDATE auditmw_events SET user_id = CAST(x'fffe' AS TEXT) WHERE seq = 3")
    report = assert_detected(db, capsys, [("default", 3, COLUMN_MISMATCH)])
    assert "user_id" in report.findings[0].message


@sqlite_only
def test_invalid_utf8_in_the_log_column(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    """The row moves to a log whose name is not text: a gap in its own log, and a column
    mismatch under the bogus name; the JSON report is still valid UTF-8."""
    with db.attacker() as conn:
        conn.execute("UPDATE auditmw_events SET log = CAST(x'ff' AS TEXT) WHERE seq = 3")
    report = verify(db, create=False)
    kinds = {(f.seq, f.kind) for f in report.findings}
    assert (3, GAP) in kinds
    assert (3, COLUMN_MISMATCH) in kinds
    code, out, err = cli(capsys, "verify", "--json", db.url)
    assert code == 1
    assert len(orjson.loads(out)["findings"]) == len(report.findings)
    code, out, err = cli(capsys, "verify", db.url)
    assert code == 1
    assert "Traceback" not in err


def test_nulls_in_a_rebuilt_table(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    """A rebuilt table has no NOT NULL constraints: NULLs are damage, not a crash."""
    with db.attacker() as conn:
        conn.rebuild_without_primary_key()
        conn.execute("UPDATE auditmw_events SET hash = NULL WHERE seq = 6")
        conn.execute("UPDATE auditmw_events SET seq = NULL WHERE seq = 9")
        conn.execute("UPDATE auditmw_events SET log = NULL WHERE seq = 12")
    report = verify(db, create=False)
    assert not report.ok
    assert {6, 9, 12} <= {f.seq for f in report.findings if f.log == "default"}
    code, out, err = cli(capsys, "verify", "--json", db.url)
    assert code == 1
    assert orjson.loads(out)["ok"] is False
    assert "Traceback" not in err


def test_null_entry_in_a_rebuilt_table(db: Target) -> None:
    with db.attacker() as conn:
        conn.rebuild_without_primary_key()
        conn.execute("UPDATE auditmw_events SET entry = NULL WHERE seq = 3")
    report = verify(db, create=False)
    assert found(report) == [("default", 3, MALFORMED)]


# ---------------------------------------------------------------------------------------
# Several logs, several damages, warnings, reopening


def test_damage_is_attributed_to_its_own_log(
    empty: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    build(empty, n=10, logs=("alpha", "beta", "gamma"))
    with empty.attacker() as conn:
        conn.write_entry(4, flip_value_byte(conn.read_entry(4, "beta")), rehash=False, log="beta")
        conn.execute("DELETE FROM auditmw_events WHERE log = 'gamma' AND seq = 1")
    report = assert_detected(empty, capsys, [("beta", 4, MODIFIED), ("gamma", 1, GAP)])
    assert {name: s.entries for name, s in report.logs.items()} == {
        "alpha": 10,
        "beta": 10,
        "gamma": 9,
    }


def test_every_damage_is_reported_in_order(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    with db.attacker() as conn:
        conn.execute("DELETE FROM auditmw_events WHERE seq = 15")
        conn.write_entry(3, flip_value_byte(conn.read_entry(3)), rehash=False)
        conn.execute("UPDATE auditmw_events SET action = 'x' WHERE seq = 9")
    report = assert_detected(
        db,
        capsys,
        [("default", 3, MODIFIED), ("default", 9, COLUMN_MISMATCH), ("default", 15, GAP)],
    )
    assert report.summary().startswith("DAMAGED: 3 finding(s); first: log 'default' seq 3")


def test_findings_beyond_the_limit_are_counted(db: Target) -> None:
    with db.attacker() as conn:
        conn.execute("UPDATE auditmw_events SET action = 'x' WHERE seq % 2 = 0")

    async def run(limit: int) -> VerifyReport:
        async with open_store(db.url, create=False) as store:
            return await verify_rows(store.iter_chain_rows(), max_findings=limit)

    everything = asyncio.run(run(1000))
    assert [f.seq for f in everything.findings] == list(range(2, N + 1, 2))
    three = asyncio.run(run(3))
    assert three.findings == everything.findings[:3]
    assert three.total_findings == N // 2
    assert three.summary().startswith(f"DAMAGED: {N // 2} finding(s); first: log 'default' seq 2")
    none = asyncio.run(run(0))
    assert none.findings == []
    assert not none.ok
    assert none.summary() == f"DAMAGED: {N // 2} finding(s)"


def test_cli_max_findings(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    with db.attacker() as conn:
        conn.execute("UPDATE auditmw_events SET action = 'x' WHERE seq % 2 = 0")
    code, out, _ = cli(capsys, "verify", "--max-findings", "3", db.url)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"DAMAGED: {N // 2} finding(s); first: log 'default' seq 2")
    assert len(lines) == 1 + 3 + 1
    assert lines[-1] == f"  ... and {N // 2 - 3} more"


def test_missing_triggers_are_warned_about(db: Target, capsys: pytest.CaptureFixture[str]) -> None:
    with db.attacker() as conn:
        conn.execute("SELECT 1")
    report = verify(db, create=False)
    assert report.ok  # nothing was changed: the chain is intact...
    assert len(report.warnings) == 2  # ...but the protection is gone
    for name in db.triggers:
        assert any(name in warning for warning in report.warnings)
    code, out, err = cli(capsys, "verify", db.url)
    assert code == 0
    assert out.startswith("OK: ")
    for name in db.triggers:
        assert name in err


def test_store_reopened_after_tampering_verifies_and_appends(
    db: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    """The application restarts on a tampered store: it opens, reports, and keeps logging
    (the new entry links to the stored bytes of the last entry)."""
    with db.attacker() as conn:
        conn.write_entry(5, flip_value_byte(conn.read_entry(5)), rehash=False)
        conn.execute("UPDATE auditmw_events SET hash = ? WHERE seq = ?", ("ab" * 32, N))

    async def reopen() -> None:
        async with open_store(db.url) as store:
            before = await store.verify()
            assert found(before) == [("default", 5, MODIFIED), ("default", N, MODIFIED)]
            event = await store.append(NewEvent(action="app.restarted", resource="app"))
            assert event.seq == N + 1
            after = await store.verify()
            # Entry N is intact: the new entry links to it, which vouches for it.
            assert found(after) == [("default", 5, MODIFIED), ("default", N, COLUMN_MISMATCH)]

    asyncio.run(reopen())


def test_appending_after_a_garbage_last_entry(db: Target) -> None:
    """The store chains on from the bytes it finds; the damage stays reported where it is."""
    with db.attacker() as conn:
        conn.write_entry(N, b"\xff garbage", rehash=False)

    async def reopen() -> None:
        async with open_store(db.url) as store:
            event = await store.append(NewEvent(action="app.restarted", resource="app"))
            assert event.seq == N + 1
            assert found(await store.verify()) == [("default", N, MALFORMED)]

    asyncio.run(reopen())


def test_tampering_while_the_store_is_open(db: Target) -> None:
    async def run() -> None:
        async with open_store(db.url) as store:
            with db.attacker() as conn:
                conn.execute("DELETE FROM auditmw_events WHERE seq = 2")
            report = await store.verify()
            assert found(report) == [("default", 2, GAP)]
            event = await store.append(NewEvent(action="still.logging", resource="app"))
            assert event.seq == N + 1

    asyncio.run(run())

"""``auditmw verify``: exit 0 intact, 1 damaged, 2 unusable input (one line, no traceback)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from auditmw import NewEvent, SQLiteStore
from auditmw._cli import main

N = 12
CONSOLE_SCRIPT = Path(sys.executable).with_name("auditmw")


def build(path: Path) -> str:
    """A store with N events in two logs; returns the head hash of log 'default'."""

    async def fill() -> str:
        async with SQLiteStore(path) as store:
            for i in range(N):
                last = await store.append(NewEvent(action="a.b", resource="r", resource_id=str(i)))
            await store.append(NewEvent(action="c.d", resource="r", log="other"))
            return last.hash

    return asyncio.run(fill())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    build(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``auditmw *argv``, run in this process.

    argparse reports bad arguments by raising SystemExit(2), which the console script
    turns into the exit status; both forms count as that exit code here.
    """
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def damage(path: Path) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER auditmw_events_no_update")
        conn.execute(
            "UPDATE auditmw_events SET user_id = 'mallory' WHERE log = 'default' AND seq = 4"
        )
        conn.execute(
            "UPDATE auditmw_events SET entry = CAST(entry AS BLOB) || x'20' "
            "WHERE log = 'default' AND seq = 9"
        )


def test_intact_store_exits_0_with_a_one_line_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.db"
    head = build(path)
    for target in (str(path), f"sqlite:///{path}"):
        code, out, err = run(capsys, "verify", target)
        assert code == 0
        assert err == ""  # no progress bar when stderr is not a terminal
        assert out.count("\n") == 1
        assert out.startswith(f"OK: {N + 1} entries intact")
        assert f"log 'default': last seq {N}, head {head}" in out
        assert "log 'other': last seq 1" in out


def test_damaged_store_exits_1_naming_the_first_bad_seq(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage(db)
    code, out, err = run(capsys, "verify", str(db))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("DAMAGED: 2 finding(s); first: log 'default' seq 4: column_mismatch")
    assert "user_id" in lines[0]
    assert lines[1:] == [
        "  log 'default' seq 4: column_mismatch: column(s) user_id differ from the entry",
        "  log 'default' seq 9: modified: entry bytes do not match their recorded hash",
    ]
    assert "auditmw_events_no_update" in err  # the dropped trigger is warned about


def test_json_output(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", "--json", str(db))
    assert code == 0
    report = orjson.loads(out)
    assert report["ok"] is True
    assert report["entries"] == N + 1
    assert report["logs"]["default"]["last_seq"] == N
    assert report["findings"] == []
    assert report["warnings"] == []

    damage(db)
    code, out, _ = run(capsys, "verify", "--json", str(db))
    assert code == 1
    report = orjson.loads(out)
    assert report["ok"] is False
    assert report["total_findings"] == 2
    assert [(f["log"], f["seq"], f["kind"]) for f in report["findings"]] == [
        ("default", 4, "column_mismatch"),
        ("default", 9, "modified"),
    ]
    assert all(isinstance(f["message"], str) and f["message"] for f in report["findings"])
    assert len(report["warnings"]) == 1


def assert_usage_error(code: int, out: str, err: str) -> None:
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("auditmw")
    assert "Traceback" not in err


def test_missing_file_exits_2_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.db"
    for target in (str(missing), f"sqlite:///{missing}", str(tmp_path)):
        code, out, err = run(capsys, "verify", target)
        assert_usage_error(code, out, err)
        assert not missing.exists()
    assert "no such file" in err or "nope.db" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "content",
    [b"this is not a database\n" * 100, os.urandom(8192), b"SQLite format 3\x00" + b"\xff" * 200],
    ids=["text", "random", "bad-header"],
)
def test_file_that_is_not_sqlite_exits_2_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    assert_usage_error(*run(capsys, "verify", str(path)))
    assert path.read_bytes() == content  # verifying never writes to what it verifies


@pytest.mark.parametrize(
    "schema",
    [
        "",  # an empty file is an empty SQLite database
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE auditmw_meta (key TEXT PRIMARY KEY, value TEXT)",
        "CREATE TABLE auditmw_meta (key TEXT PRIMARY KEY, value TEXT);"
        "CREATE TABLE auditmw_events (log TEXT, seq INTEGER)",
    ],
    ids=["empty", "other-app", "half-store", "wrong-columns"],
)
def test_sqlite_file_that_is_not_a_store_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], schema: str
) -> None:
    path = tmp_path / "other.db"
    path.touch()
    if schema:
        with closing(sqlite3.connect(path)) as conn:
            conn.executescript(schema)
    before = path.read_bytes()
    code, out, err = run(capsys, "verify", str(path))
    assert_usage_error(code, out, err)
    assert str(path) in err
    assert path.read_bytes() == before
    with closing(sqlite3.connect(path)) as conn:  # no auditmw table was added
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert names <= {"users", "auditmw_meta", "auditmw_events", "sqlite_autoindex_auditmw_meta_1"}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["verify"],
        ["verify", "a.db", "b.db"],
        ["verify", "--no-such-option", "a.db"],
        ["verify", "--max-findings", "many", "a.db"],
        ["verify", "--max-findings", "-1", "a.db"],
        ["verify", ""],
        ["verify", "postgresql://localhost/audit"],
        ["verify", "https://example.com/audit.db"],
    ],
    ids=repr,
)
def test_bad_arguments_exit_2_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_usage_error(*run(capsys, *argv))
    assert os.listdir(tmp_path) == []


def test_console_script(db: Path, tmp_path: Path) -> None:
    """The installed ``auditmw`` entry point, as a user runs it."""
    assert CONSOLE_SCRIPT.exists(), "the auditmw console script is not installed"
    ok = subprocess.run(
        [str(CONSOLE_SCRIPT), "verify", str(db)], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"OK: {N + 1} entries intact")
    assert ok.stderr == ""

    damage(db)
    bad = subprocess.run(
        [sys.executable, "-m", "auditmw", "verify", "--json", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert orjson.loads(bad.stdout)["findings"][0]["seq"] == 4

    missing = subprocess.run(
        [str(CONSOLE_SCRIPT), "verify", str(tmp_path / "missing.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr


def test_progress_bar_on_a_terminal(db: Path) -> None:
    """With stderr on a terminal, verify draws a progress bar there (stdout unchanged)."""
    controller, terminal = os.openpty()
    try:
        result = subprocess.run(
            [str(CONSOLE_SCRIPT), "verify", str(db)],
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
        )
        os.close(terminal)
        terminal = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert result.returncode == 0
    assert result.stdout.decode().startswith(f"OK: {N + 1} entries intact")
    assert b"verifying [" in drawn
    assert f"{N + 1}/{N + 1}".encode() in drawn

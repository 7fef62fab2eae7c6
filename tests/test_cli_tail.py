"""``auditmw tail``: the newest events, one line each (colour on a terminal, never a
control character from the log), and ``--follow`` as a real child process."""

from __future__ import annotations

import asyncio
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from auditmw import NewEvent
from auditmw._cli import ExitCode
from auditmw._stores.open import open_store

from ._command import cli, on_terminal
from ._paths import ROOT
from ._streams import append_events


def test_tail_shows_the_newest_matching_events_oldest_first(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(str(store_path), 30)
    code, out, err = cli(capsys, "tail", str(store_path), "-n", "3")
    assert (code, err) == (ExitCode.OK, "")
    lines = out.splitlines()
    assert [line.split("  ")[1] for line in lines] == ["default#28", "default#29", "default#30"]
    assert lines[0].split("  ")[2:] == ["success", "-", "item.created", "item/27", "-"]
    code, out, _ = cli(capsys, "tail", str(store_path), "--resource-id", "5")
    assert [line.split("  ")[1] for line in out.splitlines()] == ["default#6"]
    assert "\033[" not in out  # no colour into a pipe or file


def test_a_value_cannot_move_the_cursor_or_recolour_the_terminal(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def write() -> None:
        async with open_store(str(store_path)) as store:
            await store.append(
                NewEvent(action="a\x1b[2Jb", resource="r\rx", user_email="eve\x1b]0;hi\x07")
            )

    asyncio.run(write())
    code, out, _ = cli(capsys, "tail", str(store_path))
    assert code == ExitCode.OK
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert out.count("\n") == 1
    assert "a\N{REPLACEMENT CHARACTER}[2Jb" in out


def test_bad_arguments(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    append_events(str(store_path), 1)
    code, _, err = cli(capsys, "tail", str(store_path), "-n", "5000")
    assert code == ExitCode.USAGE and "--lines" in err
    code, _, err = cli(capsys, "tail", str(store_path), "--from", "never")
    assert code == ExitCode.USAGE and err.startswith("auditmw tail: --from: ")


def test_colour_on_a_terminal(store_path: Path) -> None:
    append_events(str(store_path), 1)
    code, shown = on_terminal("tail", str(store_path))
    assert code == 0
    assert b"\033[32msuccess\033[0m" in shown
    assert b"\033[1mitem.created\033[0m" in shown


def test_follow_prints_each_new_event_until_ctrl_c(store_path: Path) -> None:
    append_events(str(store_path), 2)
    child = subprocess.Popen(
        [sys.executable, "-m", "auditmw", "tail", str(store_path), "--follow", "-n", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    lines: queue.Queue[bytes] = queue.Queue()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert b"default#2" in lines.get(timeout=30)
        append_events(str(store_path), 1, action="later.one")
        assert b"default#3" in (line := lines.get(timeout=30)) and b"later.one" in line
        append_events(str(store_path), 1, log="other")
        assert b"other#1" in lines.get(timeout=30)
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == ExitCode.INTERRUPTED
    finally:
        child.kill()
        child.wait()
        reader.join(timeout=10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()

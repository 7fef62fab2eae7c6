"""``auditmw export`` and ``auditmw verify --jsonl``: in-process through ``main()`` and, for
stdout, stdin and the terminal progress bar, as a real child process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from auditmw import EventFilter, NewEvent, SQLiteStore
from auditmw._admin.export import export_chunks
from auditmw._cli import main

from ._command import on_terminal
from ._paths import ROOT
from .test_query import SAMPLE, write_events


@pytest.fixture
def seeded(store_path: Path) -> Path:
    asyncio.run(write_events(store_path, SAMPLE))
    return store_path


def library_export(store_path: Path, format: str, f: EventFilter) -> bytes:
    async def run() -> bytes:
        async with SQLiteStore(store_path, create=False) as store:
            chunks = export_chunks(store.iter_events(f), format)  # type: ignore[arg-type]
            return b"".join([chunk async for chunk in chunks])

    return asyncio.run(run())


def count_events(store_path: Path) -> int:
    async def run() -> int:
        async with SQLiteStore(store_path, create=False) as store:
            return await store.count()

    return asyncio.run(run())


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "auditmw", *args], input=stdin, capture_output=True, cwd=ROOT
    )


@pytest.mark.parametrize(
    ("flags", "f"),
    [
        ([], EventFilter()),
        (["--user-id", "u1"], EventFilter(user_id="u1")),
        (["--user-email", "bob@example.com"], EventFilter(user_email="bob@example.com")),
        (["--action", "project.*"], EventFilter(action="project.*")),
        (
            ["--resource", "project", "--resource-id", "P-1"],
            EventFilter(resource="project", resource_id="P-1"),
        ),
        (["--outcome", "denied"], EventFilter(outcome="denied")),
        (
            ["--from", "2024-05-02", "--to", "2024-05-02"],
            EventFilter(since="2024-05-02T00:00:00.000000Z", until="2024-05-03T00:00:00.000000Z"),
        ),
        (["--search", "EXAMPLE"], EventFilter(search="EXAMPLE")),
    ],
)
@pytest.mark.parametrize("format", ["csv", "jsonl"])
def test_export_writes_what_the_routes_write(
    seeded: Path, tmp_path: Path, flags: list[str], f: EventFilter, format: str
) -> None:
    output = tmp_path / f"out.{format}"
    assert main(["export", str(seeded), "--format", format, *flags, "-o", str(output)]) == 0
    assert output.read_bytes() == library_export(seeded, format, f)
    assert count_events(seeded) == len(SAMPLE)  # the CLI reads; it records nothing


def test_a_whole_jsonl_export_verifies(
    seeded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "all.jsonl"
    assert main(["export", f"sqlite:///{seeded}", "--format", "jsonl", "-o", str(output)]) == 0
    capsys.readouterr()
    assert main(["verify", "--jsonl", str(output)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {len(SAMPLE)} entries intact, the whole log from seq 1")
    assert main(["verify", "--jsonl", str(output), "--complete"]) == 0
    capsys.readouterr()
    assert main(["verify", "--jsonl", str(output), "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["subset"] is False and report["entries"] == len(SAMPLE)


def test_a_filtered_export_is_reported_as_a_subset(
    seeded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "u1.jsonl"
    assert (
        main(["export", str(seeded), "--format", "jsonl", "--user-id", "u1", "-o", str(output)])
        == 0
    )
    capsys.readouterr()
    assert main(["verify", "--jsonl", str(output)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SUBSET: 3 entries intact") and "filtered export" in out
    assert "gap" not in out  # the missing entries are expected: not listed as damage
    assert main(["verify", "--jsonl", str(output), "--complete"]) == 1


def test_a_tampered_line_is_damage(
    seeded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "all.jsonl"
    assert main(["export", str(seeded), "--format", "jsonl", "-o", str(output)]) == 0
    lines = output.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"outcome":"success"', b'"outcome":"failure"')
    output.write_bytes(b"".join(lines))
    capsys.readouterr()
    assert main(["verify", "--jsonl", str(output)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("DAMAGED") and "seq 3: modified" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["export", "{store}", "--format", "csv", "--from", "yesterday"],
            "--from: 'yesterday' is not an ISO 8601",
        ),
        (["export", "{store}", "--format", "csv", "--to", "2024-02-30"], "--to:"),
        (
            ["export", "{store}", "--format", "csv", "--outcome", "maybe"],
            "--outcome: 'maybe' is not one of",
        ),
        (
            ["export", "{store}", "--format", "csv", "--search", "a\nb"],
            "--search: must not contain control",
        ),
        (
            ["export", "{store}", "--format", "csv", "--user-id", "x" * 2000],
            "--user-id: is longer than",
        ),
        (
            ["export", "{store}", "--format", "csv", "--from", "2024-05-02", "--to", "2024-05-01"],
            "--to: must be later",
        ),
        (["export", "{store}", "--format", "xml"], "invalid choice"),
        (["export", "{store}"], "--format"),
        (["export", "{missing}", "--format", "csv"], "no such file"),
        (["verify"], "give a STORE, or --jsonl FILE"),
        (["verify", "{store}", "--jsonl", "{missing}"], "not both"),
        (["verify", "{store}", "--complete"], "--complete goes with --jsonl"),
        (["verify", "{store}", "--reserialized"], "--reserialized goes with --jsonl"),
        (["verify", "--jsonl", "{missing}"], "No such file"),
    ],
)
def test_bad_input_is_exit_2_and_one_line(
    seeded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    output = tmp_path / "never.csv"
    values = {"store": str(seeded), "missing": str(tmp_path / "missing.db")}
    argv = [arg.format(**values) for arg in args]
    if argv[0] == "export":
        argv += ["-o", str(output)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not output.exists()  # nothing half-written


def test_export_to_stdout_and_verify_from_stdin(seeded: Path) -> None:
    exported = run_cli("export", str(seeded), "--format", "jsonl")
    assert exported.returncode == 0 and exported.stderr == b""
    assert exported.stdout == library_export(seeded, "jsonl", EventFilter())
    verified = run_cli("verify", "--jsonl", "-", stdin=exported.stdout)
    assert verified.returncode == 0 and verified.stdout.startswith(b"OK: ")
    csv_out = run_cli("export", str(seeded), "--format", "csv", "--action", "auth.*")
    assert csv_out.returncode == 0 and csv_out.stdout.startswith(b"Timestamp,User,Action,")
    assert csv_out.stdout.count(b"\r\n") == 3  # header and the two auth.login events


def test_progress_bar_only_on_a_terminal(seeded: Path, tmp_path: Path) -> None:
    async def grow() -> None:
        async with SQLiteStore(seeded) as store:
            await asyncio.gather(
                *(store.append(NewEvent("bulk.x", "r", str(i))) for i in range(25_000))
            )

    asyncio.run(grow())
    output = tmp_path / "out.csv"
    quiet = run_cli("export", str(seeded), "--format", "csv", "-o", str(output))
    assert quiet.returncode == 0 and quiet.stderr == b""  # not a terminal: no bar

    code, shown = on_terminal(
        "export", str(seeded), "--format", "csv", "-o", str(output), stream="stderr", timeout=None
    )
    assert code == 0
    assert b"exporting" in shown and b"100%" in shown

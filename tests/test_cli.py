"""The command line as a whole: one exit-code table (the same in docs/cli.md), a broken
pipe that is not damage, the optional ``cryptography`` extra missing on every path that
needs it, ``verify``'s two modes, and the deprecated names of the checkpoint reports.

Broken pipes and the missing extra are tested in real child processes: a real pipe closed
early, and a ``sitecustomize`` on ``PYTHONPATH`` that makes ``cryptography`` unimportable.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import auditmw
from auditmw import Checkpointing, DirectorySink, NewEvent, SigningKey, SQLiteStore
from auditmw._cli import COMMANDS, ExitCode, main
from auditmw._stores.jsonl import JsonlReport
from auditmw._stores.report import Report
from auditmw._stores.verify_report import VerifyReport
from auditmw._transparency import external
from auditmw._transparency.checkpoint_report import CheckpointReport
from auditmw._transparency.notes import save_verifier_key

from ._paths import ROOT

CLI_DOC = ROOT / "docs" / "cli.md"
BLOCK_CRYPTOGRAPHY = """
import importlib.abc, sys

class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ImportError(f"No module named {name!r} (blocked by this test)")
        return None

sys.meta_path.insert(0, _Blocked())
"""


def auditmw_process(
    *args: str, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "auditmw", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kwargs,  # type: ignore[call-overload]
    )


def run_auditmw(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    process = auditmw_process(*args, env=env)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


# --- the exit-code table -------------------------------------------------------------------


def documented_exit_codes() -> dict[int, str]:
    text = CLI_DOC.read_text()
    section = text.split("## Exit codes", 1)[1]
    rows = re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", section, re.M)
    return {int(code): name for code, name in rows}


def test_the_exit_codes_in_docs_cli_md_are_the_table() -> None:
    assert documented_exit_codes() == {code.value: code.name for code in ExitCode}


def test_the_exit_codes_are_the_documented_contract() -> None:
    """0 ok, 1 damaged, 2 usage, 3 store unreachable: what scripts already rely on."""
    assert (ExitCode.OK, ExitCode.DAMAGED, ExitCode.USAGE, ExitCode.UNAVAILABLE) == (0, 1, 2, 3)
    assert ExitCode.BROKEN_PIPE not in (ExitCode.DAMAGED, ExitCode.OK)


def test_every_command_has_its_module_and_help() -> None:
    names = [command.name for command in COMMANDS]
    assert names == [
        "verify",
        "export",
        "archive",
        "prune",
        "hold",
        "erase",
        "prove",
        "keygen",
        "stream",
        "streams",
        "tail",
    ]
    for command in COMMANDS:
        assert command.run.__module__ == f"auditmw._cli.{command.name}"
        assert command.help and command.description


# --- stores for the child processes --------------------------------------------------------


def fill(path: Path, events: int, *, key: SigningKey | None = None, pad: int = 0) -> None:
    async def write() -> None:
        checkpointing = Checkpointing(key) if key is not None else None
        async with SQLiteStore(path, checkpointing=checkpointing) as store:
            await asyncio.gather(
                *(
                    store.append(
                        NewEvent(
                            action="doc.read",
                            resource="doc",
                            resource_id=str(i),
                            details={"pad": "x" * pad},
                        )
                    )
                    for i in range(events)
                )
            )

    asyncio.run(write())


# --- a broken pipe -------------------------------------------------------------------------


def test_export_into_a_pipe_closed_early_exits_quietly_with_the_broken_pipe_code(
    tmp_path: Path,
) -> None:
    """``auditmw export ... | head -1``: the export is far larger than a pipe's buffer,
    so the reader closing after one line makes the writer's next write fail."""
    store = tmp_path / "audit.db"
    fill(store, 200, pad=2000)  # about 450 kB of JSON Lines
    with auditmw_process("export", str(store), "--format", "jsonl") as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        assert first.startswith(b"{")
        process.stdout.close()
        assert process.wait(timeout=120) == ExitCode.BROKEN_PIPE == 141
        assert process.stderr.read() == b""  # no traceback, no "Exception ignored" at exit


def test_the_same_export_into_an_open_pipe_is_ok(tmp_path: Path) -> None:
    store = tmp_path / "audit.db"
    fill(store, 200, pad=2000)
    code, out, err = run_auditmw("export", str(store), "--format", "jsonl")
    assert (code, err) == (ExitCode.OK, b"")
    assert out.count(b"\n") == 200


# --- without the optional cryptography -------------------------------------------------------


@pytest.fixture
def without_cryptography(tmp_path: Path) -> dict[str, str]:
    """The environment of a child process in which ``import cryptography`` fails."""
    site = tmp_path / "no-cryptography"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_CRYPTOGRAPHY)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def signed_store(tmp_path: Path) -> tuple[Path, Path]:
    """A store holding signed checkpoints, and the verifier key file."""
    key = SigningKey.generate("audit.example.com")
    public = tmp_path / "audit.pub"
    save_verifier_key(key.verifier, public)
    store = tmp_path / "audit.db"
    fill(store, 5, key=key)
    return store, public


def test_the_blocker_blocks(without_cryptography: dict[str, str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import cryptography"],
        env=without_cryptography,
        capture_output=True,
    )
    assert probe.returncode != 0 and b"blocked by this test" in probe.stderr


def assert_missing_extra(code: int, out: bytes, err: bytes) -> None:
    assert code == ExitCode.MISSING_EXTRA, err
    assert b"Traceback" not in err and err.count(b"\n") == 1, err
    assert b"needs the cryptography package" in err
    assert b"pip install 'auditmw[checkpoints]'" in err
    assert out == b""


def test_keygen_without_cryptography(without_cryptography: dict[str, str], tmp_path: Path) -> None:
    prefix = tmp_path / "keys" / "audit"
    result = run_auditmw(
        "keygen", "audit.example.com", "--out", str(prefix), env=without_cryptography
    )
    assert_missing_extra(*result)
    assert not prefix.parent.exists()  # nothing written


@pytest.mark.parametrize("extra", [[], ["--checkpoint", "{checkpoint}"], ["--sink", "{sink}"]])
def test_verify_public_key_without_cryptography(
    without_cryptography: dict[str, str],
    signed_store: tuple[Path, Path],
    tmp_path: Path,
    extra: list[str],
) -> None:
    store, public = signed_store
    checkpoint = tmp_path / "q1.checkpoint"
    checkpoint.write_bytes(b"not checked: the extra is missing first\n")
    (tmp_path / "sink").mkdir()
    values = {"checkpoint": str(checkpoint), "sink": str(tmp_path / "sink")}
    args = [arg.format(**values) for arg in extra]
    result = run_auditmw(
        "verify", str(store), "--public-key", str(public), *args, env=without_cryptography
    )
    assert_missing_extra(*result)


def test_what_needs_no_signature_works_without_cryptography(
    without_cryptography: dict[str, str], signed_store: tuple[Path, Path]
) -> None:
    store, _ = signed_store
    code, out, err = run_auditmw("verify", str(store), env=without_cryptography)
    assert (code, err) == (ExitCode.OK, b""), err
    assert out.startswith(b"OK: 6 entries intact")  # the key record and five events
    assert b"not checked (give --public-key)" in out
    code, out, err = run_auditmw("prove", str(store), "--seq", "2", env=without_cryptography)
    assert (code, err) == (ExitCode.OK, b""), err
    assert b'"anchored": true' in out
    code, out, err = run_auditmw("export", str(store), "--format", "csv", env=without_cryptography)
    assert (code, err) == (ExitCode.OK, b""), err


def test_signing_without_cryptography_names_the_extra(
    without_cryptography: dict[str, str], tmp_path: Path
) -> None:
    """The library's paths too: reading a signing key (to open a store that signs
    checkpoints) fails with one clear error, not an ImportError from deep inside."""
    key = SigningKey.generate("audit.example.com")
    script = (
        "import auditmw\n"
        "from auditmw._transparency.notes import MissingExtraError\n"
        "try:\n"
        f"    auditmw.SigningKey.parse({key.encode()!r})\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=without_cryptography, capture_output=True
    )
    assert result.returncode == 0, result.stderr
    assert b"needs the cryptography package: pip install 'auditmw[checkpoints]'" in result.stdout


# --- verify's modes ---------------------------------------------------------------------------


def test_verify_help_shows_its_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "auditmw verify STORE [--json]" in out
    assert "auditmw verify STORE --public-key KEY" in out
    assert "auditmw verify --jsonl FILE" in out
    for group in ("a store", "signed checkpoints", "a JSON Lines export"):
        assert group in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jsonl", "x.jsonl", "--checkpoint", "c"], "checked against a STORE, not --jsonl"),
        (["--jsonl", "x.jsonl", "--sink", "d"], "checked against a STORE, not --jsonl"),
        (["{store}", "--sink", "d"], "--sink needs --public-key"),
        (["{store}", "--checkpoint", "c"], "--checkpoint needs --public-key"),
        (["{store}", "--origin-prefix", "p"], "--origin-prefix needs --public-key"),
        (["{store}", "--max-findings", "-1"], "--max-findings must be zero or more"),
    ],
)
def test_an_option_of_the_other_mode_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = ["verify", *(arg.format(store=tmp_path / "audit.db") for arg in args)]
    assert main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.fixture
def everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """A store that issued checkpoints to a sink, its verifier key, one checkpoint file
    and a JSON Lines export of the whole log."""
    key = SigningKey.generate("audit.example.com")
    save_verifier_key(key.verifier, tmp_path / "audit.pub")
    sink = tmp_path / "sink"

    async def write() -> None:
        checkpointing = Checkpointing(key, sink=DirectorySink(sink))
        async with SQLiteStore(tmp_path / "audit.db", checkpointing=checkpointing) as store:
            for i in range(4):
                await store.append(NewEvent(action="doc.read", resource="doc", resource_id=str(i)))

    asyncio.run(write())
    (first,) = sorted(sink.rglob("*.checkpoint"))[:1]
    assert (
        main(
            [
                "export",
                str(tmp_path / "audit.db"),
                "--format",
                "jsonl",
                "-o",
                str(tmp_path / "all.jsonl"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    return {
        "store": str(tmp_path / "audit.db"),
        "key": str(tmp_path / "audit.pub"),
        "sink": str(sink),
        "checkpoint": str(first),
        "export": str(tmp_path / "all.jsonl"),
    }


@pytest.mark.parametrize(
    "args",
    [
        "verify {store}",
        "verify {store} --json",
        "verify {store} --max-findings 5",
        "verify {store} --public-key {key}",
        "verify {store} --public-key {key} --public-key {key} --json",
        "verify {store} --public-key {key} --checkpoint {checkpoint}",
        "verify {store} --public-key {key} --sink {sink}",
        "verify {store} --public-key {key} --origin-prefix audit.example.com",
        "verify --jsonl {export}",
        "verify --jsonl {export} --complete --json",
        "verify --jsonl {export} --reserialized --max-findings 0",
    ],
)
def test_every_verify_invocation_of_before_still_works(
    everything: dict[str, str], capsys: pytest.CaptureFixture[str], args: str
) -> None:
    assert main(args.format(**everything).split()) == ExitCode.OK
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("OK") or '"ok": true' in out


def test_verify_an_export_from_standard_input(everything: dict[str, str]) -> None:
    with open(everything["export"], "rb") as lines:
        result = subprocess.run(
            [sys.executable, "-m", "auditmw", "verify", "--jsonl", "-", "--complete"],
            stdin=lines,
            capture_output=True,
        )
    assert (result.returncode, result.stderr) == (ExitCode.OK, b"")
    assert result.stdout.startswith(b"OK: 5 entries intact, the whole log from seq 1")


# --- one report shape -------------------------------------------------------------------------


def test_every_verify_report_has_the_shared_shape() -> None:
    chain = VerifyReport()
    for report in (chain, JsonlReport(), CheckpointReport(chain)):
        assert isinstance(report, Report)
        assert report.ok and report.findings == [] and report.logs == {}
        assert report.warnings == [] and report.details() == []
        assert report.summary().startswith("OK")
        assert report.to_json()["ok"] is True


def test_a_jsonl_report_that_must_be_complete_is_not_ok_as_a_subset() -> None:
    subset = JsonlReport(gaps=1)
    assert subset.ok and subset.subset
    required = JsonlReport(gaps=1, missing_ranges=["line 1: log 'default' seq 1 not in the file"])
    required.complete_required = True
    assert not required.ok and required.incomplete
    assert required.details() == ["  line 1: log 'default' seq 1 not in the file"]


# --- renamed names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        (auditmw, "AnchorReport", "CheckpointReport"),
        (auditmw, "check_anchors", "check_checkpoints"),
        (external, "AnchorReport", "CheckpointReport"),
        (external, "AnchorFinding", "CheckpointFinding"),
        (external, "AnchorChecker", "CheckpointChecker"),
        (external, "LogAnchors", "LogCheckpoints"),
        (external, "check_anchors", "check_checkpoints"),
    ],
)
def test_the_old_names_still_work_with_a_deprecation_warning(
    module: object, old: str, new: str
) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use .*{new}"):
        value = getattr(module, old)
    assert value.__name__ == new
    assert old not in getattr(module, "__all__", ())

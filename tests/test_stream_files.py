"""``auditmw stream --once`` to a directory of segments (``file://``), and ``auditmw
streams``: on SQLite and PostgreSQL, through ``main()``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from auditmw import EventFilter
from auditmw._cli import ExitCode
from auditmw._stores.open import open_store
from auditmw._streams.files import segment_name

from ._command import cli
from ._streams import append_events, export_lines, segment_lines, stream_json


@pytest.fixture
def url(store_url_factory: Callable[[], str]) -> str:
    return store_url_factory()


def test_once_delivers_every_log_in_verifiable_segments(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 25)
    append_events(url, 4, log="tenant/a")
    out = tmp_path / "segments"
    code, _, err = cli(
        capsys, "stream", url, "--to", f"file://{out}", "--once", "--batch-size", "10"
    )
    assert code == ExitCode.OK, err
    assert "delivered 29" in err
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [
            segment_name("default", 1, 10),
            segment_name("default", 11, 20),
            segment_name("default", 21, 25),
            segment_name("tenant/a", 1, 4),
        ]
    )
    assert segment_name("tenant/a", 1, 4) == "tenant%2Fa-000000000001-000000000004.jsonl.gz"
    # Every line is the export's line of the event, byte for byte.
    assert sorted(segment_lines(out)) == sorted(export_lines(url))
    # Each segment verifies offline, compressed as it is.
    for segment in out.iterdir():
        code, report, err = cli(capsys, "verify", "--jsonl", str(segment))
        assert code == ExitCode.OK, (segment, report, err)
    code, _, _ = cli(
        capsys, "verify", "--jsonl", str(out / segment_name("default", 11, 20)), "--complete"
    )
    assert code == ExitCode.DAMAGED  # a later segment is not the whole log

    code, output, _ = cli(capsys, "streams", url, "--json")
    stream = stream_json(output)
    assert stream["name"] == "default"
    assert stream["settings"]["destination"] == f"file://{out}"
    assert stream["lease_owner"] is None  # released at exit
    assert [
        (log["log"], log["cursor"], log["head"], log["lag_events"]) for log in stream["logs"]
    ] == [
        ("default", 25, 25, 0),
        ("tenant/a", 4, 4, 0),
    ]
    assert stream["last_error"] is None and stream["delivered_at"] is not None


def test_a_second_run_delivers_only_what_is_new(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "segments"
    append_events(url, 5)
    assert cli(capsys, "stream", url, "--to", f"file://{out}", "--once")[0] == ExitCode.OK
    code, _, err = cli(capsys, "stream", url, "--to", f"file://{out}", "--once")
    assert (code, "delivered 0" in err) == (ExitCode.OK, True)
    assert len(list(out.iterdir())) == 1
    append_events(url, 3)
    code, lines, _ = cli(capsys, "streams", url)
    assert "lag 3 events" in lines
    assert cli(capsys, "stream", url, "--to", f"file://{out}", "--once")[0] == ExitCode.OK
    assert sorted(path.name for path in out.iterdir()) == [
        segment_name("default", 1, 5),
        segment_name("default", 6, 8),
    ]
    assert segment_lines(out) == export_lines(url)


def test_streams_with_other_names_keep_their_own_cursors(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 3)
    for name in ("siem", "archive"):
        target = f"file://{tmp_path / name}"
        assert cli(capsys, "stream", url, "--to", target, "--name", name, "--once")[0] == 0
    append_events(url, 2)
    assert (
        cli(
            capsys, "stream", url, "--to", f"file://{tmp_path / 'siem'}", "--name", "siem", "--once"
        )[0]
        == 0
    )
    _code, output, _ = cli(capsys, "streams", url, "--json")
    cursors = {s["name"]: s["logs"][0]["cursor"] for s in orjson.loads(output)["streams"]}
    assert cursors == {"archive": 3, "siem": 5}


def test_a_filtered_stream_delivers_only_matches_and_moves_past_the_rest(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 3, action="user.login")
    append_events(url, 4, action="item.created")
    append_events(url, 2, action="user.logout")
    out = tmp_path / "users"
    code, _, err = cli(
        capsys, "stream", url, "--to", f"file://{out}", "--once", "--action", "user.*"
    )
    assert code == ExitCode.OK, err
    assert segment_lines(out) == export_lines(url, EventFilter(action="user.*"))
    code, output, _ = cli(capsys, "streams", url, "--json")
    stream = stream_json(output)
    assert stream["logs"][0]["cursor"] == 9
    assert stream["settings"]["filter"] == {"action": "user.*"}


def test_a_destination_that_cannot_be_written_stops_the_stream_with_its_error(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 3)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # A directory under a regular file cannot exist, whoever runs the test (root too).
    code, _, err = cli(capsys, "stream", url, "--to", f"file://{blocker}/segments", "--once")
    assert code == ExitCode.REFUSED
    assert err.startswith("auditmw stream: default: stopped: ")
    assert "Not a directory" in err
    code, output, _ = cli(capsys, "streams", url, "--json")
    stream = stream_json(output)
    assert "Not a directory" in stream["last_error"]
    assert stream["logs"][0]["cursor"] == 0 and stream["logs"][0]["lag_events"] == 3
    code, lines, _ = cli(capsys, "streams", url)
    assert "last error: refused (stream stopped)" in lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "ftp://host/x"], "unsupported stream destination"),
        (["--to", "file://relative/dir"], "file:///absolute/directory"),
        (["--to", "nats://127.0.0.1:4222/"], "nats://host:port/SUBJECT"),
        (["--to", "nats://127.0.0.1:4222/a.*"], "wildcards"),
        (["--to", "file:///tmp/x", "--from", "yesterday"], "--from: "),
        (["--to", "file:///tmp/x", "--format", "xml"], "invalid choice"),
        (["--to", "file:///tmp/x", "--batch-size", "0"], "--batch-size"),
        (["--to", "file:///tmp/x", "--give-up-after", "-1"], "--give-up-after"),
        (["--to", "file:///tmp/x", "--lease-seconds", "0"], "--lease-seconds"),
        (["--to", "file:///tmp/x", "--to-unknown", "1"], "unrecognized arguments"),
        (["--to", "file:///tmp/x", "--outcome", "maybe"], "--outcome"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = cli(capsys, "stream", str(tmp_path / "audit.db"), *args, "--once")
    assert code == ExitCode.USAGE
    assert message in err, err
    assert "Traceback" not in err


def test_a_missing_store_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "streams", str(tmp_path / "missing.db"))
    assert code == ExitCode.USAGE and "no such file" in err
    code, _, err = cli(
        capsys, "stream", str(tmp_path / "missing.db"), "--to", "file:///tmp/x", "--once"
    )
    assert code == ExitCode.USAGE and "no such file" in err


def test_streams_of_a_store_without_any(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    append_events(url, 1)
    assert cli(capsys, "streams", url) == (ExitCode.OK, "no streams\n", "")
    assert orjson.loads(cli(capsys, "streams", url, "--json")[1]) == {"streams": []}


def test_from_a_date_replays_each_log_from_its_first_event_at_or_after_it(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 6)
    append_events(url, 2, log="later")  # every event of this log is after the point
    third = orjson.loads(export_lines(url)[2])
    assert third["seq"] == 3
    out = tmp_path / "segments"
    code, _, err = cli(
        capsys, "stream", url, "--to", f"file://{out}", "--once", "--from", third["timestamp"]
    )
    assert code == ExitCode.OK, err
    lines = [orjson.loads(line) for line in segment_lines(out)]
    assert [(line["log"], line["seq"]) for line in lines] == [
        ("default", 3),
        ("default", 4),
        ("default", 5),
        ("default", 6),
        ("default", 7),  # the reset, recorded in the log and so delivered too
        ("later", 1),
        ("later", 2),
    ]
    reset = lines[4]
    assert reset["action"] == "audit.stream_reset"
    assert reset["details"] == {
        "from": third["timestamp"],
        "cursors_before": {},
        "cursors_after": {"default": 2, "later": 0},
    }
    # A day before everything: from the start; a seq past the head: nothing.
    code, _, err = cli(
        capsys, "stream", url, "--to", f"file://{out}", "--once", "--from", "2000-01-01"
    )
    assert "delivered 10" in err  # the 8 events, the first reset, and this one
    code, _, err = cli(capsys, "stream", url, "--to", f"file://{out}", "--once", "--from", "999")
    assert "delivered 1" in err  # only the new reset event


def test_a_second_forwarder_says_it_waits_and_takes_over_when_the_lease_expires(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 2)

    async def hold() -> None:
        async with open_store(url) as store:
            now = time.time()
            state = await store.backend.claim_stream("default", "elsewhere:1", now, now + 1, "t")
            assert state is not None

    asyncio.run(hold())
    code, _, err = cli(capsys, "stream", url, "--to", f"file://{tmp_path / 'out'}", "--once")
    assert code == ExitCode.OK, err
    assert "the stream is held by elsewhere:1; waiting for it" in err
    assert "delivered 2" in err

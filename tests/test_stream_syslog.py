"""The syslog destination against Debian's rsyslogd (tests/_rsyslog.py): every event
arrives as an RFC 5424 message rsyslog parses back into the fields we sent (PRI from the
outcome, the timestamp, MSGID from the action, the structured data with id, log, seq and
hash escaped, the record as MSG), over TCP and over TLS with a CA the test made; a server
that is down is retried, one that closed the connection is noticed before a batch is
counted as delivered."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditmw import EventFilter, NewEvent
from auditmw._cli import ExitCode
from auditmw._stores.open import open_store
from auditmw._streams.destination import DeliveryBatch, TemporaryDeliveryError
from auditmw._streams.formats import NativeFormat
from auditmw._streams.syslog import SD_ID, SyslogDestination

from ._command import cli
from ._rsyslog import Rsyslog, running_rsyslog
from ._streams import append_events, export_lines, stream_json
from ._tls import make_certificates
from ._waiting import until

HOSTILE = [
    NewEvent(action="user.sign_in", resource="session", user_id="u1"),
    NewEvent(action="user.sign_in", resource="session", outcome="failure"),
    NewEvent(action="doc.read", resource="doc", outcome="denied", resource_id='a"]\\b'),
    NewEvent(action="bad action ünïcode]\n" + "x" * 40, resource="r", details={"é": "日本"}),
    NewEvent(action="x.y", resource="r", log='tenant "a" [b]\\c'),
]
_SD_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_sd(sd: str) -> tuple[str, dict[str, str]]:
    """The one SD-ELEMENT of ``sd``: its SD-ID and unescaped parameters (RFC 5424)."""
    assert sd.startswith("[") and sd.endswith("]"), sd
    sd_id, _, params = sd[1:-1].partition(" ")
    values = {name: re.sub(r"\\(.)", r"\1", value) for name, value in _SD_PARAM.findall(params)}
    return sd_id, values


def check_messages(messages: list[dict[str, Any]], lines: list[bytes]) -> None:
    """Each rsyslog-parsed message is the native record of its line, fields and all."""
    assert len(messages) == len(lines)
    for message, line in zip(messages, lines, strict=True):
        event = orjson.loads(line)
        severity = {"success": 6, "failure": 5, "denied": 4}[event["outcome"]]
        assert int(message["pri"]) == 13 * 8 + severity
        assert message["timestamp"] == event["timestamp"]
        assert message["app"] == "auditmw"
        msgid = re.sub(r"[^\x21-\x7e]", "_", event["action"])
        assert message["msgid"] == msgid[:32]
        sd_id, params = parse_sd(message["sd"])
        assert sd_id == SD_ID
        assert params == {
            "id": event["id"],
            "log": event["log"],
            "seq": str(event["seq"]),
            "hash": event["hash"],
        }
        assert message["msg"].encode() + b"\n" == line  # the record, byte for byte


@pytest.fixture
def url(store_url_factory: Callable[[], str]) -> str:
    return store_url_factory()


def append(url: str, events: list[NewEvent]) -> None:
    async def run() -> None:
        async with open_store(url) as store:
            for event in events:
                await store.append(event)

    asyncio.run(run())


def received(server: Rsyslog, count: int) -> list[dict[str, Any]]:
    asyncio.run(until(lambda: len(server.received()) >= count))
    return server.received()


def test_once_over_tcp_every_event_parses_back(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append(url, HOSTILE)
    append_events(url, 20)
    with running_rsyslog(tmp_path / "rsyslog") as server:
        target = f"syslog+tcp://127.0.0.1:{server.port}"
        code, _, err = cli(capsys, "stream", url, "--to", target, "--once", "--batch-size", "7")
        assert code == ExitCode.OK, err
        lines = export_lines(url)
        # rsyslog writes in arrival order: one connection, so the stream's order.
        check_messages(received(server, len(lines)), lines)
    code, output, _ = cli(capsys, "streams", url, "--json")
    assert stream_json(output)["settings"]["destination"] == target


def test_tls_with_a_private_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "audit.db")
    append(url, HOSTILE)
    certs = make_certificates(tmp_path / "tls")
    with running_rsyslog(tmp_path / "rsyslog", tls=certs) as server:
        target = f"syslog+tls://127.0.0.1:{server.port}"
        code, _, err = cli(capsys, "stream", url, "--to", target, "--once")
        assert code == ExitCode.REFUSED  # the system's CAs do not know the test's
        assert "certificate" in err
        code, _, err = cli(
            capsys, "stream", url, "--to", target, "--once", "--ca-file", str(certs.ca_file)
        )
        assert code == ExitCode.OK, err
        lines = export_lines(url)
        check_messages(received(server, len(lines)), lines)


def test_a_server_that_is_down_is_retried_until_given_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "audit.db")
    append_events(url, 2)
    with running_rsyslog(tmp_path / "rsyslog") as server:
        port = server.port
    code, _, err = cli(
        capsys, "stream", url, "--to", f"syslog+tcp://127.0.0.1:{port}", "--once",
        "--give-up-after", "0.5",
    )  # fmt: skip
    assert code == ExitCode.UNAVAILABLE, err
    assert "gave up" in err


async def test_a_closed_connection_is_noticed_and_the_batch_sent_again(tmp_path: Path) -> None:
    url = str(tmp_path / "audit.db")
    async with open_store(url) as store:
        for n in range(4):
            await store.append(NewEvent(action="item.created", resource="item", resource_id=str(n)))
        events = [event async for event in store.iter_events(EventFilter())]
    native = NativeFormat()

    def batch(part: slice) -> DeliveryBatch:
        chosen = events[part]
        return DeliveryBatch("default", chosen, [native.encode(event) for event in chosen])

    with running_rsyslog(tmp_path / "first") as first:
        port = first.port
        destination = SyslogDestination("127.0.0.1", port)
        await destination.open()
        await destination.deliver(batch(slice(0, 2)))
        await until(lambda: len(first.received()) == 2)
    # rsyslogd has stopped (and closed the connection): the next batch is not counted.
    with pytest.raises(TemporaryDeliveryError, match=r"closed|reset|pipe"):
        await destination.deliver(batch(slice(2, 4)))
    await destination.close()
    with running_rsyslog(tmp_path / "second", port=port) as second:
        await destination.open()  # as the forwarder does after a temporary error
        await destination.deliver(batch(slice(2, 4)))
        await destination.close()
        await until(lambda: len(second.received()) == 2)
        assert [m["msg"] for m in second.received()] == [
            native.encode(event).decode() for event in events[2:]
        ]


def test_bad_urls_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "audit.db")
    append_events(url, 1)
    for target in ("syslog+tcp://127.0.0.1", "syslog+tcp://127.0.0.1:514/x", "syslog+udp://h:1"):
        code, _, err = cli(capsys, "stream", url, "--to", target, "--once")
        assert code == ExitCode.USAGE, (target, err)
        assert "Traceback" not in err


def test_ocsf_records_as_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "audit.db")
    append(url, HOSTILE)
    with running_rsyslog(tmp_path / "rsyslog") as server:
        target = f"syslog+tcp://127.0.0.1:{server.port}"
        code, _, err = cli(capsys, "stream", url, "--to", target, "--once", "--format", "ocsf")
        assert code == ExitCode.OK, err
        lines = export_lines(url)
        messages = received(server, len(lines))
    for message, line in zip(messages, lines, strict=True):
        record = orjson.loads(message["msg"])
        assert record["unmapped"]["auditmw"] == orjson.loads(line)
        assert record["class_uid"] in (3001, 3002, 6003)
        assert parse_sd(message["sd"])[1]["id"] == record["metadata"]["uid"]

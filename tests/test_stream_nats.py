"""The NATS JetStream destination against a real server: each event published with
``Nats-Msg-Id`` = its id, acknowledged before the cursor moves; replays de-duplicated by
JetStream; a subject no stream captures is a permanent refusal; a server that is down is
retried with backoff while appends go on, and gets everything once it is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from auditmw import NewEvent, SQLiteStore
from auditmw._cli import ExitCode
from auditmw._streams.forwarder import Backoff, StreamForwarder
from auditmw._streams.nats import NatsDestination

from ._command import cli
from ._nats import (
    jetstream_for_test,
    jetstream_stream,
    private_nats,
    received,
    received_now,
    shared_nats,
)
from ._servers import free_port
from ._streams import append_events, export_lines, stream_json
from ._waiting import eventually


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with shared_nats() as url:
        yield url


@pytest.fixture
def url(store_url_factory: Callable[[], str]) -> str:
    return store_url_factory()


def test_once_publishes_every_event_with_its_id_in_order(
    url: str, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 12)
    append_events(url, 3, log="other")
    with jetstream_for_test(nats_url) as stream:
        target = f"{nats_url}/{stream.subject}"
        code, _, err = cli(capsys, "stream", url, "--to", target, "--once", "--batch-size", "5")
        assert code == ExitCode.OK, err
        messages = received_now(nats_url, stream)
    lines = export_lines(url)  # chain order: by log, then seq
    assert [payload + b"\n" for _, payload in messages] == lines
    assert [msg_id for msg_id, _ in messages] == [orjson.loads(line)["id"] for line in lines]
    code, output, _ = cli(capsys, "streams", url, "--json")
    assert {log["log"]: log["cursor"] for log in stream_json(output)["logs"]} == {
        "default": 12,
        "other": 3,
    }


def test_a_replay_is_recorded_and_jetstream_drops_the_copies(
    url: str, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 10)
    with jetstream_for_test(nats_url) as stream:
        target = f"{nats_url}/{stream.subject}"
        assert cli(capsys, "stream", url, "--to", target, "--once")[0] == ExitCode.OK
        code, _, err = cli(capsys, "stream", url, "--to", target, "--once", "--from", "4")
        assert code == ExitCode.OK, err
        assert "delivered 8" in err  # seq 4 to 10 again, and the reset's own event
        messages = received_now(nats_url, stream)
    assert len(messages) == 11  # the 7 copies were dropped by their Nats-Msg-Id
    reset = orjson.loads(messages[-1][1])
    assert reset["action"] == "audit.stream_reset"
    assert reset["resource_id"] == "default"
    assert reset["details"]["from"] == "4"
    assert reset["details"]["cursors_before"] == {"default": 10}
    assert reset["details"]["cursors_after"] == {"default": 3}


def test_a_subject_no_stream_captures_is_refused_for_good(
    url: str, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 2)
    subject = f"auditmw.nostream.{uuid.uuid4().hex[:12]}"
    code, _, err = cli(capsys, "stream", url, "--to", f"{nats_url}/{subject}", "--once")
    assert code == ExitCode.REFUSED
    assert f"no JetStream stream captures subject {subject!r}" in err
    code, output, _ = cli(capsys, "streams", url, "--json")
    stream = stream_json(output)
    assert "no JetStream stream captures" in stream["last_error"]
    assert stream["logs"][0]["cursor"] == 0


def test_an_unreachable_server_is_retried_then_given_up(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 2)
    closed = f"nats://127.0.0.1:{free_port()}/audit"  # nothing listens there
    code, _, err = cli(capsys, "stream", url, "--to", closed, "--once", "--give-up-after", "0.5")
    assert code == ExitCode.UNAVAILABLE
    assert "gave up after 0.5 s: NATS unreachable" in err
    code, output, _ = cli(capsys, "streams", url, "--json")
    stream = stream_json(output)
    assert stream["last_error"].startswith("temporary (retrying): NATS unreachable")
    assert stream["logs"][0]["cursor"] == 0


async def test_a_server_that_comes_back_gets_every_event_appends_never_wait(
    tmp_path: Path,
) -> None:
    with private_nats() as server:
        async with (
            jetstream_stream(server.url) as stream,
            SQLiteStore(tmp_path / "audit.db") as store,
        ):
            for number in range(5):
                await store.append(NewEvent(action="a", resource="r", resource_id=str(number)))
            server.stop()
            destination = NatsDestination.from_url(f"{server.url}/{stream.subject}?timeout=2", {})
            forwarder = StreamForwarder(
                store, destination, backoff=Backoff(initial=0.05, maximum=0.3)
            )
            task = asyncio.create_task(forwarder.run())

            async def failing() -> bool:
                states = await store.backend.stream_states("default")
                return any("NATS unreachable" in (state.last_error or "") for state in states)

            await eventually(failing)
            # Appends go on while the stream cannot deliver: none waits for it.
            await asyncio.gather(
                *(store.append(NewEvent(action="b", resource="r")) for _ in range(20))
            )
            assert await store.count() == 25
            assert forwarder.delivered == 0
            server.start()

            async def all_delivered() -> bool:
                return len(await received(server.url, stream)) == 25

            await eventually(all_delivered)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            messages = await received(server.url, stream)
            seqs = [orjson.loads(payload)["seq"] for _, payload in messages]
            assert seqs == list(range(1, 26))
            [state] = await store.backend.stream_states("default")
            assert state.cursors == {"default": 25}
            assert state.last_error is None
            assert state.lease_owner is None  # released when cancelled

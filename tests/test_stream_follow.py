"""Following new commits, one forwarder per stream, and crashes: a forwarder in this
process (``StreamForwarder.run``) or ``auditmw stream`` as a child process, killed with
SIGKILL mid-delivery."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from auditmw import AuditStore, NewEvent
from auditmw._stores.open import open_store
from auditmw._stores.stream_state import StreamState
from auditmw._streams.cursor import StreamCursor, StreamLeaseLostError
from auditmw._streams.files import FileDestination
from auditmw._streams.follow import AppendWaiter
from auditmw._streams.forwarder import StreamForwarder

from ._nats import jetstream_for_test, message_count, received_now, shared_nats
from ._paths import ROOT
from ._pg_server import ThrowawayPostgres
from ._streams import append_events, segment_lines
from ._waiting import eventually, until


@pytest.fixture
def url(store_url_factory: Callable[[], str]) -> str:
    return store_url_factory()


def delivered_seqs(directory: Path) -> list[int]:
    return [orjson.loads(line)["seq"] for line in segment_lines(directory)]


async def cursor_at(store: AuditStore, seq: int) -> None:
    """Until stream ``default``'s cursor is at ``seq``: the forwarder counts an event
    once the destination acknowledged it, and moves the cursor just after (stopped in
    between, it delivers the event again: at least once)."""

    async def there() -> bool:
        states = await store.backend.stream_states("default")
        return bool(states) and states[0].cursors.get("default") == seq

    await eventually(there)


async def test_a_following_forwarder_delivers_each_new_commit(url: str, tmp_path: Path) -> None:
    out = tmp_path / "segments"
    async with open_store(url) as store:
        await store.append(NewEvent(action="first", resource="r"))
        forwarder = StreamForwarder(store, FileDestination(out))
        task = asyncio.create_task(forwarder.run())
        await cursor_at(store, 1)
        # Appended by another store (another process would do the same): seen and sent.
        async with open_store(url) as other:
            for number in range(3):
                await other.append(NewEvent(action="later", resource="r", resource_id=str(number)))
                await cursor_at(store, 2 + number)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert delivered_seqs(out) == [1, 2, 3, 4]
        [state] = await store.backend.stream_states("default")
        assert (state.cursors, state.lease_owner) == ({"default": 4}, None)
        assert state.settings == {"destination": out.as_uri(), "format": "native", "filter": {}}


async def test_postgres_commits_are_notified_to_a_follower(pg_schema: str) -> None:
    from ._postgres import store_url

    url = store_url(pg_schema)
    async with open_store(url) as store, open_store(url) as writer:
        # The first claim creates the streams table and the NOTIFY trigger.
        assert await store.backend.claim_stream("s", "me", 0.0, 1.0, "t") is not None
        waiter = AppendWaiter(store.backend)
        await waiter.listen()
        assert waiter.listening
        await writer.append(NewEvent(action="a", resource="r"))
        await until(lambda: waiter.notifications == 1)
        await asyncio.gather(
            *(writer.append(NewEvent(action="a", resource="r")) for _ in range(50))
        )
        # One notification per committed batch (group commit), at least one more.
        await until(lambda: waiter.notifications >= 2)
        await waiter.close()


async def test_one_forwarder_per_stream_delivers_the_other_waits_then_takes_over(
    url: str, tmp_path: Path
) -> None:
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    waits: list[StreamState | None] = []
    async with open_store(url) as first_store, open_store(url) as second_store:
        await first_store.append(NewEvent(action="a", resource="r"))
        first = StreamForwarder(first_store, FileDestination(first_out), lease_seconds=2)
        first_task = asyncio.create_task(first.run())
        await cursor_at(first_store, 1)
        second = StreamForwarder(
            second_store, FileDestination(second_out), lease_seconds=2, on_wait=waits.append
        )
        second_task = asyncio.create_task(second.run())
        await until(lambda: len(waits) == 1)
        holder = waits[0]
        assert holder is not None and holder.lease_owner == first.cursor.owner
        for _ in range(5):
            await first_store.append(NewEvent(action="b", resource="r"))
        await cursor_at(first_store, 6)
        assert second.delivered == 0 and not second_out.exists()
        # The holder stops (gives the lease up): the waiting one takes over from its cursor.
        first_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first_task
        await second_store.append(NewEvent(action="c", resource="r"))
        await until(lambda: second.delivered >= 1 or second_task.done())
        assert not second_task.done(), second_task.exception()
        assert second.delivered == 1, await second_store.backend.stream_states(None)
        second_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second_task
    assert delivered_seqs(first_out) == [1, 2, 3, 4, 5, 6]
    assert delivered_seqs(second_out) == [7]


async def test_a_frozen_holder_loses_the_lease_and_its_writes_are_refused(
    contract_store: AuditStore,
) -> None:
    """A forwarder that stopped renewing (killed, frozen) loses the stream when its lease
    expires; if it wakes up, its cursor write is refused, so it cannot move the cursor of
    the forwarder that took over."""
    await contract_store.append(NewEvent(action="a", resource="r"))
    now = [1000.0]
    backend = contract_store.backend
    frozen = StreamCursor(backend, "default", lease_seconds=5, clock=lambda: now[0])
    taker = StreamCursor(backend, "default", lease_seconds=5, clock=lambda: now[0])
    assert await frozen.claim()
    assert not await taker.claim()
    now[0] += 6  # the lease expired
    assert await taker.claim()
    with pytest.raises(StreamLeaseLostError):
        await frozen.advance("default", 1, delivered=True)
    await taker.advance("default", 1, delivered=True)
    [state] = await backend.stream_states("default")
    assert state.lease_owner == taker.owner and state.cursors == {"default": 1}
    await frozen.release()  # not its lease any more: nothing changes
    assert (await backend.stream_states("default"))[0].lease_owner == taker.owner


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with shared_nats() as url:
        yield url


def test_kill_9_mid_delivery_then_restart_resumes_no_gap_at_most_one_batch_twice(
    url: str, nats_url: str
) -> None:
    events, batch = 10_000, 100
    append_events(url, events)
    # A duplicate window of 100 ms (JetStream's least): the copies a restart sends reach
    # the receiver, which counts them by id.
    with jetstream_for_test(nats_url, duplicate_window=0.1) as stream:
        command = [
            sys.executable, "-m", "auditmw", "stream", url,
            "--to", f"{nats_url}/{stream.subject}",
            "--batch-size", str(batch), "--lease-seconds", "1",
        ]  # fmt: skip
        child = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
        try:

            async def some_delivered() -> bool:
                return await message_count(nats_url, stream) >= 3 * batch

            asyncio.run(eventually(some_delivered))
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        assert child.returncode == -signal.SIGKILL
        before_restart = asyncio.run(message_count(nats_url, stream))
        assert before_restart < events  # killed before the end: the restart has work
        restart = subprocess.run([*command, "--once"], cwd=ROOT, capture_output=True, timeout=120)
        assert restart.returncode == 0, restart.stderr
        messages = received_now(nats_url, stream)
    seqs = [orjson.loads(payload)["seq"] for _, payload in messages]
    ids = collections.Counter(msg_id for msg_id, _ in messages)
    assert sorted(set(seqs)) == list(range(1, events + 1))  # no gap
    copies = len(seqs) - events
    assert 0 <= copies <= batch, copies  # at most the batch in flight when killed
    assert all(count <= 2 for count in ids.values())


async def test_a_following_forwarder_waits_out_a_postgres_outage(
    pg_server: ThrowawayPostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's server goes down under a following forwarder (an immediate stop, as a
    crash): it keeps trying, and once the server is back it delivers what was committed,
    from its cursor, nothing lost."""
    url = pg_server.store_url(retry_for=2, connect_timeout=1, command_timeout=1)
    out = tmp_path / "segments"
    async with open_store(url) as store:
        await store.append(NewEvent(action="before", resource="r"))
        forwarder = StreamForwarder(store, FileDestination(out), lease_seconds=3)
        task = asyncio.create_task(forwarder.run())
        await cursor_at(store, 1)
        pg_server.stop()
        # The forwarder's next look (its lease renewal, within a second) fails: it waits.
        await until(lambda: any("trying again" in r.getMessage() for r in caplog.records))
        assert not task.done()
        await asyncio.to_thread(pg_server.start)
        await store.append(NewEvent(action="after", resource="r"))
        await cursor_at(store, 2)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert delivered_seqs(out) == [1, 2]


def test_entries_removed_before_delivery_are_reported_not_waited_for(
    store_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A prefix removed behind the stream's back (as retention's prune would, here by
    hand with the append-only trigger dropped) is named in a warning; delivery goes on
    from the first entry still there."""
    url = str(store_path)
    append_events(url, 5)
    with sqlite3.connect(store_path) as conn:
        conn.execute("DROP TRIGGER auditmw_events_no_delete")
        conn.execute("DELETE FROM auditmw_events WHERE seq <= 2")
    out = tmp_path / "segments"

    async def deliver() -> int:
        async with open_store(url) as store:
            return await StreamForwarder(store, FileDestination(out)).run_once()

    assert asyncio.run(deliver()) == 3
    assert delivered_seqs(out) == [3, 4, 5]
    assert "log 'default' seq 1 to 2 are no longer in the store" in caplog.text

"""NATS JetStream for the stream tests: the server on 127.0.0.1:4222 when it answers, else
one started here; a private one (``NatsServer``) for tests that stop and restart it; and a
JetStream stream of the test's own, deleted afterwards.

Without a server and without the ``nats-server`` binary the tests are skipped, or fail
under ``AUDITMW_REQUIRE_POSTGRES`` (the same rule as PostgreSQL's: CI has both).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ._servers import free_port

SHARED_URL = os.environ.get("AUDITMW_TEST_NATS", "nats://127.0.0.1:4222")


def nats_binary() -> str | None:
    found = shutil.which("nats-server")
    if found is None and os.access("/usr/sbin/nats-server", os.X_OK):
        found = "/usr/sbin/nats-server"
    return found


def unavailable(message: str) -> None:
    if os.environ.get("AUDITMW_REQUIRE_POSTGRES"):
        pytest.fail(message + "; AUDITMW_REQUIRE_POSTGRES is set")
    pytest.skip(message)


def answers(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        try:
            sock.connect((host, port))
        except OSError:
            return False
    return True


class NatsServer:
    """``nats-server -js`` on a free port of 127.0.0.1, with its store in a temporary
    directory kept across ``stop()`` and ``start()`` (JetStream streams survive)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="auditmw-nats-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not answers("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()  # as a crash would
            process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def private_nats() -> Iterator[NatsServer]:
    binary = nats_binary()
    if binary is None:
        unavailable("nats-server is not installed (apt-get install nats-server)")
        raise AssertionError("unreachable")
    server = NatsServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.close()


@contextmanager
def shared_nats() -> Iterator[str]:
    """The URL of a running JetStream server: the machine's, else one of the tests'."""
    host_port = SHARED_URL.removeprefix("nats://")
    host, _, port = host_port.partition(":")
    if answers(host, int(port or 4222)):
        yield SHARED_URL
        return
    with private_nats() as server:
        yield server.url


@dataclass(frozen=True)
class JetStreamStream:
    """A JetStream stream of one test: its name and the subject it captures."""

    name: str
    subject: str


async def add_stream(url: str, **config: Any) -> JetStreamStream:
    """A new JetStream stream with a unique name, capturing a unique subject (``config``:
    more of its settings, e.g. ``duplicate_window`` in seconds)."""
    token = uuid.uuid4().hex[:12]
    stream = JetStreamStream(f"AUDITMW_TEST_{token}", f"auditmw.test.{token}")
    client = await nats.connect(url)
    try:
        await client.jetstream().add_stream(name=stream.name, subjects=[stream.subject], **config)
    finally:
        await client.close()
    return stream


async def delete_stream(url: str, stream: JetStreamStream) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().delete_stream(stream.name)
    finally:
        await client.close()


@asynccontextmanager
async def jetstream_stream(url: str) -> AsyncIterator[JetStreamStream]:
    """A JetStream stream of the test's own, deleted afterwards."""
    stream = await add_stream(url)
    try:
        yield stream
    finally:
        with suppress(Exception):  # the server may be down at the end of an outage test
            await delete_stream(url, stream)


@contextmanager
def jetstream_for_test(url: str, **config: Any) -> Iterator[JetStreamStream]:
    """``jetstream_stream`` for a sync test (the CLI runs its own event loops)."""
    stream = asyncio.run(add_stream(url, **config))
    try:
        yield stream
    finally:
        asyncio.run(delete_stream(url, stream))


async def message_count(url: str, stream: JetStreamStream) -> int:
    client = await nats.connect(url)
    try:
        info = await client.jetstream().stream_info(stream.name)
        return int(info.state.messages)
    finally:
        await client.close()


async def received(url: str, stream: JetStreamStream) -> list[tuple[str, bytes]]:
    """Every message the stream holds, in order: (its Nats-Msg-Id, its payload); read
    through an ephemeral pull consumer, a thousand at a time."""
    client = await nats.connect(url)
    try:
        jetstream = client.jetstream()
        total = (await jetstream.stream_info(stream.name)).state.messages
        messages: list[tuple[str, bytes]] = []
        if not total:
            return messages
        consumer = await jetstream.pull_subscribe(
            stream.subject,
            stream=stream.name,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        while len(messages) < total:
            for message in await consumer.fetch(min(1000, total - len(messages)), timeout=10):
                messages.append(((message.headers or {}).get("Nats-Msg-Id", ""), message.data))
        await consumer.unsubscribe()
        return messages
    finally:
        await client.close()


def received_now(url: str, stream: JetStreamStream) -> list[tuple[str, bytes]]:
    return asyncio.run(received(url, stream))

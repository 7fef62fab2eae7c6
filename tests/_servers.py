"""Real servers on 127.0.0.1, for the tests that speak HTTP over a socket.

- uvicorn serving an ASGI app in this process: ``serving_in_loop`` in the test's event
  loop (so the app can use a store the test opened), ``serving_in_thread`` in a thread of
  its own (for sync tests: sync Playwright may run an event loop in this one);
- a server in a child process: ``UvicornProcess`` (``uvicorn <target>``, ready when its
  log says so; Django's settings are process-wide, so a Django project is served from
  its own process), and ``running`` for any command that answers HTTP at a known port —
  ``running_example_app`` (``python -m example_app``), nginx.

Readiness is always a condition (the server's ``started`` flag, a log line, an HTTP
answer), polled until a deadline.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ._paths import ROOT

_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now, for a server told its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- uvicorn in this process ----------------------------------------------------------------


def _server(app: Any, options: Mapping[str, Any]) -> uvicorn.Server:
    """uvicorn for ``app`` on an ephemeral port of 127.0.0.1. Its logging configuration is
    left alone: what it logs at WARNING or above propagates (to caplog, to the report)."""
    defaults = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "log_config": None}
    return uvicorn.Server(uvicorn.Config(app, **{**defaults, **options}))


def _base_url(server: uvicorn.Server) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}"


@asynccontextmanager
async def serving_in_loop(app: Any, **options: Any) -> AsyncIterator[str]:
    """``app`` served by uvicorn in this event loop until the block ends; yields its
    ``http://`` base URL. The app's lifespan is not run (the test opened what it uses).
    Exits once the server has shut down, so every task of the app has ended and logged
    whatever it logs. ``options``: more of ``uvicorn.Config``'s (``http="h11"``, ...)."""
    server = _server(app, {"lifespan": "off", **options})
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the test server stopped before it started")
                await asyncio.sleep(0.005)
        yield _base_url(server)
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task


@contextmanager
def serving_in_thread(app: Any, **options: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread of its own until the block ends, its lifespan
    run; yields its ``http://`` base URL. ``options``: more of ``uvicorn.Config``'s
    (``root_path="/proxy"``, ...)."""
    server = _server(app, {"lifespan": "on", **options})
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield _base_url(server)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


# --- servers in child processes -------------------------------------------------------------


class UvicornProcess:
    """``uvicorn <target>`` on 127.0.0.1 and an ephemeral port, in ``cwd``. Its log says
    when it is ready (and on which port), when it starts shutting down and whether it shut
    down cleanly."""

    def __init__(self, target: str, cwd: Path, env: Mapping[str, str]) -> None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host=127.0.0.1",
            "--port=0",
            "--lifespan=on",
            "--no-proxy-headers",  # the peer is the client: no X-Forwarded-For rewriting
            "--no-access-log",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_log, daemon=True).start()
        try:
            port = self.wait_for(_RUNNING)
        except BaseException:
            self.stop()
            raise
        self.base_url = f"http://127.0.0.1:{port.group(1)}"

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        """The first line from now on that matches ``pattern``; fails if the process ends
        or nothing matches within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise AssertionError(f"no {pattern.pattern!r} in the log: {self.log}") from None
            if line is None:
                self._lines.put(None)  # keep saying so
                raise AssertionError(f"the server ended ({self.process.wait()}): {self.log}")
            self.log.append(line)
            found = pattern.search(line)
            if found:
                return found

    def stop(self) -> int:
        """SIGTERM (as a process manager stops it); its exit status once it has ended."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        while (line := self._lines.get(timeout=10)) is not None:
            self.log.append(line)
        self._lines.put(None)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return status


@dataclass(frozen=True)
class ServerProcess:
    """A server in a child process that answers at ``url``; its output goes to ``log``."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Everything the server has written so far."""
        return self.log.read_text(errors="replace")


def server_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a server: unbuffered (its log lines land before its
    responses), without a proxy setting of its own (a test says which proxies a server
    trusts), plus ``overrides``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("FORWARDED_ALLOW_IPS", "AUDITMW_TRUSTED_PROXIES"):
        env.pop(name, None)
    return {**env, **overrides}


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once ``url`` answers HTTP (any status); fail if ``process`` exits first."""
    deadline = time.monotonic() + 120  # generous: the machine may be busy
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited early:\n{log.read_text(errors='replace')}")
        try:
            httpx.get(url, timeout=5)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"the server did not start:\n{log.read_text(errors='replace')}")


@contextmanager
def running(
    command: Sequence[str], url: str, log: Path, env: Mapping[str, str]
) -> Iterator[ServerProcess]:
    """``command``, run in the repository's root with its output in ``log``, once it
    answers at ``url``; stopped with SIGTERM afterwards unless it has ended (killed if it
    has not ended 60 s later). A test that checks how it stops sends the signal itself."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, env=dict(env)
        )
    try:
        wait_until_up(url, process, log)
        yield ServerProcess(url, process, log)
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def running_example_app(directory: Path, *options: str) -> AbstractContextManager[ServerProcess]:
    """``python -m example_app`` on 127.0.0.1 and a free port, with its data in
    ``directory / "data"`` and its log in ``directory / "app.log"``; ``options``: more of
    its command line (``--framework litestar``, ...)."""
    port = free_port()
    command = [sys.executable, "-m", "example_app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(directory / "data"), *options]
    return running(command, f"http://127.0.0.1:{port}", directory / "app.log", server_env())

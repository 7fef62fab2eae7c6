"""Run an ASGI app with uvicorn in a child process.

Django's settings are process-wide, so a Django project is served from its own process;
the child's log says when it is ready (and on which port), when it starts shutting
down and whether it shut down cleanly.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class UvicornProcess:
    """``uvicorn <target>`` on 127.0.0.1 and an ephemeral port, in ``cwd``."""

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

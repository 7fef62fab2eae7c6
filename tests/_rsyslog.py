"""Debian's rsyslogd as a test's syslog server: its own configuration in a directory of
the test's, ``imtcp`` on a free port of 127.0.0.1 (optionally TLS through the ``gtls``
driver, with a certificate the test made), and everything it receives written by
``omfile`` as one JSON object per message with the fields rsyslog parsed from it.

Missing rsyslogd (or its gtls driver) skips the test, unless ``AUDITMW_REQUIRE_RSYSLOG``
is set (``scripts/test`` sets it in CI and installs ``rsyslog`` and ``rsyslog-gnutls``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from ._servers import free_port
from ._tls import CertificateFiles

RSYSLOGD = shutil.which("rsyslogd") or (
    "/usr/sbin/rsyslogd" if os.access("/usr/sbin/rsyslogd", os.X_OK) else None
)
GTLS_DRIVERS = [
    Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"),
    Path("/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so"),
    Path("/usr/lib/rsyslog/lmnsd_gtls.so"),
]

# The fields rsyslog parsed out of each RFC 5424 message, as one JSON object per line.
_TEMPLATE = """
template(name="fields" type="list" option.jsonf="on") {
  property(outname="pri" name="pri" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}
"""


def require_rsyslogd(*, tls: bool = False) -> str:
    """rsyslogd's path; skips the test without it (fails it under
    ``AUDITMW_REQUIRE_RSYSLOG``)."""
    problem = None
    if RSYSLOGD is None:
        problem = "rsyslogd is not installed (apt-get install rsyslog)"
    elif tls and not any(driver.exists() for driver in GTLS_DRIVERS):
        problem = "rsyslog's gtls driver is not installed (apt-get install rsyslog-gnutls)"
    if problem is not None:
        if os.environ.get("AUDITMW_REQUIRE_RSYSLOG"):
            pytest.fail(f"{problem}; AUDITMW_REQUIRE_RSYSLOG is set")
        pytest.skip(
            f"{problem} (scripts/test installs it; AUDITMW_REQUIRE_RSYSLOG=1 fails instead)"
        )
    assert RSYSLOGD is not None
    return RSYSLOGD


@dataclass
class Rsyslog:
    """A running rsyslogd: its port, the file it writes, its process."""

    port: int
    output: Path
    process: subprocess.Popen[bytes]
    log: Path

    def received(self) -> list[dict[str, Any]]:
        """The messages written so far (whole lines only)."""
        if not self.output.exists():
            return []
        text = self.output.read_bytes()
        return [orjson.loads(line) for line in text.split(b"\n")[:-1]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _configuration(directory: Path, port: int, tls: CertificateFiles | None) -> str:
    lines = [f'global(workDirectory="{directory / "work"}" maxMessageSize="256k"']
    if tls is not None:
        lines += [
            '  defaultNetstreamDriver="gtls"',
            f'  defaultNetstreamDriverCAFile="{tls.ca_file}"',
            f'  defaultNetstreamDriverCertFile="{tls.cert_file}"',
            f'  defaultNetstreamDriverKeyFile="{tls.key_file}"',
        ]
    lines.append(")")
    if tls is not None:
        lines.append(
            'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" '
            'streamDriver.authMode="anon")'
        )
    else:
        lines.append('module(load="imtcp")')
    lines.append(f'input(type="imtcp" address="127.0.0.1" port="{port}")')
    lines.append(_TEMPLATE)
    lines.append(f'action(type="omfile" file="{directory / "received.jsonl"}" template="fields")')
    return "\n".join(lines) + "\n"


@contextmanager
def running_rsyslog(
    directory: Path, *, tls: CertificateFiles | None = None, port: int | None = None
) -> Iterator[Rsyslog]:
    """rsyslogd listening on 127.0.0.1 (``port``, else a free one) until the block ends."""
    rsyslogd = require_rsyslogd(tls=tls is not None)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "work").mkdir(exist_ok=True)
    port = port or free_port()
    config = directory / "rsyslog.conf"
    config.write_text(_configuration(directory, port, tls))
    log = directory / "rsyslogd.log"
    command = [rsyslogd, "-n", "-f", str(config), "-i", str(directory / "rsyslogd.pid")]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    server = Rsyslog(port, directory / "received.jsonl", process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"rsyslogd exited ({process.returncode}): {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"rsyslogd did not listen on {port}: {log.read_text()}")
                time.sleep(0.05)
        yield server
    finally:
        server.stop()

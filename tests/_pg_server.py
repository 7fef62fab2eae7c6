"""A throwaway PostgreSQL server that a test may stop, restart, freeze and thaw.

The shared server (tests/_postgres.py) must never go down; outage tests start their own:
``initdb`` into a temporary directory, ``pg_ctl start`` on a free port of 127.0.0.1 with
trust authentication. Then:

- ``stop()``: ``pg_ctl stop -m immediate``, as a crash or a pulled plug would (every
  connection is cut; the next start recovers from the WAL); ``start()`` brings it back on
  the same port and data directory;
- ``freeze()``: SIGSTOP to the postmaster and every backend, so the server takes
  connections (the kernel completes the TCP handshake) but never answers, as a hung or
  partitioned server does; ``thaw()``: SIGCONT.

The binaries are Debian's (/usr/lib/postgresql/<version>/bin, the newest version), or
those of ``pg_config --bindir`` on PATH, or ``$AUDITMW_TEST_PG_BIN``. initdb and postgres
refuse to run as root: as root (here and in CI) the server runs as the ``postgres`` user,
in a directory it owns. Without the binaries the test is skipped, or fails under
``AUDITMW_REQUIRE_POSTGRES``.

However the test process ends, the server is thawed, stopped and its directory removed:
by ``close()``, else at exit, else (the process was killed) by a watchdog process that
outlives it.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlencode

import pytest

from ._postgres import new_schema_name
from ._servers import ROOT, free_port

SERVER_USER = "postgres"  # who runs the server when the tests run as root
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",  # a throwaway: a crash of the machine may lose it, a stop may not
    "max_connections": "60",
    "shared_buffers": "16MB",
}


def postgres_bin_dir() -> Path | None:
    """Where initdb, pg_ctl and postgres are; None when they are not installed."""
    configured = os.environ.get("AUDITMW_TEST_PG_BIN")
    candidates = [Path(configured)] if configured else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [path for path in debian.iterdir() if path.name.isdigit()]
        candidates += [path / "bin" for path in sorted(versions, key=lambda p: -int(p.name))]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def require_postgres_binaries() -> Path:
    """The binaries' directory; skips the test without them (fails under
    AUDITMW_REQUIRE_POSTGRES)."""
    directory = postgres_bin_dir()
    if directory is None:
        message = (
            "PostgreSQL's server binaries (initdb, pg_ctl, postgres) are not installed "
            "(scripts/test installs Debian's postgresql package; or set AUDITMW_TEST_PG_BIN)"
        )
        if os.environ.get("AUDITMW_REQUIRE_POSTGRES"):
            pytest.fail(message + "; AUDITMW_REQUIRE_POSTGRES is set")
        pytest.skip(message)
    return directory


class ThrowawayPostgres:
    """A server in ``directory`` (its data in ``data/``) on ``port``; see the module
    docstring. Tests get one from ``throwaway_postgres()``."""

    def __init__(self, bin_dir: Path, directory: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.directory = directory
        self.port = port
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self.running = False
        self.frozen = False
        self._user = SERVER_USER if os.geteuid() == 0 else None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, bin_dir: Path) -> ThrowawayPostgres:
        """A new cluster (initdb: superuser ``postgres``, trust authentication) in a new
        temporary directory, watched from now on; not started."""
        server = cls(bin_dir, Path(tempfile.mkdtemp(prefix="auditmw-pg-")), free_port())
        if server._user is not None:  # initdb refuses root: the server's user owns it all
            account = pwd.getpwnam(server._user)
            os.chown(server.directory, account.pw_uid, account.pw_gid)
        server._start_watchdog()
        try:
            server._run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust")
        except BaseException:
            server.close()
            raise
        return server

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [str(self.bin_dir / program), *args],
            user=self._user,
            cwd=self.directory,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            server_log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{server_log}"
            )

    def start(self) -> None:
        """Start the server (again) on its port; returns once it accepts connections."""
        settings = {**SETTINGS, "port": self.port, "unix_socket_directories": self.directory}
        options = " ".join(f"-c {name}={value}" for name, value in settings.items())
        data, log = str(self.data), str(self.log)
        self._run("pg_ctl", "start", "-D", data, "-l", log, "-w", "-t", "60", "-o", options)
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server, by default at once (``-m immediate``: connections are cut,
        nothing is flushed gracefully; ``"fast"`` writes every page out to its file first);
        returns once it has exited."""
        self.thaw()
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")
        self.running = False

    def freeze(self) -> None:
        """SIGSTOP the postmaster, then every process it started: the server keeps its
        connections and its port, and answers nothing."""
        assert self.running and not self.frozen, "freeze a running, thawed server"
        postmaster = self._postmaster()
        assert postmaster is not None
        os.kill(postmaster, signal.SIGSTOP)  # first: it can start no process after this
        self.frozen = True
        for child in _children(postmaster):
            with suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(child, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT to the server's processes (harmless when they are not stopped)."""
        postmaster = self._postmaster()
        if postmaster is not None:
            for pid in [*_children(postmaster), postmaster]:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        self.frozen = False

    def _postmaster(self) -> int | None:
        """The postmaster's pid while it runs (from its postmaster.pid file)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def recover(self) -> None:
        """Running and thawed, whatever state a test left it in."""
        self.thaw()
        if not self.running:
            self.start()

    def store_url(self, **options: object) -> str:
        """A store URL in a new schema of this server, with ``open_store``'s URL options."""
        query = urlencode({"schema": new_schema_name(), **options})
        return f"{self.dsn}?{query}"

    def close(self) -> None:
        """Thaw and stop the server, remove its directory, end its watchdog."""
        try:
            self.thaw()
            if self._postmaster() is not None:
                self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            if self._watchdog is not None:
                self._watchdog.kill()
                self._watchdog.wait()

    def _start_watchdog(self) -> None:
        """A process that closes this server once the test process has ended, even when
        it was killed (SIGKILL, a CI timeout): nothing else would."""
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from tests._pg_server import watch; watch()"
        )
        arguments = [str(os.getpid()), str(self.bin_dir), str(self.directory)]
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", code, *arguments],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the test run does not reach it
        )


def watch() -> None:
    """The watchdog's work (``python -c ... <test pid> <bin dir> <directory>``): wait
    until the test process is gone, then close its server if it is still there."""
    parent, bin_dir, directory = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    while os.getppid() == parent:  # reparented once the test process has ended
        time.sleep(0.5)
    if directory.exists():
        ThrowawayPostgres(bin_dir, directory, port=0).close()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


_servers: list[ThrowawayPostgres] = []


@atexit.register
def _close_all() -> None:
    """No server outlives a test process that exits (an interrupted run included)."""
    for server in _servers[:]:
        server.close()


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A started throwaway server, closed when the block ends."""
    server = ThrowawayPostgres.create(require_postgres_binaries())
    _servers.append(server)
    try:
        server.start()
        yield server
    finally:
        _servers.remove(server)
        server.close()

"""HTTP overhead: what auditing every request costs a real server.

One Starlette app, served by uvicorn in a subprocess, driven by a load generator in
another process (``wrk`` when it is on PATH, else a small Python keep-alive client),
in three variants, alternated over a few rounds in the same run:

- ``bare``: the app alone;
- ``auditmw``: ``AuditMiddleware`` outermost and one ``audit()`` per request, awaited
  (committed, ``synchronous=FULL``) before the response is sent;
- ``naive``: what the original design does: one aiosqlite INSERT + COMMIT per request
  (WAL, ``synchronous=FULL`` too, so durability is the same), IP from the leftmost
  X-Forwarded-For.

The endpoint does nothing by default (``--endpoint noop``): the ratios then show what
auditing costs next to nothing at all. ``--endpoint write`` makes it commit a change of
its own first (one aiosqlite INSERT + COMMIT into the app's database, as the original
design's handlers change a project and then log it): what auditing adds to an endpoint
that has something to audit. The server runs uvicorn's default implementations, which
are uvloop and httptools when installed (``uvicorn[standard]``, as deployments run it);
``--loop asyncio --http h11`` measures the pure-Python ones.

It prints requests/s (median of the rounds) and the ratio of each variant to bare;
the goal for auditmw is at least 0.85. On a shared or busy machine throughput swings
from run to run, so it also prints the server's CPU time per request (all threads,
from /proc): the steadier measure of what each variant costs. It checks that every
request of the audited variants left its row. Needs about 2 minutes with the defaults.

    .venv/bin/python benchmarks/http_overhead.py [--rounds 5] [--duration 5] [--connections 64]

(On Debian, ``apt-get install wrk``.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from _common import (
    Result,
    add_summary_option,
    fmt_ratio,
    machine_description,
    median,
    package_version,
    print_facts,
    print_table,
    write_summary,
)

VARIANTS = ("bare", "auditmw", "naive")
# Not run by default, to tell the costs apart:
# - "middleware": AuditMiddleware alone, no audit() call;
# - "memory": audit() as in "auditmw", with everything but the database (the in-memory
#   store of auditmw.testing, on the event loop), to tell the library's cost from SQLite's;
# - "passthrough": an empty pure ASGI middleware, what any middleware layer costs;
# - "wait": no middleware; each request waits 2 ms before it answers, as for a group
#   commit, doing nothing: what waiting alone costs in requests/s.
EXTRA_VARIANTS = ("middleware", "memory", "passthrough", "wait")
PATH = "/items/42"


# --- the server (run as a subprocess: ``--serve VARIANT``) -------------------------------


class Passthrough:
    """The least a pure ASGI middleware can be: it wraps ``send``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def forward(message: Any) -> None:
            await send(message)

        await self.app(scope, receive, forward)


def build_app(variant: str, db_path: Path, endpoint: str) -> Any:
    import aiosqlite
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    import auditmw
    from auditmw.testing import MemoryStore

    # "memory": the store's whole append path (validation, writer, chaining) but a
    # database, through the in-memory backend.
    store: auditmw.AuditStore
    store = MemoryStore() if variant == "memory" else auditmw.SQLiteStore(db_path)
    naive: dict[str, aiosqlite.Connection] = {}
    app_db: dict[str, aiosqlite.Connection] = {}

    async def change_item(item_id: str) -> None:
        """The endpoint's own work: commit a change to the app's database."""
        if endpoint == "write":
            conn = app_db["conn"]
            await conn.execute("INSERT INTO item_views (item_id) VALUES (?)", (item_id,))
            await conn.commit()

    async def bare(request: Request) -> JSONResponse:
        await change_item(request.path_params["item_id"])
        return JSONResponse({"id": request.path_params["item_id"], "ok": True})

    async def audited(request: Request) -> JSONResponse:
        item_id = request.path_params["item_id"]
        await change_item(item_id)
        await auditmw.audit("item.viewed", "item", item_id, {"source": "benchmark"})
        return JSONResponse({"id": item_id, "ok": True})

    async def waiting(request: Request) -> JSONResponse:
        await change_item(request.path_params["item_id"])
        await asyncio.sleep(0.002)
        return JSONResponse({"id": request.path_params["item_id"], "ok": True})

    async def naive_insert(request: Request) -> JSONResponse:
        item_id = request.path_params["item_id"]
        await change_item(item_id)
        forwarded = request.headers.get("x-forwarded-for")
        client = request.client.host if request.client else "unknown"
        ip = forwarded.split(",")[0].strip() if forwarded else client
        conn = naive["conn"]
        await conn.execute(
            "INSERT INTO audit_logs (user_id, action, resource, resource_id, details, "
            "ip_address, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                None,
                "item.viewed",
                "item",
                item_id,
                '{"source":"benchmark"}',
                ip,
                request.headers.get("user-agent"),
            ),
        )
        await conn.commit()
        return JSONResponse({"id": item_id, "ok": True})

    @contextlib.asynccontextmanager
    async def sqlite_connection(path: Path, schema: str) -> AsyncIterator[aiosqlite.Connection]:
        conn = await aiosqlite.connect(path)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute(schema)
            await conn.commit()
            yield conn
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if endpoint == "write":
                app_db["conn"] = await stack.enter_async_context(
                    sqlite_connection(
                        db_path.with_name(f"{db_path.stem}-app.db"),
                        "CREATE TABLE IF NOT EXISTS item_views (id INTEGER PRIMARY KEY, "
                        "item_id TEXT NOT NULL, at TEXT DEFAULT CURRENT_TIMESTAMP)",
                    )
                )
            if variant in ("auditmw", "middleware", "memory"):
                await stack.enter_async_context(store)
            elif variant == "naive":
                naive["conn"] = await stack.enter_async_context(
                    sqlite_connection(
                        db_path,
                        "CREATE TABLE IF NOT EXISTS audit_logs (id INTEGER PRIMARY KEY, "
                        "user_id TEXT, action TEXT NOT NULL, resource TEXT NOT NULL, "
                        "resource_id TEXT, details TEXT, ip_address TEXT, user_agent TEXT, "
                        "timestamp TEXT DEFAULT CURRENT_TIMESTAMP)",
                    )
                )
            yield

    handlers = {"auditmw": audited, "memory": audited, "naive": naive_insert, "wait": waiting}
    handler = handlers.get(variant, bare)
    middleware = []
    if variant in ("auditmw", "middleware", "memory"):
        middleware = [Middleware(auditmw.AuditMiddleware, store=store)]
    elif variant == "passthrough":
        middleware = [Middleware(Passthrough)]
    return Starlette(
        routes=[Route("/items/{item_id}", handler)], middleware=middleware, lifespan=lifespan
    )


def serve(variant: str, db_path: Path, port: int, endpoint: str, loop: str, http: str) -> None:
    import uvicorn

    uvicorn.run(
        build_app(variant, db_path, endpoint),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop=loop,
        http=http,
    )


def server_implementations(loop: str, http: str) -> str:
    """What uvicorn will run for ``--loop``/``--http`` (``auto`` takes uvloop and
    httptools when they are installed)."""

    def installed(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    if loop == "auto":
        loop = "uvloop" if installed("uvloop") else "asyncio"
    if http == "auto":
        http = "httptools" if installed("httptools") else "h11"
    return f"uvicorn {package_version('uvicorn')}, {loop} event loop, {http} HTTP parser"


# --- the Python load generator (a subprocess: ``--load``), used without wrk ------------


async def _client(port: int, deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {PATH} HTTP/1.1\r\nHost: bench\r\nUser-Agent: loadgen\r\n\r\n".encode()
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
            await reader.readexactly(int(match.group(1)) if match else 0)
            counts[0 if head.startswith(b"HTTP/1.1 200") else 1] += 1
    finally:
        writer.close()


async def _load(port: int, seconds: float, connections: int) -> tuple[int, int]:
    counts = [0, 0]
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_client(port, deadline, counts) for _ in range(connections)))
    return counts[0], counts[1]


def python_load(port: int, seconds: float, connections: int) -> tuple[float, int, int]:
    """Requests/s, responses and non-200 responses, from a separate process."""
    command = [sys.executable, __file__, "--load", str(port), str(seconds), str(connections)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    ok, errors = map(int, output.split())
    return ok / seconds, ok + errors, errors


def wrk_load(port: int, seconds: float, connections: int) -> tuple[float, int, int]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "-H",
        "User-Agent: wrk",
        f"http://127.0.0.1:{port}{PATH}",
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s*([\d.]+)", output).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    socket_errors = re.search(r"Socket errors:.*", output)
    if socket_errors:
        print(f"    wrk: {socket_errors.group(0)}")
    return rate, done, int(bad.group(1)) if bad else 0


# --- the driver -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
            s.sendall(f"GET {PATH} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            if s.recv(12).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.1)
    raise RuntimeError("the server did not start in time")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all threads (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rows_in(db_path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def measure(
    variant: str, workdir: Path, run: int, args: argparse.Namespace
) -> tuple[float, float | None, int, int, int | None]:
    """One server start: warm up, measure.

    Returns requests/s, server CPU seconds per request (measured window), responses
    (warm-up included), bad responses and rows written.
    """
    db_path = workdir / f"{variant}-{run}.db"
    port = free_port()
    command = [sys.executable, __file__, "--serve", variant, str(db_path), str(port)]
    command += [args.endpoint, args.loop, args.http]
    server = subprocess.Popen(command)
    load = wrk_load if args.loadgen == "wrk" else python_load
    try:
        wait_until_serving(port, server)
        _, warmup_done, warmup_bad = load(port, args.warmup, args.connections)
        cpu_before = cpu_seconds(server.pid)
        rate, done, bad = load(port, args.duration, args.connections)
        cpu_after = cpu_seconds(server.pid)
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly: store closed
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    table = {"auditmw": "auditmw_events", "naive": "audit_logs"}.get(variant)
    answered = 1 + warmup_done + done  # 1: the readiness probe
    cpu = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / done
    return rate, cpu, answered, warmup_bad + bad, rows_in(db_path, table) if table else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, among {', '.join(VARIANTS + EXTRA_VARIANTS)}; bare is always run",
    )
    parser.add_argument(
        "--endpoint",
        choices=("noop", "write"),
        default="noop",
        help="noop: the endpoint does nothing; write: it commits a change of its own first",
    )
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto")
    parser.add_argument(
        "--loadgen",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
    )
    add_summary_option(parser)
    args = parser.parse_args()
    variants = tuple(dict.fromkeys(["bare", *args.variants.split(",")]))
    unknown = set(variants) - set(VARIANTS + EXTRA_VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if args.loadgen == "wrk":
        args.duration = max(1, round(args.duration))  # wrk takes whole seconds
        args.warmup = max(1, round(args.warmup))

    with tempfile.TemporaryDirectory(prefix="auditmw-http-") as tmp:
        workdir = Path(tmp)
        facts = machine_description(workdir, ["auditmw", "starlette", "uvicorn", "aiosqlite"])
        facts.append(("server", server_implementations(args.loop, args.http)))
        endpoint = {"noop": "does nothing", "write": "commits a change of its own (aiosqlite)"}
        facts.append(("endpoint", endpoint[args.endpoint]))
        facts.append(("load generator", f"{args.loadgen}, {args.connections} connections"))
        facts.append(("per run", f"{args.warmup}s warm-up + {args.duration}s measured"))
        print_facts("HTTP overhead of auditing every request", facts)
        rates: dict[str, list[float]] = {variant: [] for variant in variants}
        cpus: dict[str, list[float]] = {variant: [] for variant in variants}
        for run in range(args.rounds):
            shift = run % len(variants)
            order = variants[shift:] + variants[:shift]  # rotate: no variant always first
            for variant in order:
                rate, cpu, answered, bad, rows = measure(variant, workdir, run, args)
                rates[variant].append(rate)
                if cpu is not None:
                    cpus[variant].append(cpu)
                note = "" if rows is None else f", {rows:,} rows for {answered:,} responses"
                cpu_note = "" if cpu is None else f", {cpu * 1e6:5.0f} µs CPU/request"
                print(
                    f"  round {run + 1} {variant:10} {rate:7,.0f} req/s{cpu_note}, "
                    f"{bad} non-2xx{note}"
                )
                if bad:
                    raise SystemExit(f"{variant}: {bad} failed responses; the result is void")
                if rows is not None and rows < answered:
                    raise SystemExit(f"{variant}: a response was sent without its row")
        print()
        bare = median(rates["bare"])
        bare_cpu = median(cpus["bare"]) if cpus["bare"] else None
        table: list[list[str]] = []
        for variant in variants:
            row = [
                variant,
                f"{median(rates[variant]):,.0f}",
                fmt_ratio(median(rates[variant]) / bare),
            ]
            if bare_cpu is not None and cpus[variant]:
                cpu = median(cpus[variant])
                row += [f"{cpu * 1e6:,.0f}", fmt_ratio(bare_cpu / cpu)]
            table.append(row)
        headers = ["variant", "requests/s (median)", "ratio to bare"]
        if bare_cpu is not None:
            headers += ["server CPU µs/request", "bare CPU / variant CPU"]
        print_table(headers, table)
        print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if "auditmw" in rates:
            ratio = median(rates["auditmw"]) / bare
            verdict = "met" if ratio >= 0.85 else "NOT met"
            print(f"auditmw / bare = {ratio:.2f} (goal >= 0.85): {verdict}")
        write_summary(
            args.summary,
            "http_overhead",
            facts,
            [
                Result(
                    f"http, {variant} / bare requests/s",
                    median(rates[variant]) / bare,
                    f"{variant}/bare",
                    goal=0.85 if variant == "auditmw" else None,
                    detail=f"{median(rates[variant]):,.0f} vs {bare:,.0f} req/s",
                )
                for variant in variants
                if variant != "bare"
            ],
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:8])
    elif len(sys.argv) > 1 and sys.argv[1] == "--load":
        ok, errors = asyncio.run(_load(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
        print(ok, errors)
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        sys.exit(main())

"""Log streams over HTTP: how fast a stream delivers to a webhook (signed JSON batches)
and to a Splunk HTTP Event Collector, against the file destination and the store's
append rate.

Side by side in one run, alternating the destinations' order over a few rounds (medians):
N events appended concurrently to a fresh store, then ``StreamForwarder.run_once()``
delivering them (catching up: full batches) to each destination in turn. The receiver
is a uvicorn process on 127.0.0.1 (``--receiver-workers``) that reads each body, checks
the webhook's signature or the HEC token, and acknowledges. The ratios stream / append
and stream / the HTTP benchmark's audited requests per second (``--http-rate``) say
whether a stream keeps up (goal: at least twice the HTTP rate).

    .venv/bin/python benchmarks/stream_http.py [--events N] [--rounds R] [--batch-size B]
        [--store sqlite|postgres] [--postgres URL] [--summary FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from _common import (
    Result,
    add_summary_option,
    fmt_rate,
    machine_description,
    median,
    print_facts,
    print_table,
    rate,
    write_summary,
)
from auditmw import AuditStore, Destination, StreamForwarder
from auditmw._streams.files import FileDestination
from auditmw._streams.splunk import SplunkDestination
from auditmw._streams.webhook import WebhookDestination
from stream import DEFAULT_POSTGRES, append, store_maker

SECRET = "benchmark-secret"

RECEIVER = f"""
import hashlib, hmac

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET = {SECRET!r}.encode()


async def hook(request):
    body = await request.body()
    fields = dict(p.split("=", 1) for p in request.headers["auditmw-signature"].split(","))
    expected = hmac.new(SECRET, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["v1"]):
        return Response(status_code=401)
    return Response(status_code=204)


async def collector(request):
    if request.headers.get("authorization") != "Splunk " + SECRET.decode():
        return JSONResponse({{"text": "Invalid token", "code": 4}}, status_code=401)
    await request.body()
    return JSONResponse({{"text": "Success", "code": 0}})


app = Starlette(routes=[
    Route("/hook", hook, methods=["POST"]),
    Route("/services/collector/event", collector, methods=["POST"]),
])
"""


def start_receiver(directory: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """The receiver in a uvicorn process of its own; its base URL once it answers."""
    (directory / "bench_receiver.py").write_text(RECEIVER)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench_receiver:app", "--app-dir", str(directory)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--no-access-log", "--workers", str(workers)]
    process = subprocess.Popen(command)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(base, timeout=2)
            return process, base
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the benchmark's receiver did not start") from None
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(args: argparse.Namespace) -> int:
    directory = Path(tempfile.mkdtemp(prefix="auditmw-bench-stream-http-"))
    process, base = start_receiver(directory, args.receiver_workers)
    try:
        facts = machine_description(directory, ["auditmw", "httpx", "uvicorn"])
        facts += [("store", args.store), ("batch size", str(args.batch_size))]
        facts.append(("receiver", f"uvicorn, {args.receiver_workers} worker(s), 127.0.0.1"))
        print_facts("auditmw stream over HTTP benchmark", facts)
        secret_file = directory / "secret"
        secret_file.write_text(SECRET)
        settings = {"secret_file": str(secret_file)}
        make = store_maker(args.store, args.postgres, directory)

        def file_destination() -> Destination:
            return FileDestination(directory / uuid.uuid4().hex)

        def webhook() -> Destination:
            return WebhookDestination.from_url(f"{base}/hook", settings)

        def splunk() -> Destination:
            return SplunkDestination.from_url(base.replace("http", "splunk+http"), settings)

        destinations: dict[str, Callable[[], Destination]] = {
            "file": file_destination,
            "webhook": webhook,
            "splunk HEC": splunk,
        }
        append_rates: list[float] = []
        stream_rates: dict[str, list[float]] = {name: [] for name in destinations}
        for round_number in range(args.rounds):
            store, drop = await make()
            try:
                append_rates.append(rate(args.events, await append(store, args.events)))
                names = list(destinations)
                if round_number % 2:
                    names.reverse()
                for name in names:
                    seconds = await deliver(store, destinations[name](), name, args)
                    stream_rates[name].append(rate(args.events, seconds))
            finally:
                await drop()
            print(f"  round {round_number + 1}/{args.rounds} done", file=sys.stderr)

        append_rate = median(append_rates)
        rows = [
            ["append (concurrent, group commit)", fmt_rate(append_rate), "1.00", ""],
            ["audited HTTP requests (--http-rate)", fmt_rate(args.http_rate), "", "1.00"],
        ]
        results = []
        for name in destinations:
            stream_rate = median(stream_rates[name])
            versus_append = f"{stream_rate / append_rate:.2f}"
            versus_http = f"{stream_rate / args.http_rate:.2f}"
            rows.append([f"stream to {name}", fmt_rate(stream_rate), versus_append, versus_http])
            results.append(
                Result(
                    f"stream to {name} ({args.store})",
                    stream_rate / args.http_rate,
                    "stream/HTTP appends",
                    goal=2.0,
                    detail=f"{fmt_rate(stream_rate)}; appends {fmt_rate(append_rate)} "
                    f"({versus_append}); batches of {args.batch_size}",
                )
            )
        print()
        print(f"{args.events:,} events caught up per round (median of {args.rounds} rounds)")
        print_table(["", "events/s", "vs append", "vs HTTP"], rows)
        write_summary(args.summary, "stream_http", facts, results)
        return 0
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


async def deliver(
    store: AuditStore, destination: Destination, name: str, args: argparse.Namespace
) -> float:
    """Seconds for a new stream to deliver the store's events to ``destination``."""
    forwarder = StreamForwarder(
        store,
        destination,
        name=f"{name}-{uuid.uuid4().hex[:6]}",
        batch_size=args.batch_size,
    )
    start = time.perf_counter()
    delivered = await forwarder.run_once()
    seconds = time.perf_counter() - start
    assert delivered == args.events, (delivered, args.events)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000, help="events per request")
    parser.add_argument("--receiver-workers", type=int, default=1)
    parser.add_argument(
        "--http-rate",
        type=float,
        default=2800.0,
        help="audited requests/s of benchmarks/http_overhead.py to compare with (default: "
        "about 2,800/s, the README's figure on its 2-core machine)",
    )
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server for --store postgres")
    add_summary_option(parser)
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""``auditmw stream``: deliver a store's events to a destination, from a durable cursor
(docs/streams.md)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from auditmw._admin.parameters import add_filter_arguments, filter_from_arguments
from auditmw._cli.command import STORE_HELP, Command
from auditmw._cli.exit_codes import ExitCode
from auditmw._stores.filters import parse_time
from auditmw._stores.open import open_store
from auditmw._stores.store import AuditStore
from auditmw._stores.stream_state import StreamState
from auditmw._streams.cursor import DEFAULT_LEASE_SECONDS, StreamLeaseLostError
from auditmw._streams.destination import (
    DESTINATIONS,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    destination_for,
    display_url,
)
from auditmw._streams.formats import FORMATS, format_named
from auditmw._streams.forwarder import DEFAULT_BATCH_SIZE, StreamForwarder

ONCE_GIVE_UP_AFTER = 60.0  # seconds a --once run retries an unreachable destination


def configure(parser: argparse.ArgumentParser) -> None:
    schemes = ", ".join(f"{scheme}://" for scheme in sorted(DESTINATIONS))
    parser.add_argument("store", help=STORE_HELP)
    parser.add_argument("--to", required=True, metavar="URL", help=f"the destination: {schemes}")
    parser.add_argument("--name", default="default", help="the stream's name (its cursor)")
    parser.add_argument("--format", default="native", choices=sorted(FORMATS))
    parser.add_argument(
        "--once", action="store_true", help="deliver what is committed now, then exit"
    )
    parser.add_argument(
        "--from",
        dest="replay_from",
        metavar="SEQ|DATE",
        help="first move the cursor to this seq (every log) or date, recorded in the log "
        "as an audit.stream_reset event",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
    parser.add_argument(
        "--secret-file",
        metavar="PATH",
        help="the shared secret (webhook signature key, Splunk HEC token) in this file",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PATH",
        help="trust the CA certificates in this PEM file (https://, splunk+https://, "
        "syslog+tls://) instead of the system's",
    )
    parser.add_argument(
        "--give-up-after",
        type=float,
        metavar="SECONDS",
        help="stop when a batch could not be delivered for this long (default: 60 with "
        "--once, never without)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_LEASE_SECONDS,
        metavar="SECONDS",
        help="how long the stream stays held by this forwarder after its last sign of life "
        f"(default {DEFAULT_LEASE_SECONDS:g}): another forwarder takes over after that",
    )
    # The filters of `auditmw export` but the time bounds: --from and --to mean other things.
    add_filter_arguments(parser, skip=("from", "to"))


def run(args: argparse.Namespace) -> int:
    filter = filter_from_arguments(args)  # bad input fails before anything is opened
    point = args.replay_from
    if point is not None and not point.isdigit():
        parse_time("from", point)
    format = format_named(args.format)
    secrets = {"secret_file": args.secret_file, "ca_file": args.ca_file}
    destination = destination_for(args.to, {k: v for k, v in secrets.items() if v})
    if not 1 <= args.batch_size <= 100_000:
        raise ValueError("--batch-size must be between 1 and 100000")
    if not 0.1 <= args.lease_seconds <= 3600:
        raise ValueError("--lease-seconds must be between 0.1 and 3600")
    give_up = args.give_up_after
    if give_up is not None and not 0 <= give_up < float("inf"):
        raise ValueError("--give-up-after must be a number of seconds, 0 or more")
    if give_up is None and args.once:
        give_up = ONCE_GIVE_UP_AFTER
    settings = {
        "destination": display_url(args.to),
        "format": format.name,
        "filter": filter.to_params(),
    }

    def forwarder(store: AuditStore) -> StreamForwarder:
        return StreamForwarder(
            store,
            destination,
            name=args.name,
            format=format,
            filter=filter,
            batch_size=args.batch_size,
            lease_seconds=args.lease_seconds,
            give_up_after=give_up,
            settings=settings,
            replay_from=point,
            on_wait=_waiting,
        )

    name = f"auditmw stream: {args.name}"
    try:
        return asyncio.run(_stream(args.store, forwarder, once=args.once))
    except PermanentDeliveryError as exc:
        print(f"{name}: stopped: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    except TemporaryDeliveryError as exc:
        print(f"{name}: gave up after {give_up:g} s: {exc}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    except StreamLeaseLostError as exc:
        print(f"{name}: {exc}; stopped", file=sys.stderr)
        return ExitCode.UNAVAILABLE


async def _stream(
    store_url: str, make: Callable[[AuditStore], StreamForwarder], *, once: bool
) -> int:
    async with open_store(store_url, create=False) as store:
        forwarder = make(store)
        if once:
            delivered = await forwarder.run_once()
            print(f"auditmw stream: {forwarder.name}: delivered {delivered}", file=sys.stderr)
            return ExitCode.OK
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM (a service manager stopping it) ends the run as Ctrl-C does: the lease
        # is given up, so the next forwarder need not wait for it to expire.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await forwarder.run()
        except asyncio.CancelledError:
            return ExitCode.OK
    return ExitCode.OK


def _waiting(holder: StreamState | None) -> None:
    who = holder.lease_owner if holder is not None else "another forwarder"
    print(f"auditmw stream: the stream is held by {who}; waiting for it", file=sys.stderr)


COMMAND = Command(
    name="stream",
    help="deliver the events to a destination (NATS JetStream, files, webhook, Splunk HEC, "
    "syslog), at least once",
    description="Deliver every event, in chain order, to the destination, from the "
    "stream's durable cursor kept in the store: at least once (after a crash, at most one "
    "batch again), never skipping one. Without --once, follow new commits. One forwarder "
    "per stream name delivers at a time; another waits.",
    configure=configure,
    run=run,
)

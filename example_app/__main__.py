"""python -m example_app --host 127.0.0.1 --port 8000 --data-dir ./data
[--workers N] [--audit-store URL] [--framework starlette|litestar] [--checkpoint-key FILE]
[--trusted-proxy CIDR ...]"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
from pathlib import Path

import uvicorn

from auditmw import trusted_proxies_from_env

from .settings import TRUSTED_PROXIES_ENV, Settings

APPS = {
    "starlette": "example_app.app:create_app",
    "litestar": "example_app.litestar_app:create_app",
}


def _network(text: str) -> str:
    """An address or CIDR network, as AuditMiddleware reads its trusted_proxies."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:64]!r} is not an IP address or CIDR network"
        ) from None


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--audit-store",
        help="a SQLite path or postgresql://... URL (default: audit.db in the data directory)",
    )
    parser.add_argument("--framework", choices=sorted(APPS), default="starlette")
    parser.add_argument(
        "--checkpoint-key",
        type=Path,
        metavar="FILE",
        help="sign checkpoints with this key (from `auditmw keygen NAME --out PREFIX`: "
        "PREFIX.key); they go to the store and to checkpoints/ in the data directory",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        type=_network,
        metavar="CIDR",
        help="a reverse proxy (address or network) whose X-Forwarded-For is believed; "
        f"repeat for several (default: ${TRUSTED_PROXIES_ENV}, comma or space separated; "
        "unset: none, the client IP is the connecting peer)",
    )
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.trusted_proxy is not None:  # the flags replace the environment variable
        trusted_proxies = tuple(args.trusted_proxy)
    else:
        try:
            trusted_proxies = trusted_proxies_from_env(TRUSTED_PROXIES_ENV)
        except ValueError as exc:
            parser.error(str(exc))

    settings = Settings(
        data_dir=args.data_dir.resolve(),
        audit_store=args.audit_store,
        checkpoint_key=args.checkpoint_key.resolve() if args.checkpoint_key else None,
        trusted_proxies=trusted_proxies,
    )
    # Worker processes build the app themselves (factory=True): pass the settings through
    # the environment, which they inherit.
    os.environ.update(settings.to_env())
    print(
        f"auditmw example ({args.framework}) on http://{args.host}:{args.port}/\n"
        "  sign in as admin@example.com / admin  or  member@example.com / member\n"
        f"  audit dashboard: http://{args.host}:{args.port}/admin/audit/ (admins)\n"
        f"  data: {settings.data_dir}  audit store: {settings.audit_store_target}"
        + (f"\n  signed checkpoints: {settings.checkpoint_dir}" if settings.checkpoint_key else "")
        + f"\n  trusted proxies: {' '.join(trusted_proxies) or 'none (the client IP is the peer)'}",
        flush=True,
    )
    # uvicorn handles SIGINT/SIGTERM by running the lifespan shutdown, which closes the
    # audit store: pending events are committed before the process exits. Afterwards it
    # re-raises the signal to the handler it found, so install one that exits with 0
    # (the default handler would kill the process: exit status -15).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    uvicorn.run(
        APPS[args.framework],
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        # auditmw applies the trusted-proxy rule (--trusted-proxy). uvicorn's own proxy
        # headers, on by default for peers in 127.0.0.1 and ::1, would rewrite the client
        # from X-Forwarded-For first: a local client could choose its logged IP.
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()

"""python -m example_app --host 127.0.0.1 --port 8000 --data-dir ./data
[--workers N] [--audit-store URL] [--framework starlette|litestar] [--checkpoint-key FILE]"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import uvicorn

from .settings import Settings

APPS = {
    "starlette": "example_app.app:create_app",
    "litestar": "example_app.litestar_app:create_app",
}


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
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    settings = Settings(
        data_dir=args.data_dir.resolve(),
        audit_store=args.audit_store,
        checkpoint_key=args.checkpoint_key.resolve() if args.checkpoint_key else None,
    )
    # Worker processes build the app themselves (factory=True): pass the settings through
    # the environment, which they inherit.
    os.environ.update(settings.to_env())
    print(
        f"auditmw example ({args.framework}) on http://{args.host}:{args.port}/\n"
        "  sign in as admin@example.com / admin  or  member@example.com / member\n"
        f"  audit dashboard: http://{args.host}:{args.port}/admin/audit/ (admins)\n"
        f"  data: {settings.data_dir}  audit store: {settings.audit_store_target}"
        + (f"\n  signed checkpoints: {settings.checkpoint_dir}" if settings.checkpoint_key else ""),
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
    )


if __name__ == "__main__":
    main()

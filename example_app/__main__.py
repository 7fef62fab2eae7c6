"""python -m example_app --host 127.0.0.1 --port 8000 --data-dir ./data"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from example_app.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="example_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    print(f"auditmw demo on http://{args.host}:{args.port}/  (data in {args.data_dir})")
    # uvicorn handles SIGINT/SIGTERM by running the lifespan shutdown: the store drains.
    uvicorn.run(create_app(args.data_dir), host=args.host, port=args.port)


if __name__ == "__main__":
    main()

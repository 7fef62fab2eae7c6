"""Every Python sample in README.md runs, so the README cannot rot.

Each sample runs in a fresh namespace in an empty directory. A sample that builds an ASGI
``app`` says what to try with a last line ``# try: METHOD PATH [JSON body or headers]``:
the test starts the app's lifespan, sends that request through httpx, expects success,
and checks that the request left a verified audit event in the sample's ``store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import sys
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._paths import README

SAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
TRY = re.compile(r"^# try: (\w+) (\S+)(?: (.*))?$", re.M)


@contextlib.contextmanager
def inside(directory: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol, as a server does."""
    to_app: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def send(message: Any) -> None:
        await from_app.put(message)

    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, to_app.get, send)
    )
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
        await task


def test_the_readme_has_samples() -> None:
    assert len(SAMPLES) >= 5


@pytest.mark.parametrize("code", SAMPLES, ids=[f"sample-{i}" for i in range(len(SAMPLES))])
async def test_readme_sample_runs(code: str, tmp_path: Path) -> None:
    # A real module: frameworks (Litestar) resolve annotations through sys.modules.
    module = types.ModuleType(f"readme_sample_{abs(hash(code))}")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    with inside(tmp_path), contextlib.ExitStack() as cleanup:
        cleanup.callback(sys.modules.pop, module.__name__, None)
        if "asyncio.run(" in code:
            # A script: run it in a thread, where asyncio.run may start its own loop.
            await asyncio.to_thread(exec, compile(code, "README.md", "exec"), namespace)
            return
        exec(compile(code, "README.md", "exec"), namespace)
        attempt = TRY.search(code)
        assert attempt is not None, "a sample that builds an app says what to try"
        method, path, extra = attempt.groups()
        options: dict[str, Any] = {}
        if extra:
            data = json.loads(extra)
            key = "headers" if all(k.startswith("x-") for k in data) else "json"
            options[key] = data
        app, store = namespace["app"], namespace["store"]
        async with lifespan(app):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                response = await client.request(method, path, **options)
                hostile = await client.request(method, hostile_path(path), **options)
            assert response.status_code < 400, response.text
            # A client's id longer than any event can hold: a clear answer, never a 500.
            assert hostile.status_code < 500, hostile.text
            if "AdminApp" not in code:
                assert await store.count() >= 1
            assert (await store.verify()).ok


def hostile_path(path: str) -> str:
    """``path`` with each segment that holds an id (a digit) replaced by 300 characters."""
    return "/".join(
        "x" * 300 if any(c.isdigit() for c in part) else part for part in path.split("/")
    )


COMMANDS = [
    line.split("#")[0].strip()
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    for line in block.splitlines()
    if line.startswith("auditmw ")
]


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_cli_lines_parse(command: str) -> None:
    """The shell samples use only commands and flags the CLI has."""
    from auditmw._cli import build_parser

    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.command in {
        "verify",
        "export",
        "archive",
        "prune",
        "hold",
        "erase",
        "prove",
        "keygen",
        "stream",
        "streams",
        "tail",
    }


def test_the_readme_shows_the_cli() -> None:
    assert len(COMMANDS) >= 4

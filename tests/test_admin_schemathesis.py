"""schemathesis, with every check it has, against the real example app.

``python -m example_app`` runs on 127.0.0.1 (uvicorn, a temporary data directory) and is
seeded through its own API. The admin app's OpenAPI document is read from the running
app, and the schemathesis command line tests every operation in it — examples, coverage,
fuzzing and stateful phases, valid and invalid data (``--mode all``), ``--checks all``
(response conformance, documented status codes, content types and headers, rejection of
invalid data, acceptance of valid data, methods not allowed, ignored authentication, use
after free...) — signed in as the admin with HTTP Basic, then once more signed out, where
every answer must be a documented 401. Both runs must report no failure at all.

The rules the document cannot state (a cursor belongs to its filters, ...) are given to
schemathesis by ``_schemathesis_hooks.py``. The seed is random: a failure prints it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import pytest

from auditmw import SQLiteStore

from ._example import ADMIN, MEMBER
from ._servers import running_example_app

HOOKS = Path(__file__).with_name("_schemathesis_hooks.py")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@dataclass
class ExampleApp:
    base: str
    document: Path  # the admin app's OpenAPI document, as the running app serves it
    api_url: str  # where the document's `servers` entry says the API is


@pytest.fixture(scope="module")
def example_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleApp]:
    directory = tmp_path_factory.mktemp("schemathesis")
    with running_example_app(directory) as server:
        seed(server.url)
        url = f"{server.url}/admin/audit/openapi.json"
        document = httpx.get(url, auth=ADMIN, timeout=30).json()
        path = directory / "openapi.json"
        path.write_text(json.dumps(document))
        yield ExampleApp(server.url, path, urljoin(url, document["servers"][0]["url"]))
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=120) == 0, server.output()
    # Everything the runs did (exports are recorded too) left an intact chain.
    report = asyncio.run(verify(directory / "data" / "audit.db"))
    assert report.ok, report.summary()


async def verify(path: Path) -> Any:
    async with SQLiteStore(path) as store:
        return await store.verify()


def seed(base: str) -> None:
    """Events of every kind, and more than a page (so cursors exist), through the API."""
    with (
        httpx.Client(base_url=base, auth=ADMIN, timeout=30) as admin,
        httpx.Client(base_url=base, auth=MEMBER, timeout=30) as member,
    ):
        for email, password in (ADMIN, MEMBER):
            signed_in = admin.post("/auth/sign-in", json={"email": email, "password": password})
            assert signed_in.status_code == 200
        failed = admin.post("/auth/sign-in", json={"email": "x@example.com", "password": "no"})
        assert failed.status_code == 401
        for index in range(60):
            client = admin if index % 2 else member
            created = client.post("/projects", json={"name": f"<b>Project {index}</b>"})
            assert created.status_code == 201
            project = created.json()["id"]
            assert client.patch(f"/projects/{project}", json={"name": "renamed"}).status_code == 200
            if index % 3 == 0:
                assert client.delete(f"/projects/{project}").status_code == 204
        role = admin.put("/users/member@example.com/role", json={"role": "member"})
        assert role.status_code == 200
        assert admin.post("/api-keys", json={"name": "ci"}).status_code == 201


def run_schemathesis(
    app: ExampleApp, report: Path, *options: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    command = [
        str(SCHEMATHESIS),
        "run",
        str(app.document),
        "--url",
        app.api_url,
        "--checks",
        "all",
        "--mode",
        "all",
        "--workers",
        "1",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *options,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "NO_COLOR": "1"}
    result = subprocess.run(
        command, cwd=report.parent, env=env, capture_output=True, text=True, timeout=600
    )
    return result, json.loads(report.read_text())


def operation_labels(app: ExampleApp) -> set[str]:
    document = json.loads(app.document.read_text())
    paths = document["paths"].items()
    return {f"{method.upper()} {path}" for path, item in paths for method in item}


def test_the_admin_api_passes_every_check_signed_in(
    example_app: ExampleApp, tmp_path: Path
) -> None:
    assert example_app.api_url == f"{example_app.base}/admin/audit"
    result, report = run_schemathesis(
        example_app,
        tmp_path / "report.json",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--auth",
        ":".join(ADMIN),
        "--max-examples",
        "15",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert (report["failures"], report["errors"]) == ([], []), output
    operations = operation_labels(example_app)
    assert report["operations"]["tested"] == report["operations"]["total"] == len(operations)
    for phase in ("examples", "coverage", "fuzzing", "stateful"):
        assert report["phases"][phase]["status"] == "success", (phase, output)
    assert report["warnings"]["missing_auth"] == [], output  # signed in: real answers
    assert report["test_cases"]["generated"] >= 10 * len(operations)


def test_signed_out_every_answer_is_a_documented_401(
    example_app: ExampleApp, tmp_path: Path
) -> None:
    har = tmp_path / "requests.har"
    result, report = run_schemathesis(
        example_app,
        tmp_path / "report.json",
        *("--phases", "fuzzing", "--max-examples", "10"),
        *("--report", "har", "--report-har-path", str(har)),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert (report["failures"], report["errors"]) == ([], []), output
    # Every request the admin app received was answered 401. Starlette's Mount does not
    # route a path holding a newline (its pattern's "." stops there): the host app
    # answers that one 404, and the admin app never sees it.
    unrouted = set()
    for entry in json.loads(har.read_text())["log"]["entries"]:
        path = unquote(urlsplit(entry["request"]["url"]).path)
        status = entry["response"]["status"]
        if status == 404 and "\n" in path:
            unrouted.add(path)
            continue
        assert status == 401, (path, status, output)
    # Each operation answered 401 alone (and each answer passed every check), unless
    # one of its generated paths never reached the admin app.
    missing_auth = set(report["warnings"]["missing_auth"])
    assert missing_auth <= operation_labels(example_app), output
    assert len(missing_auth) >= len(operation_labels(example_app)) - len(unrouted), output

"""The Splunk HEC destination against a real HTTP server (uvicorn on a loopback port)
implementing the collector's contract: ``POST /services/collector/event`` with
``Authorization: Splunk <token>``, a body of concatenated JSON envelopes each with
``event``, answered ``{"text": "Success", "code": 0}``; a bad token is 401 (code 4), bad
data 400 (code 6), a busy server 503 (code 9)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from auditmw._cli import ExitCode
from auditmw._streams.splunk import COLLECTOR_PATH

from ._command import cli
from ._servers import serving_in_thread
from ._streams import append_events, export_lines, stream_json
from ._tls import make_certificates

TOKEN = "11111111-2222-3333-4444-555555555555"


def envelopes(body: bytes) -> list[dict[str, Any]]:
    """The JSON objects concatenated in ``body`` (as HEC reads a batch)."""
    decoder = json.JSONDecoder()
    text, position, found = body.decode(), 0, []
    while position < len(text):
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            break
        envelope, position = decoder.raw_decode(text, position)
        found.append(envelope)
    return found


@dataclass
class Collector:
    """A Splunk HTTP Event Collector: what it indexed, and answers to give first."""

    indexed: list[dict[str, Any]] = field(default_factory=list)
    busy: int = 0

    def app(self) -> Starlette:
        async def collect(request: Request) -> JSONResponse:
            if request.headers.get("authorization") != f"Splunk {TOKEN}":
                return JSONResponse({"text": "Invalid token", "code": 4}, status_code=401)
            if self.busy:
                self.busy -= 1
                return JSONResponse({"text": "Server is busy", "code": 9}, status_code=503)
            try:
                batch = envelopes(await request.body())
                for envelope in batch:
                    assert isinstance(envelope["time"], float | int)
                    assert isinstance(envelope["host"], str) and envelope["host"]
                    assert isinstance(envelope["event"], dict)
            except (ValueError, KeyError, AssertionError):
                return JSONResponse({"text": "Invalid data format", "code": 6}, status_code=400)
            if not batch:
                return JSONResponse({"text": "No data", "code": 5}, status_code=400)
            self.indexed += batch
            return JSONResponse({"text": "Success", "code": 0})

        return Starlette(routes=[Route(COLLECTOR_PATH, collect, methods=["POST"])])


@pytest.fixture
def url(store_url_factory: Callable[[], str]) -> str:
    return store_url_factory()


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "hec.token"
    path.write_text(TOKEN + "\n")
    return str(path)


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def hec(collector: Collector) -> Iterator[str]:
    with serving_in_thread(collector.app(), lifespan="off") as base:
        yield base.replace("http://", "splunk+http://")


def test_once_sends_every_event_in_hec_envelopes(
    url: str, hec: str, collector: Collector, token_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 7)
    append_events(url, 2, log="other")
    code, _, err = cli(
        capsys, "stream", url, "--to", f"{hec}?index=audit", "--secret-file", token_file,
        "--once", "--batch-size", "3",
    )  # fmt: skip
    assert code == ExitCode.OK, err
    lines = export_lines(url)
    assert [orjson.dumps(e["event"]) + b"\n" for e in collector.indexed] == lines
    for envelope, line in zip(collector.indexed, lines, strict=True):
        assert envelope["source"] == "auditmw"
        assert envelope["sourcetype"] == "auditmw:event"
        assert envelope["index"] == "audit"
        stamp = orjson.loads(line)["timestamp"]
        assert envelope["time"] == pytest.approx(
            datetime.fromisoformat(stamp).timestamp(), abs=1e-6
        )
    code, output, _ = cli(capsys, "streams", url, "--json")
    assert stream_json(output)["settings"]["destination"] == hec  # without the query


def test_a_bad_token_stops_the_stream(
    tmp_path: Path, hec: str, collector: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "audit.db")
    append_events(url, 2)
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token")
    code, _, err = cli(capsys, "stream", url, "--to", hec, "--secret-file", str(wrong), "--once")
    assert code == ExitCode.REFUSED
    assert "answered 401" in err and "Invalid token" in err
    assert collector.indexed == []


def test_a_busy_collector_is_retried(
    tmp_path: Path, hec: str, collector: Collector, token_file: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = str(tmp_path / "audit.db")
    append_events(url, 3)
    collector.busy = 2
    code, _, err = cli(capsys, "stream", url, "--to", hec, "--secret-file", token_file, "--once")
    assert code == ExitCode.OK, err
    assert collector.busy == 0
    assert len(collector.indexed) == 3


def test_an_answer_that_is_not_an_acknowledgement_is_refused(
    tmp_path: Path, token_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def not_hec(request: Request) -> JSONResponse:
        return JSONResponse({"text": "queued", "code": 17})

    url = str(tmp_path / "audit.db")
    append_events(url, 1)
    app = Starlette(routes=[Route(COLLECTOR_PATH, not_hec, methods=["POST"])])
    with serving_in_thread(app, lifespan="off") as base:
        target = base.replace("http://", "splunk+http://")
        code, _, err = cli(
            capsys, "stream", url, "--to", target, "--secret-file", token_file, "--once"
        )
    assert code == ExitCode.REFUSED
    assert "not an acknowledgement" in err


def test_bad_settings_are_usage_errors(
    tmp_path: Path, token_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "audit.db")
    append_events(url, 1)
    spaced = tmp_path / "spaced.token"
    spaced.write_text("two words")
    cases = [
        (("--to", "splunk+https://127.0.0.1:9"), "needs --secret-file"),
        (("--to", "splunk+https://127.0.0.1:9?sourcetype=x", "--secret-file", token_file),
         "unknown Splunk destination option"),
        (("--to", "splunk+https://127.0.0.1:9", "--secret-file", str(spaced)), "printable"),
        (("--to", "splunk+ftp://127.0.0.1:9", "--secret-file", token_file), "unsupported"),
    ]  # fmt: skip
    for options, message in cases:
        code, _, err = cli(capsys, "stream", url, "--once", *options)
        assert code == ExitCode.USAGE, err
        assert message in err
        assert "Traceback" not in err


def test_hec_over_https_with_a_private_ca(
    tmp_path: Path, collector: Collector, token_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "audit.db")
    append_events(url, 4)
    certs = make_certificates(tmp_path / "tls")
    options = {"ssl_certfile": str(certs.cert_file), "ssl_keyfile": str(certs.key_file)}
    with serving_in_thread(collector.app(), lifespan="off", **options) as base:
        target = base.replace("http://", "splunk+https://")
        code, _, err = cli(
            capsys, "stream", url, "--to", target, "--secret-file", token_file, "--once",
            "--ca-file", str(certs.ca_file),
        )  # fmt: skip
        assert code == ExitCode.OK, err
    assert [orjson.dumps(e["event"]) + b"\n" for e in collector.indexed] == export_lines(url)

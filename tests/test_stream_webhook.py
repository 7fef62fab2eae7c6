"""The webhook destination against a real HTTP server (uvicorn on a loopback port) whose
receiver checks each request with docs/streams.md's ``verify_signature``: every batch is
signed and arrives whole; a tampered body, a wrong secret and an old timestamp are
refused; 5xx is retried, other 4xx stop the stream; HTTPS with a CA made by the test."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from auditmw import destination_for
from auditmw._cli import ExitCode
from auditmw._streams.webhook import SIGNATURE_HEADER

from ._command import cli
from ._paths import DOCS
from ._servers import serving_in_thread
from ._streams import append_events, export_lines, stream_json
from ._tls import make_certificates

SAMPLES = re.findall(r"```python\n(.*?)```", (DOCS / "streams.md").read_text(), re.S)
[VERIFIER] = [sample for sample in SAMPLES if "def verify_signature" in sample]
SECRET = b"s3cret-shared-with-the-receiver"


def documented_verify() -> Callable[..., None]:
    namespace: dict[str, Any] = {}
    exec(VERIFIER, namespace)
    verify: Callable[..., None] = namespace["verify_signature"]
    return verify


@dataclass
class Receiver:
    """What the receiver accepted, the raw requests it saw, and the answers it is told to
    give first (then 200)."""

    batches: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    refused: int = 0
    answers: list[int] = field(default_factory=list)

    def app(self, secret: bytes) -> Starlette:
        verify = documented_verify()

        async def receive(request: Request) -> Response:
            body = await request.body()
            header = request.headers.get(SIGNATURE_HEADER, "")
            self.requests.append((header, body))
            try:
                verify(secret, header, body)
            except ValueError as exc:
                self.refused += 1
                return Response(str(exc), status_code=401)
            if self.answers:
                return Response("not now", status_code=self.answers.pop(0))
            self.batches.append(orjson.loads(body))
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", receive, methods=["POST"])])


@pytest.fixture
def url(store_url_factory: Callable[[], str]) -> str:
    return store_url_factory()


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "webhook.secret"
    path.write_bytes(SECRET + b"\n")  # the line end an editor adds is not part of it
    return str(path)


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def hook(receiver: Receiver) -> Iterator[str]:
    with serving_in_thread(receiver.app(SECRET), lifespan="off") as base:
        yield f"{base}/hook"


def records_of(batches: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(record) + b"\n" for batch in batches for record in batch["events"]]


def test_once_posts_signed_batches_of_every_event_in_order(
    url: str, hook: str, receiver: Receiver, secret_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 12)
    append_events(url, 3, log="other")
    code, _, err = cli(
        capsys, "stream", url, "--to", hook, "--secret-file", secret_file, "--once",
        "--batch-size", "5",
    )  # fmt: skip
    assert code == ExitCode.OK, err
    assert receiver.refused == 0
    assert records_of(receiver.batches) == export_lines(url)
    assert [(b["log"], b["first_seq"], b["last_seq"]) for b in receiver.batches] == [
        ("default", 1, 5),
        ("default", 6, 10),
        ("default", 11, 12),
        ("other", 1, 3),
    ]
    code, output, _ = cli(capsys, "streams", url, "--json")
    assert stream_json(output)["settings"]["destination"] == hook


def test_the_documented_check_refuses_a_tampered_body_and_an_old_signature(
    tmp_path: Path, hook: str, receiver: Receiver, secret_file: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = str(tmp_path / "audit.db")
    append_events(url, 2)
    assert cli(capsys, "stream", url, "--to", hook, "--secret-file", secret_file, "--once")[0] == 0
    [(header, body)] = receiver.requests
    verify = documented_verify()
    verify(SECRET, header, body)
    tampered = body.replace(b'"resource_id":"1"', b'"resource_id":"7"')
    assert tampered != body
    with pytest.raises(ValueError, match="bad signature"):
        verify(SECRET, header, tampered)
    with pytest.raises(ValueError, match="bad signature"):
        verify(b"another secret", header, body)
    sent = int(header.split(",")[0].removeprefix("t="))
    with pytest.raises(ValueError, match="replay window"):
        verify(SECRET, header, body, now=sent + 301)
    with pytest.raises(ValueError, match="malformed"):
        verify(SECRET, "v1=00", body)
    # The same refusals from the running receiver, sent over HTTP.
    for headers, content in [({SIGNATURE_HEADER: header}, tampered), ({}, body)]:
        assert httpx.post(hook, content=content, headers=headers).status_code == 401
    assert httpx.post(hook, content=body, headers={SIGNATURE_HEADER: header}).status_code == 204
    assert receiver.refused == 2


def test_a_wrong_secret_stops_the_stream_and_the_cursor_stays(
    url: str, hook: str, receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append_events(url, 3)
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(b"not the secret")
    code, _, err = cli(capsys, "stream", url, "--to", hook, "--secret-file", str(wrong), "--once")
    assert code == ExitCode.REFUSED
    assert "answered 401" in err and "bad signature" in err
    code, output, _ = cli(capsys, "streams", url, "--json")
    stream = stream_json(output)
    assert all(log["cursor"] == 0 for log in stream["logs"])
    assert "refused" in stream["last_error"]
    assert receiver.batches == []


def test_5xx_and_429_are_retried_and_other_4xx_refused(
    tmp_path: Path, hook: str, receiver: Receiver, secret_file: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = str(tmp_path / "audit.db")
    append_events(url, 4)
    receiver.answers = [503, 429, 500, 408]
    args = ("stream", url, "--to", hook, "--secret-file", secret_file, "--once")
    code, _, err = cli(capsys, *args)
    assert code == ExitCode.OK, err
    assert receiver.answers == []
    assert records_of(receiver.batches) == export_lines(url)
    append_events(url, 1)
    receiver.answers = [404]
    code, _, err = cli(capsys, *args)
    assert code == ExitCode.REFUSED
    assert "answered 404" in err
    assert len(receiver.batches) == 1  # the fifth event was not acknowledged


def test_an_unreachable_receiver_is_retried_until_given_up(
    tmp_path: Path, secret_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "audit.db")
    append_events(url, 1)
    with serving_in_thread(Starlette(), lifespan="off") as base:
        gone = f"{base}/hook"
    code, _, err = cli(
        capsys, "stream", url, "--to", gone, "--secret-file", secret_file, "--once",
        "--give-up-after", "0.5",
    )  # fmt: skip
    assert code == ExitCode.UNAVAILABLE, err
    assert "gave up" in err


def test_bad_settings_are_usage_errors(
    tmp_path: Path, secret_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "audit.db")
    append_events(url, 1)
    hook = "https://127.0.0.1:9/hook"
    cases = [
        ((), "needs --secret-file"),
        (("--secret-file", str(tmp_path / "missing")), "cannot read the secret file"),
        (("--secret-file", secret_file, "--ca-file", secret_file), "cannot load the CA file"),
    ]
    for options, message in cases:
        code, _, err = cli(capsys, "stream", url, "--to", hook, "--once", *options)
        assert code == ExitCode.USAGE
        assert message in err
        assert "Traceback" not in err


def test_https_with_a_private_ca(
    tmp_path: Path, receiver: Receiver, secret_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "audit.db")
    append_events(url, 3)
    certs = make_certificates(tmp_path / "tls")
    app = receiver.app(SECRET)
    options = {"ssl_certfile": str(certs.cert_file), "ssl_keyfile": str(certs.key_file)}
    with serving_in_thread(app, lifespan="off", **options) as base:
        hook = base.replace("http://", "https://") + "/hook"
        args = ("stream", url, "--to", hook, "--secret-file", secret_file, "--once")
        code, _, err = cli(capsys, *args)
        assert code == ExitCode.REFUSED  # the system's CAs do not know the test's
        assert "certificate" in err
        assert receiver.batches == []
        code, _, err = cli(capsys, *args, "--ca-file", str(certs.ca_file))
        assert code == ExitCode.OK, err
    assert records_of(receiver.batches) == export_lines(url)


@pytest.mark.parametrize(("status", "code"), [(200, ExitCode.OK), (400, ExitCode.REFUSED)])
def test_an_endless_answer_is_read_only_so_far(
    tmp_path: Path, secret_file: str, status: int, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[int] = []

    async def endless(request: Request) -> AsyncIterator[bytes]:
        # 1 GiB unless the client hangs up first (then the server can stop).
        while len(sent) < 16384 and not await request.is_disconnected():
            sent.append(1)
            yield b"x" * 65536

    async def hostile(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(endless(request), status_code=status)

    url = str(tmp_path / "audit.db")
    append_events(url, 2)
    app = Starlette(routes=[Route("/hook", hostile, methods=["POST"])])
    with serving_in_thread(app, lifespan="off") as base:
        args = ("stream", url, "--to", f"{base}/hook", "--secret-file", secret_file, "--once")
        result, _, err = cli(capsys, *args)
    assert result == code, err
    if status == 400:
        assert "answered 400: 'xxxx" in err
        assert len(err) < 1000  # the answer's start only
    assert len(sent) < 100  # the client hung up after 64 KiB (and the server's buffers)


def test_each_destination_describes_itself_without_secrets(
    tmp_path: Path, secret_file: str
) -> None:
    settings = {"secret_file": secret_file}
    cases = {
        "https://user:pw@hooks.example.com/in?token=x": "https://user@hooks.example.com/in",
        "splunk+https://splunk.example.com:8088?index=audit": (
            "splunk+https://splunk.example.com:8088/services/collector/event"
        ),
        "syslog+tls://logs.example.com:6514": "syslog+tls://logs.example.com:6514",
        "syslog+tcp://logs.example.com:514": "syslog+tcp://logs.example.com:514",
    }
    for url, described in cases.items():
        destination = destination_for(url, settings)
        assert destination.describe() == described

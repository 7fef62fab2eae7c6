"""``RequestCapture``: one reading of a request for every entry point; ``error_outcome``."""

from __future__ import annotations

from typing import Any

import pytest

from auditmw import Actor
from auditmw._capture import RequestCapture, error_outcome


def scope(headers: list[tuple[bytes, bytes]], client: tuple[str, int]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/projects",
        "headers": headers,
        "client": client,
    }


def test_one_reading_with_the_configured_options() -> None:
    capture = RequestCapture(trusted_proxies=["10.0.0.0/8"], request_id_header="X-Correlation-ID")
    request = capture.read(
        scope(
            [
                (b"user-agent", b"curl/8"),
                (b"x-forwarded-for", b"6.6.6.6, 198.51.100.9"),
                (b"x-correlation-id", b"corr-1"),
                (b"x-correlation-id", b"second-ignored"),
            ],
            ("10.1.2.3", 5000),
        )
    )
    assert (request.client_ip, request.peer_ip) == ("198.51.100.9", "10.1.2.3")
    assert (request.user_agent, request.request_id) == ("curl/8", "corr-1")
    assert (request.method, request.path) == ("POST", "/projects")
    assert capture.request_id_echo(request) == (b"x-correlation-id", b"corr-1")


def test_the_user_is_resolved_when_asked_not_when_read() -> None:
    capture = RequestCapture(resolve_user=lambda scope: Actor(user_id=scope.get("user")))
    request = capture.read(scope([], ("127.0.0.1", 5000)))
    request.scope["user"] = "u1"  # authentication middleware runs after the capture
    assert request.user() == Actor(user_id="u1")


def test_an_untrusted_peer_is_the_client_and_an_invalid_id_is_replaced() -> None:
    request = RequestCapture().read(
        scope([(b"x-forwarded-for", b"6.6.6.6"), (b"x-request-id", b"a b")], ("203.0.113.7", 1))
    )
    assert request.client_ip == "203.0.113.7"
    assert request.request_id != "a b" and len(request.request_id) == 36


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, None),
        (302, None),
        (399, None),
        (400, "failure"),
        (401, "denied"),
        (403, "denied"),
        (404, "failure"),
        (500, "failure"),
        (503, "failure"),
    ],
)
def test_error_outcome(status: int, outcome: str | None) -> None:
    assert error_outcome(status) == outcome

"""Hostile input: arbitrary header bytes, odd peers, broken user objects, huge values.

The middleware must never raise, and must never log an IP the client chose unless a
trusted proxy vouched for it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import httpx
import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

import auditmw
from auditmw import AuditMiddleware, Event, SQLiteStore, audit

from .test_client_ip import TRUSTED

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")

INTERESTING_NAMES = [
    b"x-forwarded-for",
    b"forwarded",
    b"x-real-ip",
    b"x-request-id",
    b"user-agent",
    b"X-Forwarded-For",  # not lowercased: a server bug, must simply be ignored
]
header_names = st.one_of(st.sampled_from(INTERESTING_NAMES), st.binary(max_size=40))
ip_text = st.ip_addresses().map(str)
forwarding_values = st.lists(
    st.one_of(
        ip_text,
        ip_text.map(lambda ip: f"[{ip}]:443"),
        ip_text.map(lambda ip: f'for="{ip}"'),
        st.sampled_from(["unknown", "_hidden", "", " ", '"', "[", "for=", ";", "::", "%"]),
        st.text(max_size=20),
    ),
    max_size=6,
).map(lambda parts: ", ".join(parts).encode("utf-8", "surrogateescape"))
# Text as clients send it: UTF-8, with lone surrogates encoded anyway (not valid UTF-8).
encoded_text = st.text(st.characters(exclude_categories=()), max_size=60).map(
    lambda text: text.encode("utf-8", "surrogatepass")
)
header_values = st.one_of(st.binary(max_size=300), forwarding_values, encoded_text)
headers_strategy = st.lists(
    st.one_of(
        st.tuples(st.just(b"x-forwarded-for"), forwarding_values),  # the header that matters
        st.tuples(header_names, header_values),
    ),
    max_size=12,
)
ports = st.integers(0, 65535)
clients = st.one_of(
    st.tuples(st.sampled_from(["10.1.2.3", "fd00::7", "::ffff:10.0.0.9"]), ports),  # trusted
    st.tuples(ip_text, ports),  # almost always untrusted
    st.one_of(  # not an IP peer at all
        st.none(),
        st.tuples(st.text(max_size=50), st.integers()),
        st.just(("", 0)),
        st.just(("/run/app.sock",)),
        st.just(["10.0.0.1", 80]),
    ),
)


async def recording_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app that records one event per request."""
    if scope["type"] != "http":
        return
    event = await audit("probe.hit", "probe")
    assert event is not None
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": event.id.encode()})


def http_scope(headers: list[tuple[bytes, bytes]], client: Any, path: str = "/") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": ("test", 80),
    }


async def call(app: Any, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def normalized_peer(client: Any) -> str | None:
    if not isinstance(client, tuple | list) or not client or not isinstance(client[0], str):
        return None
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return None
    if "%" in client[0]:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def is_trusted(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in ipaddress.ip_network(net) for net in TRUSTED)


def test_arbitrary_headers_and_peers_never_crash_nor_spoof(tmp_path: Path) -> None:
    with asyncio.Runner() as runner:
        store = SQLiteStore(tmp_path / "audit.db", synchronous="OFF")
        runner.run(store.open())
        app = AuditMiddleware(recording_app, store=store, trusted_proxies=TRUSTED)
        examples = 0

        @settings(
            max_examples=250,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(headers=headers_strategy, client=clients)
        def check(headers: list[tuple[bytes, bytes]], client: Any) -> None:
            nonlocal examples
            examples += 1
            sent = runner.run(call(app, http_scope(headers, client)))
            start, body = sent[0], sent[1]
            assert start["status"] == 200
            [request_id] = [value for name, value in start["headers"] if name == b"x-request-id"]
            assert TOKEN.fullmatch(request_id.decode("ascii"))
            stored = runner.run(store.get(body["body"].decode()))
            assert stored is not None
            assert stored.request_id == request_id.decode()
            peer = normalized_peer(client)
            if peer is None or not is_trusted(peer):
                hypothesis.event("untrusted or no peer")
                assert stored.ip_address == peer  # headers ignored: never the client's pick
            elif stored.ip_address != peer:
                hypothesis.event("trusted peer, client IP from the header")
                # Vouched for by a trusted hop: it must come from the configured header.
                forwarded = b",".join(
                    value for name, value in headers if name == b"x-forwarded-for"
                )
                assert stored.ip_address in addresses_in(forwarded.decode("latin-1"))
            user_agents = [value for name, value in headers if name == b"user-agent"]
            expected_agent = header_text(user_agents[0])[:1024] if user_agents else None
            assert stored.user_agent == expected_agent

        check()
        report = runner.run(store.verify())
        runner.run(store.close())
    assert report.ok and report.entries == examples


def header_text(value: bytes) -> str:
    """The documented reading of a header (docs/capture.md): UTF-8, else Latin-1."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def addresses_in(text: str) -> set[str]:
    """Every IP address written anywhere in ``text`` (an oracle independent of the code)."""
    found: set[str] = set()
    for token in re.split(r'[,\s;="\[\]]+', text):
        for candidate in (token, token.rsplit(":", 1)[0]):
            try:
                address = ipaddress.ip_address(candidate)
            except ValueError:
                continue
            found.add(str(address))
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                found.add(str(address.ipv4_mapped))
    return found


def test_request_events_survive_any_path_text(tmp_path: Path) -> None:
    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with asyncio.Runner() as runner:
        store = SQLiteStore(tmp_path / "audit.db", synchronous="OFF")
        runner.run(store.open())
        app = AuditMiddleware(ok, store=store, record_requests=["POST"])

        @settings(max_examples=100, deadline=None)
        @given(path=st.text(max_size=3000))  # lone surrogates included
        def check(path: str) -> None:
            sent = runner.run(call(app, http_scope([], ("192.0.2.1", 1), path=path)))
            assert sent[0]["status"] == 204

        check()
        report = runner.run(store.verify())
        runner.run(store.close())
    assert report.ok and report.entries == 100


async def test_crlf_and_oversized_request_ids_are_never_echoed(store: SQLiteStore) -> None:
    app = AuditMiddleware(recording_app, store=store)
    for hostile in (b"abc\r\nset-cookie: pwned=1", b"x" * 5000, b"\x00", b"id\xff"):
        sent = await call(app, http_scope([(b"x-request-id", hostile)], ("192.0.2.1", 1)))
        echoed = [value for name, value in sent[0]["headers"] if name == b"x-request-id"]
        assert len(echoed) == 1 and echoed[0] != hostile and TOKEN.fullmatch(echoed[0].decode())


async def test_ten_thousand_forwarded_hops(store: SQLiteStore) -> None:
    app = AuditMiddleware(recording_app, store=store, trusted_proxies=TRUSTED)
    forged = ", ".join(f"6.6.{n // 256 % 256}.{n % 256}" for n in range(10_000))
    headers = [(b"x-forwarded-for", f"{forged}, 198.51.100.9, 10.0.0.3".encode())]
    sent = await call(app, http_scope(headers, ("10.0.0.1", 1)))
    event = await store.get(sent[1]["body"].decode())
    assert event is not None and event.ip_address == "198.51.100.9"


class ExplodingUser:
    @property
    def is_authenticated(self) -> bool:
        raise RuntimeError("session backend down")


class LyingUser:
    is_authenticated = True

    @property
    def identity(self) -> str:
        raise NotImplementedError

    id = 12345
    email = 42  # not a string: ignored


async def test_broken_user_objects_never_break_recording(store: SQLiteStore) -> None:
    app = AuditMiddleware(recording_app, store=store)
    for user, expected in (
        (ExplodingUser(), (None, None)),
        (LyingUser(), ("12345", None)),
        ({"sub": "oidc-user", "email": "o@example.com"}, ("oidc-user", "o@example.com")),
        ("plain-name", ("plain-name", None)),
        (object(), (None, None)),
        ({"id": True}, (None, None)),
    ):
        scope = http_scope([], ("192.0.2.1", 1))
        scope["user"] = user
        sent = await call(app, scope)
        event = await store.get(sent[1]["body"].decode())
        assert event is not None and (event.user_id, event.user_email) == expected


async def echo_details(request: Request) -> Response:
    # A careless handler puts client JSON into details.
    await audit("form.submitted", "form", details=await request.json())
    return PlainTextResponse("ok")


async def test_hostile_details_fail_the_request_not_the_log(store: SQLiteStore) -> None:
    app = Starlette(
        routes=[Route("/", echo_details, methods=["POST"])],
        middleware=[Middleware(AuditMiddleware, store=store)],
    )
    deep: Any = "bottom"
    for _ in range(200):
        deep = {"d": deep}
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        too_deep = await client.post("/", content=json.dumps(deep))
        huge_int = await client.post("/", content=b'{"n": 123456789012345678901234567890}')
        secret = await client.post("/", json={"password": "p", "nested": [{"api-key": "k"}]})
    assert (too_deep.status_code, huge_int.status_code, secret.status_code) == (500, 500, 200)
    events = [
        Event.from_entry(row.entry, row.hash, row.personal) async for row in store.iter_chain_rows()
    ]
    assert [e.details for e in events] == [
        {"password": "[MASKED]", "nested": [{"api-key": "[MASKED]"}]}
    ]
    assert (await store.verify()).ok
    assert isinstance(auditmw.ValidationError("f", "m"), ValueError)

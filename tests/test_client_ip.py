"""Client IP: safe by default, and no spoofing trick gets a client-chosen IP logged."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import auditmw
from auditmw._client_ip import ClientIPResolver, forwarded_for, parse_node, server_rewrote_client

PROXY = "10.0.0.5"
TRUSTED = ["10.0.0.0/8", "fd00::/8"]
ATTACKER_CHOICE = "6.6.6.6"


def resolve(
    peer: str | None,
    values: Sequence[str],
    *,
    trusted: Sequence[str] = TRUSTED,
    header: str = "x-forwarded-for",
) -> str | None:
    client = None if peer is None else (peer, 4711)
    encoded = [value.encode() for value in values]
    return ClientIPResolver(trusted, header).resolve(client, encoded)[0]


# --- the rule, unit by unit ------------------------------------------------------------


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_headers() -> None:
    assert resolve("203.0.113.7", ["1.2.3.4"], trusted=()) == "203.0.113.7"


def test_an_untrusted_peer_cannot_use_forwarding_headers() -> None:
    assert resolve("203.0.113.7", [ATTACKER_CHOICE]) == "203.0.113.7"


def test_trusted_peer_rightmost_untrusted_entry_is_the_client() -> None:
    assert resolve(PROXY, ["198.51.100.1"]) == "198.51.100.1"


def test_forged_leftmost_entry_is_ignored() -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6"; our proxy appended the real peer.
    assert resolve(PROXY, [f"{ATTACKER_CHOICE}, 198.51.100.1"]) == "198.51.100.1"


def test_trusted_hops_are_skipped_right_to_left() -> None:
    value = f"{ATTACKER_CHOICE}, 198.51.100.1, 10.1.1.1, 10.2.2.2"
    assert resolve(PROXY, [value]) == "198.51.100.1"


def test_multiple_header_lines_read_as_one_list_in_order() -> None:
    # A client adds its own header line before the proxy's: still the rightmost wins.
    assert resolve(PROXY, [ATTACKER_CHOICE, "198.51.100.1"]) == "198.51.100.1"
    assert resolve(PROXY, ["198.51.100.1", "10.9.9.9"]) == "198.51.100.1"


@pytest.mark.parametrize(
    "garbage",
    ["unknown", "not-an-ip", "", " ", "1.2.3", "1.2.3.4.5", "999.1.1.1", "_hidden", "<script>"],
)
def test_an_unreadable_entry_stops_the_walk_at_the_last_trusted_hop(garbage: str) -> None:
    # Nothing left of the unreadable entry can be vouched for: the nearest trusted
    # hop is the best honest answer, never the attacker's choice further left.
    assert resolve(PROXY, [f"{ATTACKER_CHOICE}, {garbage}"]) == PROXY
    assert resolve(PROXY, [f"{ATTACKER_CHOICE}, {garbage}, 10.3.3.3"]) == "10.3.3.3"


def test_all_hops_trusted_gives_the_leftmost() -> None:
    assert resolve(PROXY, ["10.7.7.7, 10.8.8.8"]) == "10.7.7.7"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("198.51.100.1:8080", "198.51.100.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ('"[2001:db8::1]:443"', "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),  # written in canonical form
        ("::ffff:198.51.100.1", "198.51.100.1"),  # IPv4-mapped becomes IPv4
    ],
)
def test_ports_brackets_quotes_and_ipv6(entry: str, expected: str) -> None:
    assert resolve(PROXY, [entry]) == expected


@pytest.mark.parametrize(
    "entry",
    [
        "198.51.100.1:",
        "198.51.100.1:http",
        "198.51.100.1:123456",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[2001:db8::1]:",
        "fe80::1%eth0",
        "198.51.100.1:٣",  # a non-ASCII digit is no port
    ],
)
def test_malformed_addresses_are_unreadable(entry: str) -> None:
    assert parse_node(entry) is None
    assert resolve(PROXY, [f"{ATTACKER_CHOICE}, {entry}"]) == PROXY


def test_ipv6_peer_and_networks() -> None:
    assert resolve("fd00::9", ["2001:db8::77"]) == "2001:db8::77"
    assert resolve("2001:db8::9", [ATTACKER_CHOICE]) == "2001:db8::9"


def test_ipv4_mapped_peer_matches_ipv4_networks() -> None:
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    assert resolve(f"::ffff:{PROXY}", ["198.51.100.1"]) == "198.51.100.1"


def test_a_peer_that_is_not_an_ip_gives_no_ip() -> None:
    resolver = ClientIPResolver(TRUSTED)
    assert resolver.resolve(("testclient", 50000), [b"198.51.100.1"]) == (None, None)
    assert resolver.resolve(None, [b"198.51.100.1"]) == (None, None)
    assert resolver.resolve(("/run/app.sock", None), []) == (None, None)


def test_bad_trusted_proxy_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        ClientIPResolver(["10.0.0.0/33"])


# --- RFC 7239 Forwarded ---------------------------------------------------------------


def test_forwarded_for_values() -> None:
    header = 'for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711", for=x'
    assert forwarded_for(header) == ["192.0.2.60", "[2001:db8:cafe::17]:4711", "x"]
    assert forwarded_for('for="a,b";by=c, for=d') == ["a,b", "d"]
    assert forwarded_for("proto=https") == [None]  # no for=: unreadable
    assert forwarded_for("for=1.2.3.4;for=5.6.7.8") == [None]  # repeated: unreadable
    assert forwarded_for("for") == [None]


def test_forwarded_header_walk() -> None:
    def forwarded(values: Sequence[str]) -> str | None:
        return resolve(PROXY, values, header="forwarded")

    assert forwarded([f"for={ATTACKER_CHOICE}, for=198.51.100.1;proto=https"]) == "198.51.100.1"
    assert forwarded(['for="[2001:db8::5]:4711"']) == "2001:db8::5"
    assert forwarded([f"for={ATTACKER_CHOICE}, for=unknown"]) == PROXY
    assert forwarded([f"for={ATTACKER_CHOICE}, for=_gazonk"]) == PROXY
    assert forwarded([f"for={ATTACKER_CHOICE}, proto=http"]) == PROXY
    # The other header is not read when Forwarded is configured.
    both = ClientIPResolver(TRUSTED, "forwarded")
    assert both.resolve((PROXY, 1), []) == (PROXY, PROXY)


# --- end to end: what lands in the store ------------------------------------------------


async def record_ip(request: Request) -> PlainTextResponse:
    event = await auditmw.audit("ip.checked", "ip")
    assert event is not None
    return PlainTextResponse(event.id)


def make_app(store: auditmw.SQLiteStore, **options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/", record_ip, methods=["POST"])],
        middleware=[Middleware(auditmw.AuditMiddleware, store=store, **options)],
    )


async def logged_ip(
    app: Starlette,
    store: auditmw.SQLiteStore,
    peer: str,
    headers: list[tuple[str, str]],
    port: int = 4711,
) -> str | None:
    transport = httpx.ASGITransport(app, client=(peer, port))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/", headers=headers)
    assert response.status_code == 200
    event = await store.get(response.text)
    assert event is not None
    return event.ip_address


SPOOFS = [
    [("x-forwarded-for", ATTACKER_CHOICE)],
    [("x-forwarded-for", f"{ATTACKER_CHOICE}, 198.51.100.1")],
    [("x-forwarded-for", ATTACKER_CHOICE), ("x-forwarded-for", ATTACKER_CHOICE)],
    [("x-real-ip", ATTACKER_CHOICE), ("forwarded", f"for={ATTACKER_CHOICE}")],
    [("x-forwarded-for", "garbage, ::1, unknown")],
]


@pytest.mark.parametrize("headers", SPOOFS)
async def test_default_config_logs_the_peer_whatever_is_sent(
    store: auditmw.SQLiteStore, headers: list[tuple[str, str]]
) -> None:
    app = make_app(store)
    assert await logged_ip(app, store, "203.0.113.7", headers) == "203.0.113.7"


@pytest.mark.parametrize("headers", SPOOFS)
async def test_untrusted_peer_with_proxies_configured_logs_the_peer(
    store: auditmw.SQLiteStore, headers: list[tuple[str, str]]
) -> None:
    app = make_app(store, trusted_proxies=TRUSTED)
    assert await logged_ip(app, store, "203.0.113.7", headers) == "203.0.113.7"


async def test_behind_a_trusted_proxy_the_real_client_is_logged(
    store: auditmw.SQLiteStore,
) -> None:
    app = make_app(store, trusted_proxies=TRUSTED)
    forged = [("x-forwarded-for", f"{ATTACKER_CHOICE}, 198.51.100.1")]
    assert await logged_ip(app, store, PROXY, forged) == "198.51.100.1"
    two_lines = [("x-forwarded-for", ATTACKER_CHOICE), ("x-forwarded-for", "198.51.100.2")]
    assert await logged_ip(app, store, PROXY, two_lines) == "198.51.100.2"
    ipv6 = [("x-forwarded-for", "[2001:db8::42]:51234")]
    assert await logged_ip(app, store, PROXY, ipv6) == "2001:db8::42"
    garbage = [("x-forwarded-for", f"{ATTACKER_CHOICE}, unknown")]
    assert await logged_ip(app, store, PROXY, garbage) == PROXY


async def test_forwarded_header_end_to_end(store: auditmw.SQLiteStore) -> None:
    app = make_app(store, trusted_proxies=TRUSTED, forwarded_header="Forwarded")
    headers = [
        ("forwarded", f'for={ATTACKER_CHOICE}, for="[2001:db8::7]:80";proto=https'),
        ("x-forwarded-for", ATTACKER_CHOICE),  # not the configured header: ignored
    ]
    assert await logged_ip(app, store, PROXY, headers) == "2001:db8::7"


# --- trusted proxies from the environment ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),  # unset: trust nobody
        ("", ()),
        ("  ,  ", ()),
        ("10.0.0.0/8", ("10.0.0.0/8",)),
        ("10.0.0.0/8, 192.168.1.7", ("10.0.0.0/8", "192.168.1.7/32")),
        ("10.0.0.0/8 fd00::/8\t::1", ("10.0.0.0/8", "fd00::/8", "::1/128")),
        ("10.1.2.3/8", ("10.0.0.0/8",)),  # host bits are dropped, as AuditMiddleware does
    ],
)
def test_trusted_proxies_from_env(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: tuple[str, ...]
) -> None:
    if value is None:
        monkeypatch.delenv("AUDITMW_TRUSTED_PROXIES", raising=False)
    else:
        monkeypatch.setenv("AUDITMW_TRUSTED_PROXIES", value)
    assert auditmw.trusted_proxies_from_env() == expected


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "proxy.internal", "10.0.0.1-10.0.0.9", "*"])
def test_a_bad_trusted_proxy_in_the_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("MY_PROXIES", f"10.0.0.0/8, {bad}")
    with pytest.raises(ValueError, match=rf"^MY_PROXIES: {re.escape(repr(bad))} is not an IP"):
        auditmw.trusted_proxies_from_env("MY_PROXIES")


# --- a server that already applied the rule ---------------------------------------------
# uvicorn (proxy headers on) and hypercorn (ProxyFixMiddleware) put the address they took
# from the header in scope["client"] with port 0. The real-server versions of these
# tests are in test_deployment_nginx.py.

TWICE = "the proxy rule runs twice"


@pytest.mark.parametrize(
    ("client", "rewritten"),
    [
        (("6.6.6.6", 0), True),
        (["2001:db8::1", 0], True),
        (("1.2.3.4:80", 0), True),  # hypercorn keeps a port the header named in the host
        (("127.0.0.1", 51234), False),
        (("127.0.0.1", 123), False),
        (None, False),
        (("", 0), False),
        ("/run/app.sock", False),
        (("testclient", 50000), False),
    ],
)
def test_a_rewritten_client_is_recognised(client: object, rewritten: bool) -> None:
    assert server_rewrote_client(client) is rewritten


def auditmw_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "auditmw" and r.levelno == level]


async def test_a_server_rewrite_with_trusted_proxies_warns_once(
    store: auditmw.SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="auditmw")
    app = make_app(store, trusted_proxies=TRUSTED)
    headers = [("x-forwarded-for", ATTACKER_CHOICE)]
    assert await logged_ip(app, store, PROXY, headers) == ATTACKER_CHOICE  # not rewritten
    assert auditmw_records(caplog, logging.WARNING) == []
    # What uvicorn passes on after taking the client from "X-Forwarded-For: 6.6.6.6".
    for _ in range(3):
        await logged_ip(app, store, ATTACKER_CHOICE, headers, port=0)
    [warning] = auditmw_records(caplog, logging.WARNING)
    assert TWICE in warning and ATTACKER_CHOICE in warning
    assert "--no-proxy-headers" in warning and "no trusted_proxies" in warning
    assert auditmw_records(caplog, logging.INFO) == []
    # Another middleware (another app in the process) reports for itself.
    await logged_ip(make_app(store, trusted_proxies=TRUSTED), store, ATTACKER_CHOICE, [], port=0)
    assert len(auditmw_records(caplog, logging.WARNING)) == 2


async def test_a_server_rewrite_without_trusted_proxies_is_only_noted(
    store: auditmw.SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    # One layer applies the rule (the server): a supported setup, so no warning.
    caplog.set_level(logging.INFO, logger="auditmw")
    app = make_app(store)
    for _ in range(2):
        assert await logged_ip(app, store, "198.51.100.1", [], port=0) == "198.51.100.1"
    assert auditmw_records(caplog, logging.WARNING) == []
    [note] = auditmw_records(caplog, logging.INFO)
    assert "198.51.100.1" in note and "the address the server chose" in note


async def test_no_report_for_real_peers(
    store: auditmw.SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="auditmw")
    app = make_app(store, trusted_proxies=TRUSTED)
    forged = [("x-forwarded-for", f"{ATTACKER_CHOICE}, 198.51.100.1")]
    assert await logged_ip(app, store, PROXY, forged) == "198.51.100.1"
    assert await logged_ip(app, store, "203.0.113.7", forged) == "203.0.113.7"
    assert [r for r in caplog.records if r.name == "auditmw"] == []


async def test_admin_exports_log_the_client_the_middleware_resolved(
    store: auditmw.SQLiteStore,
) -> None:
    # The admin app records its exports itself: under AuditMiddleware they carry the
    # same client IP as every other event, not the proxy's address.
    admin = auditmw.AdminApp(store, authorize=lambda request: auditmw.Actor(user_id="a1"))
    app = Starlette(
        routes=[Mount("/admin", app=admin)],
        middleware=[Middleware(auditmw.AuditMiddleware, store=store, trusted_proxies=TRUSTED)],
    )
    transport = httpx.ASGITransport(app, client=(PROXY, 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        forged = {"x-forwarded-for": f"{ATTACKER_CHOICE}, 198.51.100.9"}
        response = await client.get("/admin/export.jsonl", headers=forged)
    assert response.status_code == 200
    page = await store.query(auditmw.EventFilter(action="export.requested"), limit=10)
    assert [event.ip_address for event in page.events] == ["198.51.100.9"]

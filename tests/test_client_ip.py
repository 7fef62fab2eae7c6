"""Client IP: safe by default, and no spoofing trick gets a client-chosen IP logged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import auditmw
from auditmw._client_ip import ClientIPResolver, forwarded_for, parse_node

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
) -> str | None:
    transport = httpx.ASGITransport(app, client=(peer, 4711))
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

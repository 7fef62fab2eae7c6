"""Which IP address made a request, without letting the client choose it.

Anyone can send ``X-Forwarded-For: 203.0.113.9``, so by default the client IP is the
connecting peer (``scope["client"]``) and forwarding headers are ignored.

With ``trusted_proxies``, and only when the peer is one of them, the one configured
header is read right to left. Each trusted proxy appends the address it saw, so the
entries are reliable from the right up to the first address that is not a trusted
proxy: that address is the client. Whatever is left of it was written by the client
(or by proxies we cannot vouch for) and is never used. An entry that is not an IP
address (``unknown``, an RFC 7239 obfuscated ``_name``, garbage) stops the walk; the
client is then the last trusted address reached, never a client-chosen one.

The rule must be applied in one layer only. A server with proxy headers on (uvicorn's
default for peers in ``--forwarded-allow-ips``, hypercorn's ``ProxyFixMiddleware``)
has already replaced ``scope["client"]`` with an address from the header; walking the
header again here lets the server's trust list, not ``trusted_proxies``, decide. Such
a rewritten client shows (port 0, see ``server_rewrote_client``), and the resolver
logs it once (docs/deployment.md).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address

X_FORWARDED_FOR = "x-forwarded-for"
FORWARDED = "forwarded"
TRUSTED_PROXIES_ENV = "AUDITMW_TRUSTED_PROXIES"
_MAX_IP_CHARS = 45  # the longest IPv6 text form, with an embedded IPv4 address
_LIST_SEPARATORS = re.compile(r"[,\s]+")

logger = logging.getLogger("auditmw")


def trusted_proxies_from_env(var: str = TRUSTED_PROXIES_ENV) -> tuple[str, ...]:
    """The trusted proxies listed in the environment variable ``var``, for
    ``AuditMiddleware(trusted_proxies=...)``: addresses or CIDR networks separated by
    commas and/or spaces (``"10.0.0.0/8, 192.168.1.7"``). Unset or empty: ``()``, trust
    no proxy. Raises ``ValueError`` naming the variable and the first entry that is not
    an address or network."""
    entries = [entry for entry in _LIST_SEPARATORS.split(os.environ.get(var, "")) if entry]
    networks: list[str] = []
    for entry in entries:
        try:
            networks.append(str(ip_network(entry, strict=False)))
        except ValueError:
            raise ValueError(
                f"{var}: {entry[:64]!r} is not an IP address or CIDR network"
            ) from None
    return tuple(networks)


def server_rewrote_client(client: object) -> bool:
    """Whether the server took ``scope["client"]`` from a forwarding header instead of
    the TCP connection. uvicorn's ``ProxyHeadersMiddleware`` and hypercorn's
    ``ProxyFixMiddleware`` give such an address port 0 (uvicorn: unless the header entry
    carried a port), and no TCP peer has port 0."""
    return (
        isinstance(client, tuple | list)
        and len(client) == 2
        and isinstance(client[0], str)
        and client[0] != ""
        and client[1] == 0
    )


def parse_ip(text: str) -> IPAddress | None:
    """The address ``text`` spells, or None. IPv4-mapped IPv6 becomes IPv4.

    Zone ids (``fe80::1%eth0``) are refused: they name an interface of some other host.
    """
    if not text or len(text) > _MAX_IP_CHARS or "%" in text:
        return None
    parsed = _parse(text)
    return None if parsed is None else parsed[0]


def ip_text(address: IPAddress) -> str:
    """The canonical text of an address (cached: ``str()`` of an address is slow)."""
    return _text(address)


# Peers and proxies repeat from request to request, and parsing costs microseconds on
# every request: remember recent answers. Inputs are at most 45 characters, so the
# caches stay small whatever clients send.
@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[IPAddress] | None:
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    return (address,)


@lru_cache(maxsize=4096)
def _text(address: IPAddress) -> str:
    return str(address)


def peer_address(client: object) -> IPAddress | None:
    """The IP of ``scope["client"]`` (a ``(host, port)`` pair), or None (unix socket, absent...)."""
    if not isinstance(client, tuple | list) or not client or not isinstance(client[0], str):
        return None
    return parse_ip(client[0])


def parse_node(node: str) -> IPAddress | None:
    """One hop as a forwarding header writes it: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``,
    ``[2001:db8::1]`` or ``[2001:db8::1]:443``, possibly quoted. None when it is not an IP."""
    node = node.strip()
    if len(node) >= 2 and node[0] == node[-1] == '"':
        node = node[1:-1]
    if node.startswith("["):
        host, bracket, rest = node[1:].partition("]")
        if not bracket or (rest and not _is_port(rest)):
            return None
        return parse_ip(host)
    if node.count(":") == 1:  # IPv4 with a port; bare IPv6 has two colons or more
        host, port = node.split(":")
        address = parse_ip(host)
        return address if isinstance(address, IPv4Address) and _is_port(":" + port) else None
    return parse_ip(node)


def _is_port(text: str) -> bool:
    digits = text[1:]
    return text[:1] == ":" and 0 < len(digits) <= 5 and digits.isascii() and digits.isdigit()


def forwarded_for(header: str) -> list[str | None]:
    """The ``for=`` value of each element of an RFC 7239 ``Forwarded`` header, in order.

    None stands for an element that cannot be read (no ``for``, a repeated one, a
    malformed pair): the walk must stop there.
    """
    values: list[str | None] = []
    for element in _split_outside_quotes(header, ","):
        found: str | None = None
        valid = True
        for pair in _split_outside_quotes(element, ";"):
            name, equals, value = pair.partition("=")
            name = name.strip().lower()
            if not equals or not name:
                valid = valid and not pair.strip()  # tolerate an empty pair ("for=x;")
                continue
            if name == "for":
                if found is not None:
                    valid = False
                found = _unquote(value.strip())
        values.append(found if valid else None)
    return values


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if char == "\\" and not escaped:
                escaped = True
                continue
            out.append(char)
            escaped = False
        return "".join(out)
    return value


class ClientIPResolver:
    """Finds the client IP of a request; see the module docstring for the rule.

    ``trusted_proxies`` are addresses or CIDR networks (``"10.0.0.0/8"``, ``"::1"``);
    ``header`` is ``"x-forwarded-for"`` (or another comma-separated list such as
    ``"x-real-ip"``) or ``"forwarded"`` (RFC 7239).
    """

    def __init__(self, trusted_proxies: Iterable[str] = (), header: str = X_FORWARDED_FOR) -> None:
        self._networks: tuple[IPv4Network | IPv6Network, ...] = tuple(
            ip_network(proxy, strict=False) for proxy in trusted_proxies
        )
        self.header_name = header.lower().encode("latin-1")
        self._rfc7239 = header.lower() == FORWARDED
        self._rewrite_reported = False  # see _report_server_rewrite

    def is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self._networks)

    def resolve(
        self, client: object, header_values: Sequence[bytes]
    ) -> tuple[str | None, str | None]:
        """``(client_ip, peer_ip)`` for a request from peer ``client`` (``scope["client"]``)
        carrying ``header_values`` (each line of the configured header, in order)."""
        if not self._rewrite_reported and server_rewrote_client(client):
            self._report_server_rewrite(client)
        peer = peer_address(client)
        if peer is None:
            return None, None
        peer_text = ip_text(peer)
        if not header_values or not self._networks or not self.is_trusted(peer):
            return peer_text, peer_text
        found = peer
        for address in reversed(self._hops(header_values)):
            if address is None:
                break
            found = address
            if not self.is_trusted(address):
                break
        return ip_text(found), peer_text

    def _report_server_rewrite(self, client: object) -> None:
        """Log, once, that the server applies the proxy rule itself. With our own trusted
        proxies too the rule runs twice: a WARNING. Without, the server's choice is what
        gets logged; a deliberate setup (docs/deployment.md), so only an INFO line."""
        self._rewrite_reported = True
        address = peer_address(client)
        shown = "an address" if address is None else ip_text(address)
        if self._networks:
            logger.warning(
                "the server replaced the client address with %s taken from a forwarding "
                "header before AuditMiddleware applied its trusted_proxies: the proxy rule "
                "runs twice, and the server's trust list, not trusted_proxies, decides the "
                "logged IP. Apply it in one layer: run the server without proxy headers "
                "(uvicorn --no-proxy-headers, or uvicorn.run(..., proxy_headers=False); no "
                "ProxyFixMiddleware under hypercorn), or give AuditMiddleware no "
                "trusted_proxies. See docs/deployment.md.",
                shown,
            )
        else:
            logger.info(
                "the server replaced the client address with %s taken from a forwarding "
                "header: audit events log the address the server chose (uvicorn trusts "
                "--forwarded-allow-ips, by default 127.0.0.1 and ::1). See "
                "docs/deployment.md.",
                shown,
            )

    def _hops(self, header_values: Sequence[bytes]) -> list[IPAddress | None]:
        # Several header lines mean the same as one line joined by commas (RFC 9110 5.3).
        text = ",".join(value.decode("latin-1") for value in header_values)
        if self._rfc7239:
            return [None if node is None else parse_node(node) for node in forwarded_for(text)]
        return [parse_node(node) for node in text.split(",")]

"""Keeping outgoing requests (webhooks, the SMS provider) away from private networks (DESIGN §4.5, §6).

A host name is checked by what it resolves to, not by its spelling: ``lvh.me``, ``*.nip.io``,
``2130706433`` or ``0x7f000001`` all name loopback. :func:`resolve_checked` resolves the host once,
refuses it when *any* address is not a public unicast one, and returns the checked addresses; the
caller then connects to one of those addresses (pinned), so a second DNS answer (rebinding) is
never used. Hosts in the allow-list skip the address check (a receiver on the local network, or a
test server on loopback) but are still resolved once and pinned.

Plain module: no Django, so the decision can be tested with any resolver.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple]]

# Cloud metadata services, named as such in refusals because they are the usual SSRF target.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
ALLOWED_SCHEMES = ("http", "https")


def system_resolver(host: str, port: int, family: int, kind: int) -> Sequence[tuple]:
    """The operating system's resolver (tests replace this module attribute with a fake)."""
    return socket.getaddrinfo(host, port, family, kind)


class Refused(Exception):
    """The request must not be made; the message names the host and the address."""


class Unresolved(Exception):
    """The host name did not resolve (perhaps only for now: DNS failures are often transient)."""


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to ``addresses`` (in order) and send ``host`` as Host and SNI."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def address_problem(address: str | IPAddress) -> str | None:
    """Why a request to this address is refused, or None for a public unicast address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "link-local"
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{problem} (embedded IPv4 {embedded})" if problem else None
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT:
        return "carrier-grade NAT"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def _is_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == entry.strip().lower().rstrip(".") for entry in allowed_hosts if entry)


def resolve_checked(
    host: str,
    port: int,
    *,
    allowed_hosts: Iterable[str] = (),
    resolver: Resolver | None = None,
    allow_setting: str = "ONRAMP_WEBHOOK_ALLOWED_HOSTS",
) -> tuple[str, ...]:
    """Resolve ``host`` once and return its addresses, or raise :class:`Refused`.

    :class:`Unresolved` when the name does not resolve; :class:`Refused` when any address is private, loopback, link-local,
    multicast, reserved, unspecified, carrier-grade NAT or a metadata address (also inside an
    IPv4-mapped, 6to4 or NAT64 IPv6 address) — unless the host is allow-listed. The refusal
    names ``allow_setting``, the setting that holds ``allowed_hosts``.
    """
    try:
        infos = (resolver or system_resolver)(host, port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Unresolved(f"cannot resolve {host!r}: {error}") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address and address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolved(f"{host!r} resolves to no address")
    if not _is_allowed(host, allowed_hosts):
        for address in addresses:
            problem = address_problem(address)
            if problem:
                raise Refused(
                    f"refusing {host!r}: it resolves to {address}, a {problem} address "
                    f"(allow-list the host in {allow_setting} if this is intended)"
                )
    return tuple(addresses)


def check_url(
    url: str,
    *,
    allowed_hosts: Iterable[str] = (),
    resolver: Resolver | None = None,
    allow_setting: str = "ONRAMP_WEBHOOK_ALLOWED_HOSTS",
) -> Target:
    """Parse and check a URL: http or https only, no credentials, a host that passes the guard."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise Refused(f"invalid URL {url!r}: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise Refused(f"refusing {url!r}: only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise Refused("refusing a URL with credentials in it")
    host = parts.hostname or ""
    if not host:
        raise Refused(f"refusing {url!r}: no host")
    port = port or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    addresses = resolve_checked(
        host, port, allowed_hosts=allowed_hosts, resolver=resolver, allow_setting=allow_setting
    )
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=addresses)

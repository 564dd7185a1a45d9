"""The SSRF guard decides on addresses; every test injects a fake resolver. No connection is made."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggers.netguard import Refused, Unresolved, address_problem, check_url, resolve_checked


def resolver_for(table: dict[str, list[str]]):
    """A getaddrinfo look-alike answering from a table (and recording the calls)."""
    calls: list[str] = []

    def resolve(host, port, family=0, kind=0):
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (address, port, 0, 0) if ":" in address else (address, port),
            )
            for address in table[host]
        ]

    resolve.calls = calls
    return resolve


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("::ffff:10.0.0.1", "private (embedded IPv4 10.0.0.1)"),
        ("::ffff:127.0.0.1", "loopback (embedded IPv4 127.0.0.1)"),
        ("::ffff:169.254.169.254", "cloud metadata (embedded IPv4 169.254.169.254)"),
        ("64:ff9b::a00:1", "private (embedded IPv4 10.0.0.1)"),
        ("2002:7f00:1::1", "loopback (embedded IPv4 127.0.0.1)"),
        ("0.0.0.0", "unspecified"),  # noqa: S104  (an address to refuse, not a bind)
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("fc00::1", "private"),
        ("192.0.2.1", "private"),
        ("2001:db8::1", "private"),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2001:4860::8888", None),
        ("::ffff:8.8.8.8", None),
        ("not-an-ip", "not an IP address"),
    ],
)
def test_address_decisions(address, problem):
    assert address_problem(address) == problem


@given(st.ip_addresses())
def test_every_address_gets_a_decision_and_only_global_unicast_passes(ip):
    problem = address_problem(str(ip))
    if problem is None:
        assert not ip.is_private and not ip.is_loopback and not ip.is_multicast
        assert not ip.is_link_local and not ip.is_unspecified


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "172.16.0.1", "192.168.1.1", "127.0.0.1", "::1", "169.254.169.254",
     "fe80::1", "100.64.0.1", "::ffff:10.0.0.1", "0.0.0.0"],  # noqa: S104
)  # fmt: skip
def test_a_name_resolving_to_a_blocked_address_is_refused_naming_it(address):
    resolve = resolver_for({"hooks.example.com": [address]})
    with pytest.raises(Refused) as caught:
        resolve_checked("hooks.example.com", 443, resolver=resolve)
    assert address in str(caught.value) and "hooks.example.com" in str(caught.value)


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860::8888"])
def test_public_addresses_are_allowed(address):
    resolve = resolver_for({"hooks.example.com": [address]})
    assert resolve_checked("hooks.example.com", 443, resolver=resolve) == (address,)


def test_any_blocked_address_among_several_refuses():
    resolve = resolver_for({"mixed.example.com": ["8.8.8.8", "10.1.2.3"]})
    with pytest.raises(Refused, match=r"10\.1\.2\.3"):
        resolve_checked("mixed.example.com", 443, resolver=resolve)


def test_allow_listed_host_skips_the_check_but_is_still_resolved_and_pinned():
    resolve = resolver_for({"hooks.internal": ["10.0.0.5"]})
    assert resolve_checked(
        "hooks.internal", 80, allowed_hosts=["HOOKS.internal."], resolver=resolve
    ) == ("10.0.0.5",)
    assert resolve.calls == ["hooks.internal"]


def test_unresolvable_host_is_its_own_error():
    with pytest.raises(Unresolved):
        resolve_checked("nowhere.example.com", 443, resolver=resolver_for({}))


def test_check_url_resolves_once_and_returns_the_pinned_target():
    resolve = resolver_for({"hooks.example.com": ["8.8.8.8", "2001:4860::8888"]})
    target = check_url("https://hooks.example.com/in?a=1", resolver=resolve)
    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "hooks.example.com",
        443,
        "/in?a=1",
    )
    assert target.addresses == ("8.8.8.8", "2001:4860::8888")
    assert resolve.calls == ["hooks.example.com"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/x",
        "file:///etc/passwd",
        "gopher://hooks.example.com/",
        "http://user:pw@hooks.example.com/",
        "http:///nohost",
        "http://hooks.example.com:99999/",
    ],
)
def test_bad_urls_are_refused_before_resolving(url):
    resolve = resolver_for({"hooks.example.com": ["8.8.8.8"]})
    with pytest.raises(Refused):
        check_url(url, resolver=resolve)
    assert resolve.calls == []


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://2130706433/", "2130706433"),
        ("http://0x7f000001/", "0x7f000001"),
        ("http://[::1]:8080/", "::1"),
        ("http://localhost/", "localhost"),
    ],
)
def test_disguised_loopback_is_refused_by_what_it_resolves_to(url, host):
    resolve = resolver_for({host: ["127.0.0.1" if host != "::1" else "::1"]})
    with pytest.raises(Refused, match="loopback"):
        check_url(url, resolver=resolve)
    assert resolve.calls == [host]

"""Where a request comes from: the client address and whether it arrived over TLS.

The socket peer is the truth. Only when the peer is a configured trusted proxy are
X-Forwarded-For and X-Forwarded-Proto read; anyone else could write them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def parse_address(value: str | None) -> Address | None:
    if not value:
        return None
    text = value.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443" from some proxies
        text = text[1 : text.index("]")]
    text = text.split("%", 1)[0]  # IPv6 zone id
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # a dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; rules are written in IPv4
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def parse_network(value: str) -> Network:
    """An address or CIDR block (IPv4-mapped IPv6 blocks become IPv4 ones)."""
    network = ipaddress.ip_network(value.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        mapped = network.network_address.ipv4_mapped
        return ipaddress.ip_network(f"{mapped}/{max(network.prefixlen - 96, 0)}", strict=False)
    return network


def in_any(address: Address | None, entries: Iterable[str]) -> bool:
    """Whether the address is one of the entries (addresses, CIDR blocks or `localhost`)."""
    if address is None:
        return False
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if entry.lower() == "localhost":
            if any(address in net for net in LOOPBACK):
                return True
            continue
        try:
            if address in parse_network(entry):
                return True
        except ValueError:
            continue
    return False


def _trusted(address: Address | None, trusted_proxies: Iterable[str]) -> bool:
    return in_any(address, trusted_proxies)


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted_proxies: Iterable[str]
) -> Address | None:
    """The socket peer, or, behind trusted proxies, the nearest untrusted X-Forwarded-For hop.

    The header is read right to left: each trusted proxy appends the address it saw, so the
    first address from the right that is not a trusted proxy is the one nobody could forge.
    """
    trusted = tuple(trusted_proxies)
    address = parse_address(peer)
    if not _trusted(address, trusted):
        return address
    hops = [h for h in _all_values(headers, "X-Forwarded-For").split(",") if h.strip()]
    for hop in reversed(hops):
        hop_address = parse_address(hop)
        if hop_address is None:
            return address  # garbage in the chain: fall back to what we know
        address = hop_address
        if not _trusted(address, trusted):
            return address
    return address


def _all_values(headers: Mapping[str, str], name: str) -> str:
    """Every occurrence of a header, joined as one comma list (repeats are legal)."""
    getall = getattr(headers, "getall", None)
    return ",".join(getall(name, [])) if getall else headers.get(name, "")


def is_secure(
    tls: bool, peer: str | None, headers: Mapping[str, str], trusted_proxies: Iterable[str]
) -> bool:
    """TLS on our own socket, or X-Forwarded-Proto: https set by a trusted proxy."""
    if tls:
        return True
    if not _trusted(parse_address(peer), tuple(trusted_proxies)):
        return False
    # a proxy that appends puts what it saw last: the rightmost value is our trusted
    # proxy's own; anything left of it came from the client and proves nothing
    proto = _all_values(headers, "X-Forwarded-Proto").split(",")[-1].strip().lower()
    return proto == "https"

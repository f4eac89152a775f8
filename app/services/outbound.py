"""Calls the service makes to URLs its callers chose (webhooks, URL import): only to the public
internet unless the operator opts in, and only to the address that was checked.

A URL is resolved once; every address it resolves to must be globally routable (loopback,
private ranges, link-local and cloud metadata, 100.64.0.0/10 and the other special ranges
are refused), and the connection goes to those very addresses through a resolver that
knows no others, so a DNS answer that changes between the check and the connection (DNS
rebinding) changes nothing. Redirects are never followed here: a caller that follows
them (app/services/url_import.py) checks each new host afresh.
`CONVERTD_ALLOW_PRIVATE_URLS=1` lets the service reach private addresses (closed networks,
tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult


class Refused(Exception):
    """The URL's host is not one the service may call."""


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def plainly_private(host: str) -> bool:
    """A host known to be off the public internet without asking DNS: localhost, or an IP
    literal in a refused range. Names are resolved, and checked, when they are called."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return not _public(ipaddress.ip_address(name))
    except ValueError:
        return False


async def resolve(host: str, port: int, *, allow_private: bool) -> list[ResolveResult]:
    """Every address `host` resolves to, all of them allowed, or Refused."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"cannot resolve {host}") from exc
    results: list[ResolveResult] = []
    for family, _, proto, _, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if not allow_private and not _public(address):
            raise Refused(f"{host} resolves to a non-public address (CONVERTD_ALLOW_PRIVATE_URLS=0)")
        results.append(
            ResolveResult(hostname=host, host=str(address), port=port, family=family, proto=proto, flags=0)
        )
    if not results:
        raise Refused(f"cannot resolve {host}")
    return results


class _Pinned(AbstractResolver):
    """Answers with the addresses already checked, and nothing else."""

    def __init__(self, results: list[ResolveResult]) -> None:
        self.results = results

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        return [r for r in self.results if r["hostname"] == host] or self.results

    async def close(self) -> None:
        pass


async def session(
    url_host: str, port: int, *, allow_private: bool, timeout: float, connect: float | None = None
) -> aiohttp.ClientSession:
    """A client session that can only connect to `url_host`'s checked addresses."""
    results = await resolve(url_host, port, allow_private=allow_private)
    connector = aiohttp.TCPConnector(resolver=_Pinned(results), use_dns_cache=False)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=connect)
    )

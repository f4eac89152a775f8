"""A key's restrictions: which addresses and web origins may use it, and browsers at all.

They belong to the key, so they hold for every credential made from it (the key itself, its
JWTs and its access tokens). Only the secret key itself is refused from a browser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app.auth import network
from app.errors import ConvertdError, ErrorCode

if TYPE_CHECKING:
    from app.auth.principal import Principal
    from app.auth.request import RequestInfo
    from app.models import ApiKey

RESTRICTION_TYPES = ("all", "ip", "domain")


def forbidden(message: str, hint: str) -> ConvertdError:
    return ConvertdError(ErrorCode.FORBIDDEN, message, hint)


def host_of(value: str | None) -> str | None:
    """The host name of an Origin or Referer value ("https://app.example.com:8443/x")."""
    if not value or value == "null":
        return None
    try:
        host = urlsplit(value if "//" in value else f"//{value}").hostname
    except ValueError:
        return None
    return host.rstrip(".").lower() if host else None


def domain_matches(host: str, pattern: str) -> bool:
    """`example.com` matches itself; `*.example.com` matches any subdomain, not the bare domain."""
    pattern = pattern.strip().lower()
    if pattern.startswith("*."):
        base = host_of(pattern[2:])
        return base is not None and host.endswith(f".{base}")
    return host == host_of(pattern)


def request_host(info: RequestInfo) -> str | None:
    """The web origin a browser request comes from: Origin, else Referer."""
    return host_of(info.origin) if info.origin is not None else host_of(info.referer)


def _domain_allowed(key: ApiKey, host: str | None) -> bool:
    return host is not None and any(domain_matches(host, d) for d in key.allowed_domains)


def check(principal: Principal, info: RequestInfo, client_ip: network.Address | None) -> None:
    key = principal.key
    if key is None:
        return
    if key.restriction_type == "ip" and not network.in_any(client_ip, key.allowed_ips):
        raise forbidden(
            f"This key may not be used from {client_ip}.",
            "Call from one of the key's allowed addresses; behind NAT use your public egress "
            "address, or add this address to the key.",
        )
    if key.restriction_type == "domain":
        host = request_host(info)
        if host is None:
            raise forbidden(
                "This key is restricted to web domains, and the request names none.",
                "Domain-restricted keys need an Origin or Referer header from an allowed site.",
            )
        if not _domain_allowed(key, host):
            raise forbidden(
                f"This key may not be used from the site '{host}'.",
                f"Allowed: {', '.join(key.allowed_domains)}. Add the domain to the key if it is yours.",
            )
    # a browser page would expose a secret key to everyone who views it; a key restricted to
    # domains is meant for exactly that page, and the domain check above has passed
    if principal.method == "api_key" and info.origin is not None and key.restriction_type != "domain":
        raise forbidden(
            "Secret API keys cannot be used from a browser (the request has an Origin header).",
            "Mint a short-lived JWT on your server (POST /v1/token/jwt or the createJwt mutation) "
            "and use that in the browser, or restrict this key to your site's domain.",
        )

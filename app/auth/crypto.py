"""Credential material: generation, hashing, constant-time comparison, JWT signing secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

ENVIRONMENTS = ("live", "test")
MASTER_PREFIX = "mt_"
ACCESS_TOKEN_PREFIX = "at_"


def generate(environment: str = "live") -> str:
    if environment not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {ENVIRONMENTS}")
    return f"sk_{environment}_{secrets.token_urlsafe(32)}"


def generate_master_token() -> str:
    return MASTER_PREFIX + secrets.token_urlsafe(32)


def generate_access_token() -> str:
    # ConvertAPI's v1 ids are 8 characters; a bearer credential needs far more entropy
    return ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(24)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def prefix(key: str) -> str:
    return key[:16]


def matches(key: str, stored_digest: bytes) -> bool:
    return hmac.compare_digest(digest(key), stored_digest)


def signing_secret(server_secret: str, kid: uuid.UUID | str, version: int = 0) -> str:
    """The JWT signing secret of the key `kid`: HMAC-SHA256(server secret, kid, generation).

    Derived, never stored: the database holds nothing that signs a JWT, and the server
    re-derives the secret from the kid a token names to check its signature. Rotating it
    (`rotate_secret`) moves the key to the next generation; generation 0 is what keys made
    before rotation existed always had.
    """
    return _derive(server_secret, f"convertd-jwt-signing:{kid}" + (f":{version}" if version else ""))


def webhook_secret(server_secret: str, kid: uuid.UUID | str, version: int = 0) -> str:
    """The secret that signs the key's webhook deliveries (X-Convertd-Signature): its own,
    so a receiver that verifies webhooks holds nothing that could sign a JWT."""
    return _derive(server_secret, f"convertd-webhook-signing:{kid}:{version}")


def _derive(server_secret: str, purpose: str) -> str:
    mac = hmac.new(server_secret.encode(), purpose.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

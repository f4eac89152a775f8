"""API key material: generation, hashing and constant-time comparison."""

from __future__ import annotations

import hashlib
import hmac
import secrets

ENVIRONMENTS = ("live", "test")


def generate(environment: str = "live") -> str:
    if environment not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {ENVIRONMENTS}")
    return f"sk_{environment}_{secrets.token_urlsafe(32)}"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def prefix(key: str) -> str:
    return key[:16]


def matches(key: str, stored_digest: bytes) -> bool:
    return hmac.compare_digest(digest(key), stored_digest)

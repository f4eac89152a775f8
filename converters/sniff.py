"""Placeholder; replaced by the real content sniffer."""

from __future__ import annotations

from pathlib import Path


def detect(path: Path) -> str | None:
    return None


def check_declared(path: Path, declared_format: str) -> None:
    return None

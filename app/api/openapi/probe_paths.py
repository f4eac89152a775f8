"""The document of the probes: /healthz, /readyz and /metrics (app/api/health.py)."""

from __future__ import annotations

from typing import Any

from app.api.openapi.blocks import BOOL, OPEN, STR, Schema, obj, ok_body, operation, reply


def probe_paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": operation(
                "Liveness",
                {"200": reply(ok_body(status={"const": "alive"}))},
                tag="probes",
                security=OPEN,
            )
        },
        "/readyz": {
            "get": operation(
                "Readiness: PostgreSQL, Redis and workers",
                {
                    "200": reply(_readiness(), "Ready."),
                    "503": reply(_readiness(), "Not ready: see components."),
                },
                tag="probes",
                security=OPEN,
            )
        },
        "/metrics": {
            "get": operation(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
                tag="probes",
                security=OPEN,
            )
        },
    }


def _readiness() -> Schema:
    return obj(
        ["ok", "status", "components", "engines"],
        ok=BOOL,
        status={"type": "string", "enum": ["ready", "not ready"]},
        components={"type": "object"},
        engines={"type": "object"},
    )

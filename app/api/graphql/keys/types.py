from __future__ import annotations

from datetime import datetime

import strawberry

from app.models import ApiKey as ApiKeyModel


@strawberry.type(description="An API key (never its secret).")
class ApiKey:
    id: int
    kid: str
    name: str
    prefix: str
    environment: str
    restriction_type: str
    allowed_ips: list[str]
    allowed_domains: list[str]
    allowed_endpoints: list[str]
    usage_count: int
    last_used_at: datetime | None
    created_at: datetime
    plan: str | None = None

    @classmethod
    def from_model(cls, key: ApiKeyModel, plan: str | None = None) -> ApiKey:
        return cls(
            id=key.id, kid=str(key.kid), name=key.name, prefix=key.prefix,
            environment=key.environment, restriction_type=key.restriction_type,
            allowed_ips=key.allowed_ips, allowed_domains=key.allowed_domains,
            allowed_endpoints=key.allowed_endpoints, usage_count=key.usage_count,
            last_used_at=key.last_used_at, created_at=key.created_at, plan=plan,
        )

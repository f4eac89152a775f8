from __future__ import annotations

import enum
from datetime import datetime

import strawberry

from app.models import ApiKey as ApiKeyModel
from app.services.keys import CreatedKey as CreatedKeyModel
from app.services.quota import RateLimits as RateLimitsModel
from app.services.storage_use import StorageUse as StorageUseModel


@strawberry.type(description="Rate-limit quota, as rate_limits in GET /v1/keys/me. Null limits: unlimited.")
class RateLimits:
    calls_per_day: int | None
    calls_per_minute: int | None
    used_today: int
    used_this_minute: int
    remaining_today: int | None

    @classmethod
    def from_model(cls, q: RateLimitsModel) -> RateLimits:
        return cls(
            calls_per_day=q.calls_per_day,
            calls_per_minute=q.calls_per_minute,
            used_today=q.used_today,
            used_this_minute=q.used_this_minute,
            remaining_today=q.remaining_today,
        )


@strawberry.type(description="What the account stores and may store. Bytes are Floats: sizes outgrow Int.")
class StorageUse:
    used_bytes: float
    quota_bytes: float | None = strawberry.field(description="The plan's quota; null: unlimited.")
    retention_seconds: int | None = strawberry.field(
        description="How long a job's files are kept after it ends; null: until deleted."
    )

    @classmethod
    def from_model(cls, s: StorageUseModel) -> StorageUse:
        return cls(used_bytes=s.used_bytes, quota_bytes=s.quota_bytes, retention_seconds=s.retention_seconds)


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
    revoked_at: datetime | None = None
    conversion_limit: int | None = strawberry.field(
        default=None, description="Conversions this key may queue, on top of the plan's allowance."
    )
    conversions_used: int = 0
    rate_limits: RateLimits | None = strawberry.field(
        default=None, description="The account's quota (on me)."
    )
    storage: StorageUse | None = strawberry.field(
        default=None, description="The account's storage use and quota (on me)."
    )

    @classmethod
    def from_model(
        cls,
        key: ApiKeyModel,
        plan: str | None = None,
        rate_limits: RateLimitsModel | None = None,
        storage: StorageUseModel | None = None,
    ) -> ApiKey:
        return cls(
            id=key.id,
            kid=str(key.kid),
            name=key.name,
            prefix=key.prefix,
            environment=key.environment,
            restriction_type=key.restriction_type,
            allowed_ips=key.allowed_ips,
            allowed_domains=key.allowed_domains,
            allowed_endpoints=key.allowed_endpoints,
            usage_count=key.usage_count,
            last_used_at=key.last_used_at,
            created_at=key.created_at,
            plan=plan,
            revoked_at=key.revoked_at,
            conversion_limit=key.conversion_limit,
            conversions_used=key.conversions_used,
            rate_limits=RateLimits.from_model(rate_limits) if rate_limits else None,
            storage=StorageUse.from_model(storage) if storage else None,
        )


@strawberry.type(description="A new key. key, signingSecret and webhookSecret are shown only this once.")
class CreatedKey:
    key: str
    signing_secret: str | None = strawberry.field(description="Signs self-made JWTs (HS256) for this kid.")
    webhook_secret: str | None = strawberry.field(
        description="Verifies the X-Convertd-Signature of this key's webhook deliveries."
    )
    api_key: ApiKey

    @classmethod
    def from_model(cls, created: CreatedKeyModel) -> CreatedKey:
        return cls(
            key=created.secret,
            signing_secret=created.signing_secret,
            webhook_secret=created.webhook_secret,
            api_key=ApiKey.from_model(created.key),
        )


@strawberry.enum(description="A key's derived secrets, each rotated on its own.")
class KeySecret(enum.Enum):
    JWT = "jwt"
    WEBHOOK = "webhook"


@strawberry.type(description="A key's new secret, shown only this once; the old one no longer works.")
class RotatedSecret:
    secret: str
    api_key: ApiKey


@strawberry.input(
    description="A new key. With allowedIps it is IP-restricted, with allowedDomains domain-restricted."
)
class CreateKeyInput:
    name: str
    environment: str = "live"
    restriction_type: str | None = None
    allowed_ips: list[str] = strawberry.field(default_factory=list)
    allowed_domains: list[str] = strawberry.field(default_factory=list)
    allowed_endpoints: list[str] = strawberry.field(default_factory=list)
    conversion_limit: int | None = None


@strawberry.input(description="Changes to a key; fields left out stay as they are.")
class UpdateKeyInput:
    name: str | None = strawberry.UNSET
    restriction_type: str | None = strawberry.UNSET
    allowed_ips: list[str] | None = strawberry.UNSET
    allowed_domains: list[str] | None = strawberry.UNSET
    allowed_endpoints: list[str] | None = strawberry.UNSET
    conversion_limit: int | None = strawberry.UNSET

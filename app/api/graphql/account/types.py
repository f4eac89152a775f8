from __future__ import annotations

from datetime import date, datetime

import strawberry

from app.api.graphql.keys.types import ApiKey, RateLimits
from app.models import Plan as PlanModel
from app.services.accounts import Account as AccountModel
from app.services.accounts import Consumption as ConsumptionModel
from app.services.usage import LogPage
from app.services.usage import Statistics as StatisticsModel


@strawberry.type(description="A plan's settings; null limits are unlimited.")
class Plan:
    name: str
    api_access: bool
    calls_per_day: int | None
    calls_per_minute: int | None
    max_file_size: int | None
    conversions: int | None
    retention_seconds: int | None = strawberry.field(description="How long a job's files are kept.")
    storage_quota: float | None = strawberry.field(description="Bytes of uploads and outputs kept.")
    max_pending: int | None = strawberry.field(description="Jobs the account may have waiting.")
    max_running: int | None = strawberry.field(description="Jobs of one account processing at once.")

    @classmethod
    def from_model(cls, p: PlanModel) -> Plan:
        return cls(
            name=p.name,
            api_access=p.api_access,
            calls_per_day=p.calls_per_day,
            calls_per_minute=p.calls_per_minute,
            max_file_size=p.max_file_size,
            conversions=p.conversions,
            retention_seconds=p.retention,
            storage_quota=p.storage_quota,
            max_pending=p.max_pending,
            max_running=p.max_running,
        )


@strawberry.type(description="The account (master token).")
class Account:
    id: int
    name: str
    active: bool
    plan: Plan
    conversions_used: int
    conversions_remaining: int | None
    master_token_prefix: str | None
    master_token_created_at: datetime | None
    created_at: datetime

    @classmethod
    def from_model(cls, a: AccountModel) -> Account:
        return cls(
            id=a.id,
            name=a.name,
            active=a.active,
            plan=Plan.from_model(a.plan),
            conversions_used=a.conversions_used,
            conversions_remaining=a.conversions_remaining,
            master_token_prefix=a.master_token_prefix,
            master_token_created_at=a.master_token_at,
            created_at=a.created_at,
        )


@strawberry.type(description="Current consumption: conversions, today's rate-limit windows, each key's use.")
class Consumption:
    conversions_used: int
    conversions_limit: int | None
    conversions_remaining: int | None
    rate_limits: RateLimits
    keys: list[ApiKey]

    @classmethod
    def from_model(cls, c: ConsumptionModel) -> Consumption:
        return cls(
            conversions_used=c.account.conversions_used,
            conversions_limit=c.account.plan.conversions,
            conversions_remaining=c.account.conversions_remaining,
            rate_limits=RateLimits.from_model(c.rate_limits),
            keys=[ApiKey.from_model(k) for k in c.keys],
        )


@strawberry.type
class DayStatistics:
    day: date
    requests: int
    refused: int
    conversions: int
    finished: int
    failed: int


@strawberry.type
class ConversionStatistics:
    filetype: str
    input_format: str
    output_format: str
    conversions: int
    finished: int
    failed: int


@strawberry.type(description="Requests and conversions per day (UTC), and conversions per type.")
class Statistics:
    since: date
    days: list[DayStatistics]
    conversions: list[ConversionStatistics]

    @classmethod
    def from_model(cls, s: StatisticsModel) -> Statistics:
        return cls(
            since=s.since,
            days=[DayStatistics(**vars(d)) for d in s.days],
            conversions=[ConversionStatistics(**vars(c)) for c in s.conversions],
        )


@strawberry.type(description="One request: when, which route or root fields, the answer, who and from where.")
class RequestLogEntry:
    at: datetime
    transport: str
    route: str
    status: int
    error_code: str | None
    api_key_id: int | None
    credential: str
    client_ip: str | None


@strawberry.type
class RequestLogPage:
    entries: list[RequestLogEntry]
    next_cursor: str | None

    @classmethod
    def from_model(cls, page: LogPage) -> RequestLogPage:
        return cls(
            entries=[
                RequestLogEntry(**{k: v for k, v in vars(e).items() if k != "id"}) for e in page.entries
            ],
            next_cursor=page.next_cursor,
        )

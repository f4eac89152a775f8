"""Settings, read once from CONVERTD_* environment variables."""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"CONVERTD_{name}")
    return value if value not in (None, "") else default


def _int(name: str, default: int) -> int:
    return int(_env(name) or default)


def _float(name: str, default: float) -> float:
    return float(_env(name) or default)


def _bool(name: str, default: bool) -> bool:
    return (_env(name, "1" if default else "0") or "").lower() in ("1", "true", "yes", "on")


def _list(name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in (_env(name, "") or "").split(",") if x.strip())


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """saq's defaults (10 s timeout, 1 retry) would lose a killed worker's job: all explicit."""

    job_timeout: int = 3600  # seconds one conversion may run
    heartbeat: int = 5  # seconds; a job silent for this long is swept as its worker died
    retries: int = 3  # attempts in all, so a job survives two dead workers
    retry_delay: float = 1.0
    retry_backoff: bool = False
    sweep_interval: int = 5  # seconds between sweeps for jobs of dead workers
    concurrency: int = 2  # conversions at once per worker process
    drain_seconds: int = 30  # on SIGTERM, running jobs may finish this long; the rest go back
    name: str = "convertd"  # the saq queue; API and workers of one deployment share it
    fair: bool = True  # round-robin between accounts (app/services/dispatch.py); off: FIFO


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None
    redis_url: str | None
    public_url: str | None  # base of status/download URLs; None: from the request
    secret: str  # signs download URLs
    max_upload_bytes: int
    download_url_ttl: int
    trusted_proxies: tuple[str, ...]
    require_https: bool
    queue: QueueSettings
    allow_private_urls: bool = False  # may webhooks reach loopback and private addresses?
    introspection: bool = True  # GraphQL introspection and the GraphiQL page
    jwt_max_lifetime: int = 24 * 3600  # seconds a self-signed JWT may live
    request_log_days: int = 90  # days the request log keeps a line (0: forever)
    max_queue_depth: int = 10_000  # queued entries past which conversions get 503 (0: no cap)
    access_log: bool = True  # one JSON line per HTTP answer (app/api/observe.py)
    storage_url: str | None = None  # where uploads and outputs live (app/stores/); None: storage_dir
    s3_endpoint_url: str | None = None  # an S3-compatible store's address; None: AWS
    s3_region: str | None = None
    s3_presign: bool = False  # downloads redirect to a presigned URL instead of streaming
    url_import_timeout: float = 60.0  # seconds to fetch an input by URL, redirects included
    url_import_connect_timeout: float = 10.0  # seconds to connect to each origin
    tus_expiry: int = 24 * 3600  # seconds an unfinished resumable upload is kept

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def database(self) -> str:
        """The PostgreSQL URL; `servers()` (app/cli/service.py) fills it in when the embedded one is used."""
        if not self.database_url:
            raise RuntimeError("no database URL: start the embedded servers first")
        return self.database_url

    @property
    def embedded(self) -> bool:
        return not (self.database_url and self.redis_url)

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(_env("DATA_DIR") or Path.home() / ".local/share/convertd").expanduser()
        return cls(
            data_dir=data_dir,
            database_url=_env("DATABASE_URL"),
            redis_url=_env("REDIS_URL"),
            public_url=(_env("PUBLIC_URL") or "").rstrip("/") or None,
            secret=_env("SECRET") or _stored_secret(data_dir),
            max_upload_bytes=_int("MAX_UPLOAD_BYTES", 512 * 1024 * 1024),
            download_url_ttl=_int("DOWNLOAD_URL_TTL", 24 * 3600),
            trusted_proxies=_list("TRUSTED_PROXIES"),
            require_https=_bool("REQUIRE_HTTPS", False),
            allow_private_urls=_bool("ALLOW_PRIVATE_URLS", False),
            introspection=_bool("INTROSPECTION", True),
            jwt_max_lifetime=_int("JWT_MAX_LIFETIME", 24 * 3600),
            request_log_days=_int("REQUEST_LOG_DAYS", 90),
            max_queue_depth=_int("MAX_QUEUE_DEPTH", 10_000),
            access_log=_bool("ACCESS_LOG", True),
            storage_url=_env("STORAGE_URL"),
            s3_endpoint_url=_env("S3_ENDPOINT_URL"),
            s3_region=_env("S3_REGION"),
            s3_presign=_bool("S3_PRESIGN", False),
            url_import_timeout=_float("URL_IMPORT_TIMEOUT", 60.0),
            url_import_connect_timeout=_float("URL_IMPORT_CONNECT_TIMEOUT", 10.0),
            tus_expiry=_int("TUS_EXPIRY", 24 * 3600),
            queue=QueueSettings(
                job_timeout=_int("JOB_TIMEOUT", 3600),
                heartbeat=_int("JOB_HEARTBEAT", 5),
                retries=_int("JOB_RETRIES", 3),
                retry_delay=_float("JOB_RETRY_DELAY", 1.0),
                retry_backoff=_bool("JOB_RETRY_BACKOFF", False),
                sweep_interval=_int("SWEEP_INTERVAL", 5),
                concurrency=_int("WORKER_CONCURRENCY", 2),
                drain_seconds=_int("DRAIN_SECONDS", 30),
                name=_env("QUEUE", "convertd") or "convertd",
                fair=_bool("FAIR_DISPATCH", True),
            ),
        )


def _stored_secret(data_dir: Path) -> str:
    """A signing secret kept beside the data, so signed URLs survive restarts."""
    path = data_dir / "secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()

"""One typed Settings object: env vars ``RAYAPP_*``, an optional TOML file, CLI overrides.

Precedence (highest first): explicit overrides (CLI ``--set key=value`` and job flags),
environment variables, the TOML file (``--config`` / ``RAYAPP_CONFIG``), defaults.
Settings are built once in a job entrypoint and passed down; nothing below reads the
environment.
"""

from __future__ import annotations

import contextvars
import os
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from rayapp.errors import ConfigError
from rayapp.urls import is_remote, join_uri, redact_url, strip_file_scheme

_TOML_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("rayapp_toml_file", default=None)


class LogFormat(str, Enum):
    AUTO = "auto"  # text on a terminal, JSON lines otherwise
    JSON = "json"
    TEXT = "text"


class Pagination(str, Enum):
    CURSOR = "cursor"
    PAGE = "page"
    NEXT_LINK = "next_link"


class ApiSource(BaseModel):
    """One REST API that ``ingest_api`` pages through (TOML ``[sources.NAME]``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Endpoint URL; `{tenant}` in it is replaced by the tenant.")
    items: str = Field(default="data", description="Where the rows sit in the JSON body (dotted path).")
    pagination: Pagination = Pagination.CURSOR
    cursor_param: str = Field(default="cursor", description="Request parameter carrying the cursor (cursor pagination).")
    next_cursor: str = Field(default="next_cursor", description="Body field (dotted) holding the next cursor; absent/null ends.")
    page_param: str = Field(default="page", description="Request parameter of the page number (page pagination, from 1).")
    next_link: str = Field(default="next", description="Body field (dotted) holding the next page's URL (next_link pagination).")
    page_size_param: str | None = Field(default="limit", description="Request parameter of the page size (none: the API's default).")
    page_size: int = Field(default=100, ge=1, le=10_000)
    since_param: str | None = Field(default=None, description="Incremental filter parameter, e.g. updated_since.")
    since_field: str = Field(default="updated_at", description="Row field whose highest value the next run's since starts at.")
    tenant_param: str | None = Field(default="tenant", description="Request parameter naming the tenant (unless the URL has {tenant}).")
    tenants: list[str] = Field(default_factory=list, description="Tenants fetched when --tenant is not given (none: one, unnamed).")
    auth_header: str = Field(default="Authorization", description="Header carrying the credential.")
    auth_value: SecretStr | None = Field(default=None, description="The header's value, e.g. 'Bearer …' (a secret: never logged).")
    requests_per_second: float = Field(default=5.0, gt=0, description="Request rate limit per tenant.")
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=6, ge=0, description="Retries of a 429/5xx/timeout before the run fails.")

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return v


class Settings(BaseSettings):
    """Everything a job needs to know about where data lives and how to reach it.

    Every field maps to an env var ``RAYAPP_<FIELD>`` (upper case) and a TOML key ``<field>``.
    """

    model_config = SettingsConfigDict(env_prefix="RAYAPP_", extra="forbid", validate_default=True)

    data_dir: Path = Field(default=Path("./data"), description="Root for embedded stores, models, benchmarks.")
    lake_uri: str | None = Field(default=None, description="Delta lake root: local path or s3://bucket/prefix.")
    landing_uri: str | None = Field(default=None, description="Landing zone read by `ingest` (default <lake>/landing).")
    source_system: str = Field(default="landing", description="Value written to bronze `_source_system` (API files: the source's name).")
    sources: dict[str, ApiSource] = Field(default_factory=dict, description="REST API sources of `ingest_api` (TOML [sources.NAME]).")

    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, moto).")
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    s3_allow_http: bool | None = Field(default=None, description="Allow http:// endpoints (default: inferred).")
    s3_allow_unsafe_rename: bool = Field(
        default=False,
        description="Opt in to an S3-compatible store without conditional writes (Delta commits by copy + delete: unsafe when runs overlap).",
    )
    lake_retention_hours: float = Field(
        default=168.0, ge=0, description="`maintain` vacuums files removed longer ago than this (time travel window; watermarked versions are always kept)."
    )
    lease_ttl_s: float = Field(default=120.0, gt=0, description="A stage's run lease expires this long after its owner's last heartbeat.")

    # One field per store (`<store>_url`); the store's module in rayapp/sinks declares its schemes and default.
    postgres_url: SecretStr | None = Field(default=None, description="postgresql://… (default: embedded pgserver).")
    clickhouse_url: SecretStr | None = Field(default=None, description="chdb:///path or http(s)://host:8123.")
    graph_url: SecretStr | None = Field(default=None, description="ladybug:///path or neo4j:// / bolt://.")
    vector_url: SecretStr | None = Field(default=None, description="lancedb:///path or pinecone://<index>.")
    pinecone_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("RAYAPP_PINECONE_API_KEY", "PINECONE_API_KEY", "pinecone_api_key"),
        description="API key for pinecone:// vector URLs.",
    )
    pinecone_host: str | None = Field(default=None, description="Index data-plane host (default: asked from the control plane).")

    writer_pool_size: int = Field(default=2, ge=1, le=64, description="Writer actors per server-backed store, embedded pgserver included (embedded engines in files: 1).")
    writer_batch_rows: int = Field(default=50_000, ge=1, description="Rows per batch handed to a writer actor.")
    graph_batch_rows: int = Field(
        default=100_000, ge=1, description="Transactions per graph write transaction (Ladybug's commit cost grows with the graph: fewer, larger ones)."
    )
    graph_bulk_batch_rows: int = Field(
        default=1_000_000, ge=1,
        description="Transactions per write transaction on Ladybug with graph_bulk_copy: one COPY into a table costs less than several smaller ones.",
    )
    graph_bulk_copy: bool = Field(
        default=True, description="Ladybug: new nodes and relationships go in by COPY FROM (Arrow); only replacements run row statements."
    )
    postgres_bulk_first_load: bool = Field(
        default=True,
        description="PostgreSQL: a table's first load goes in without its indexes, rebuilt once the run's writes are done (lookups scan meanwhile).",
    )
    staging_compression: Literal["none", "lz4", "zstd"] = Field(
        default="lz4",
        description="Arrow IPC compression of staging files (key-partitioned runs): lz4 ~2.5x smaller at little CPU, zstd ~4x for disk-tight runs.",
    )
    writer_max_in_flight: int = Field(default=2, ge=1, description="Batches queued per writer actor (backpressure).")
    writer_retries: int = Field(default=5, ge=1, description="Attempts per batch before it goes to the dead-letter queue.")
    writer_backoff_s: float = Field(default=0.5, ge=0, description="First retry delay (doubles, with jitter).")
    writer_backoff_max_s: float = Field(default=20.0, ge=0, description="Longest retry delay.")
    features_one_task_rows: int = Field(
        default=2_000_000, ge=0,
        description="Silver tables up to this many rows get their fraud features in one Ray task (~1.2 GB per million rows); larger ones in key-partitioned passes through staging.",
    )  # fmt: skip
    reconcile_range_rows: int = Field(default=500_000, ge=1, description="Lake rows per key range `reconcile` compares at a time (bounds its memory).")
    writer_breaker_cooldown_s: float = Field(default=30.0, ge=0, description="After 3 failed batches in a row a writer sends batches straight to the DLQ for this long, then tries one again.")
    writer_cpus: float = Field(default=0.1, gt=0, description="CPUs reserved per writer actor.")
    vector_min_score: float = Field(default=0.5, ge=0, le=1, description="Transactions with fraud_score >= this get vectors.")

    alert_webhook_url: SecretStr | None = Field(default=None, description="Generic JSON webhook receiving alerts (a secret: often carries a token).")
    alert_slack_webhook_url: SecretStr | None = Field(default=None, description="Slack-compatible incoming webhook receiving alerts.")
    alert_smtp_url: SecretStr | None = Field(default=None, description="smtp://user:pass@host:25 (smtps:// or smtp+starttls://) for e-mail alerts.")
    alert_email_to: list[str] = Field(default_factory=list, description="Recipients of e-mail alerts.")
    alert_email_from: str = Field(default="rayapp@localhost", description="Sender of e-mail alerts.")
    alert_quarantine_share: float = Field(default=0.05, ge=0, le=1, description="Alert when bronze_to_silver quarantines more than this share.")
    alert_dlq_rows: int = Field(default=0, ge=0, description="Alert when more rows than this wait in the dead-letter queue after a publish.")
    alert_freshness_hours: float = Field(default=24.0, gt=0, description="check_freshness alerts on a source with no successful ingest for this long.")
    alert_timeout_s: float = Field(default=5.0, gt=0, description="Per notifier request; a notifier that is down never fails a run.")

    ray_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAYAPP_RAY_ADDRESS", "RAY_ADDRESS", "ray_address"),
        description="Ray cluster to join; unset starts a local Ray instance.",
    )
    ray_num_cpus: int | None = Field(default=None, ge=1, description="CPUs of a locally started Ray instance.")
    serve_port: int = Field(default=8000, ge=1, le=65535, description="HTTP port of the Serve proxy (models).")
    serve_host: str = Field(default="127.0.0.1", description="Address the Serve proxy listens on (0.0.0.0 only behind the API keys).")
    api_auth: bool = Field(default=True, description="Require API keys on every route but /healthz (false: local development only).")
    api_signing_key: SecretStr | None = Field(
        default=None, description="HMAC key for the URLs a local lake's files are served at (default: a random key kept in <lake>/_system)."
    )
    api_url_ttl_s: int = Field(default=900, ge=1, le=7 * 24 * 3600, description="Lifetime of presigned file URLs.")
    api_max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body the API reads.")
    api_timeout_s: float = Field(default=30.0, gt=0, description="A request still working after this long answers 504.")
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, v: str) -> str:
        if v.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return v.upper()

    @field_validator("lake_uri", "landing_uri")
    @classmethod
    def _check_uri(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        scheme = urlsplit(v).scheme
        if scheme not in ("", "file", "s3", "s3a") and not re.match(r"^[A-Za-z]:[\\/]", v):
            raise ValueError(f"unsupported scheme {scheme!r}: use a local path or s3://bucket/prefix")
        if scheme in ("s3", "s3a") and not urlsplit(v).netloc:
            raise ValueError("s3 URI needs a bucket: s3://bucket/prefix")
        return v

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        if v and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        return v or None

    @model_validator(mode="after")
    def _check_store_urls(self) -> "Settings":
        from rayapp.sinks import check_store_url  # the store plug-ins know their schemes

        for name in type(self).model_fields:
            value = getattr(self, name)
            if name.endswith("_url") and isinstance(value, SecretStr):
                if not value.get_secret_value():
                    setattr(self, name, None)
                    continue
                try:
                    check_store_url(name, value.get_secret_value())
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return self

    @field_validator("alert_webhook_url", "alert_slack_webhook_url", "alert_smtp_url")
    @classmethod
    def _check_alert_url(cls, v: SecretStr | None, info: Any) -> SecretStr | None:
        if v is None or not v.get_secret_value():
            return None
        allowed = ("smtp", "smtps", "smtp+starttls") if info.field_name == "alert_smtp_url" else ("http", "https")
        if urlsplit(v.get_secret_value()).scheme not in allowed:
            raise ValueError(f"must start with {' or '.join(a + '://' for a in allowed)}")
        return v

    @model_validator(mode="after")
    def _check_open_api(self) -> "Settings":
        if not self.api_auth and self.serve_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"api_auth: switching API keys off is for local development; serve_host {self.serve_host} is not loopback")
        return self

    @model_validator(mode="after")
    def _resolve_paths(self) -> "Settings":
        # Absolute paths: Ray workers and `ray job submit` drivers run in other directories.
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.lake_uri is None:
            self.lake_uri = str(self.data_dir / "lake")
        elif not is_remote(self.lake_uri):
            self.lake_uri = str(Path(strip_file_scheme(self.lake_uri)).expanduser().resolve())
        if self.landing_uri is None:
            self.landing_uri = join_uri(self.lake_uri, "landing")
        elif not is_remote(self.landing_uri):
            self.landing_uri = str(Path(strip_file_scheme(self.landing_uri)).expanduser().resolve())
        if self.s3_allow_http is None:
            self.s3_allow_http = bool(self.s3_endpoint_url and self.s3_endpoint_url.startswith("http://"))
        return self

    # ---- derived values -------------------------------------------------------------

    @property
    def lake_root(self) -> str:
        """The lake root URI (a local absolute path or ``s3://bucket/prefix``)."""
        assert self.lake_uri is not None
        return self.lake_uri

    @property
    def landing(self) -> str:
        assert self.landing_uri is not None
        return self.landing_uri

    def redacted(self) -> dict[str, Any]:
        """A JSON-safe view with every secret and DSN password masked (for logs and run records)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                if name.startswith("alert_") and "://" in raw:  # a webhook's token is its path
                    parts = urlsplit(raw)
                    out[name] = f"{parts.scheme}://{parts.hostname}/**********"
                else:
                    out[name] = redact_url(raw) if "://" in raw else "**********"
            elif isinstance(value, Enum):
                out[name] = value.value
            elif isinstance(value, Path):
                out[name] = str(value)
            elif isinstance(value, dict) and all(isinstance(v, BaseModel) for v in value.values()):
                out[name] = {k: v.model_dump(mode="json") for k, v in value.items()}  # SecretStr fields stay masked
            else:
                out[name] = value
        return out


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from (overrides > env > TOML > defaults).

    Args:
        config_file: TOML file; when None, ``RAYAPP_CONFIG`` from ``env`` is used if set.
        overrides: values from the command line, by field name.
        env: the environment to read ``RAYAPP_CONFIG`` from (default ``os.environ``).

    Raises:
        ConfigError: with one line naming the offending setting.
    """
    environ = os.environ if env is None else env
    path = config_file or environ.get("RAYAPP_CONFIG") or None
    toml_path: Path | None = None
    if path:
        toml_path = Path(path).expanduser()
        if not toml_path.is_file():
            raise ConfigError(f"config file not found: {toml_path}")
    clean = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(clean) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(Settings.model_fields))})")
    token = _TOML_FILE.set(toml_path)
    try:
        return Settings(**clean)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        msg = err.get("msg", "invalid value")
        named = re.match(r"^Value error, (\w+): (.*)$", msg)  # a model-level check naming its field
        if loc == "settings" and named and named.group(1) in Settings.model_fields:
            loc, msg = named.group(1), f"Value error, {named.group(2)}"
        env_name = "RAYAPP_" + loc.upper() if loc in Settings.model_fields else loc
        raise ConfigError(f"invalid setting {env_name}: {msg}") from None
    except Exception as exc:  # noqa: BLE001 - TOML syntax errors and the like
        raise ConfigError(f"cannot load settings: {exc}") from None
    finally:
        _TOML_FILE.reset(token)

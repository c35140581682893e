"""Which backend holds each piece of project state, chosen by configuration, and opening it.

- response cache index and leases: cache.sqlite, or PostgreSQL (CTI_STATE_POSTGRES_URL);
- raw answer bodies: cache.sqlite, or an object store (CTI_BODIES_URL), else PostgreSQL;
- rate-limit buckets and request spacing: ratelimit/<provider>.sqlite, or Redis (CTI_REDIS_URL);
- quota records: ratelimit/<provider>.sqlite, or Redis when set, else PostgreSQL;
- deferred ledger: deferred.sqlite, or PostgreSQL.

The SQLite files are under CTI_DATA_DIR (one host).
Dagster-free: the resources (cti_assets.defs.resources) and the CLI build a `StateConfig` and
ask it for stores; nothing else decides where state lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cti_assets.state import urls

if TYPE_CHECKING:
    from cti_assets.providers.cache import AnswerStore, BodyStore
    from cti_assets.providers.config import ProviderSettings
    from cti_assets.providers.deferred import Deferrals
    from cti_assets.providers.ratelimit import QuotaLedger, SharedLimiter

SQLITE = "sqlite"
POSTGRES = "postgres"
REDIS = "redis"
OBJECT_STORE = "object_store"


@dataclass(frozen=True)
class StateConfig:
    """Addresses of the shared backends; each one left unset keeps its SQLite default."""

    postgres_url: str | None = None
    redis_url: str | None = None
    bodies_url: str | None = None
    schema: str = urls.DEFAULT_SCHEMA
    key_prefix: str = urls.DEFAULT_KEY_PREFIX

    def __post_init__(self) -> None:
        urls.check_identifier(self.schema, "state schema")
        urls.check_identifier(self.key_prefix, "state key prefix")

    @classmethod
    def from_env(cls) -> StateConfig:
        """CTI_STATE_POSTGRES_URL, CTI_REDIS_URL (or CTI_RATELIMIT_REDIS_URL), CTI_BODIES_URL,
        CTI_STATE_SCHEMA, CTI_STATE_KEY_PREFIX."""
        redis_var = urls.redis_url_env()
        return cls(
            postgres_url=urls.env(urls.POSTGRES_URL_ENV),
            redis_url=urls.env(redis_var) if redis_var else None,
            bodies_url=urls.env(urls.BODIES_URL_ENV),
            schema=urls.env(urls.SCHEMA_ENV) or urls.DEFAULT_SCHEMA,
            key_prefix=urls.env(urls.KEY_PREFIX_ENV) or urls.DEFAULT_KEY_PREFIX,
        )

    # --- which backend ---------------------------------------------------------------------
    @property
    def cache_backend(self) -> str:
        return POSTGRES if self.postgres_url else SQLITE

    @property
    def bodies_backend(self) -> str:
        if self.bodies_url:
            return OBJECT_STORE
        return self.cache_backend

    @property
    def bucket_backend(self) -> str:
        return REDIS if self.redis_url else SQLITE

    @property
    def quota_backend(self) -> str:
        if self.redis_url:
            return REDIS
        return POSTGRES if self.postgres_url else SQLITE

    @property
    def deferred_backend(self) -> str:
        return POSTGRES if self.postgres_url else SQLITE

    def describe(self) -> dict[str, str]:
        """Each store's backend and address without secrets (for metadata and `where`)."""
        places = {POSTGRES: urls.redact_url(self.postgres_url), REDIS: urls.redact_url(
            self.redis_url), OBJECT_STORE: urls.redact_url(self.bodies_url), SQLITE: "CTI_DATA_DIR"}
        return {store: f"{backend} ({places[backend]})" for store, backend in (
            ("response_cache", self.cache_backend), ("raw_bodies", self.bodies_backend),
            ("rate_limit_buckets", self.bucket_backend), ("quota_records", self.quota_backend),
            ("deferred_ledger", self.deferred_backend))}

    # --- opening ---------------------------------------------------------------------------
    def bodies(self) -> BodyStore | None:
        """The object store of raw bodies; None: bodies stay with the cache index."""
        if not self.bodies_url:
            return None
        from cti_assets.state.bodies import ObjectBodies

        store = ObjectBodies(self.bodies_url)
        store.check()
        return store

    def open_cache(self) -> AnswerStore:
        """The response cache (close it after use)."""
        if self.postgres_url:
            from cti_assets.state.pg_cache import PostgresResponseCache

            return PostgresResponseCache(self.postgres_url, schema=self.schema,
                                         bodies=self.bodies())
        from cti_assets.providers.cache import ResponseCache

        return ResponseCache(bodies=self.bodies())

    def shared_quota(self, provider: str) -> QuotaLedger:
        """The shared quota ledger of `provider`: Redis when set, else PostgreSQL."""
        if self.redis_url:
            from cti_assets.state.quota import RedisQuotaLedger

            return RedisQuotaLedger(self.redis_url, provider, self.key_prefix)
        if self.postgres_url:
            from cti_assets.state.pg import PgConnection
            from cti_assets.state.quota import PostgresQuotaLedger

            return PostgresQuotaLedger(PgConnection(self.postgres_url, self.schema), provider,
                                       owns=True)
        raise ValueError("no shared quota backend: set a Redis or a PostgreSQL URL")

    def limiter(self, settings: ProviderSettings) -> SharedLimiter:
        """The provider's limiter: buckets in Redis or SQLite, quota records as configured."""
        from cti_assets.providers.ratelimit import SharedLimiter

        shared = bool(self.redis_url or self.postgres_url)
        return SharedLimiter.for_settings(
            settings, redis_url=self.redis_url or "", key_prefix=self.key_prefix,
            quota=self.shared_quota if shared else None)

    def open_deferred(self) -> Deferrals:
        """The deferred ledger (close it after use)."""
        if self.postgres_url:
            from cti_assets.state.pg_deferred import PostgresDeferredLedger

            return PostgresDeferredLedger(self.postgres_url, schema=self.schema)
        from cti_assets.providers.deferred import DeferredLedger

        return DeferredLedger()

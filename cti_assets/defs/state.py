"""Dagster resources of the project state: the response cache, the rate limits with their
quota records, and the deferred ledger, each with an embedded backend (SQLite under
CTI_DATA_DIR, one host) and a shared one (PostgreSQL, Redis, an object store; several hosts).

Each resource names its backend in its config (`sqlite`, `postgres`, `redis`, `object_store`),
so the UI shows which is in use, and its URL fields are bound with dg.EnvVar, so the UI shows
the variable's name, never the address or its password. The choice itself is made by
cti_assets.state.config from the environment; these classes only carry it into Dagster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from cti_assets.state import urls
from cti_assets.state.config import OBJECT_STORE, POSTGRES, REDIS, SQLITE, StateConfig

if TYPE_CHECKING:
    from cti_assets.providers.cache import AnswerStore
    from cti_assets.providers.config import ProviderSettings
    from cti_assets.providers.deferred import Deferrals
    from cti_assets.providers.ratelimit import SharedLimiter


def _needs(backend: str, url: str | None, variable: str) -> str:
    if not url:
        raise ValueError(f"state backend {backend!r} needs {variable}")
    return url


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


class ResponseCacheResource(dg.ConfigurableResource):
    """Provider response cache and in-flight leases. `sqlite`: cache.sqlite in CTI_DATA_DIR
    (one host). `postgres`: the answers index and leases in PostgreSQL, shared by every host;
    raw bodies in an object store by digest (`object_store`) or in PostgreSQL."""

    backend: str = Field(default=SQLITE, description="sqlite or postgres")
    bodies_backend: str | None = Field(
        default=None, description="object_store, or unset: with the index (sqlite or postgres)")
    postgres_url: str | None = Field(default=None, description="bind with dg.EnvVar")
    bodies_url: str | None = Field(default=None, description="s3://bucket/prefix (dg.EnvVar)")
    state_schema: str = Field(default=urls.DEFAULT_SCHEMA, description="PostgreSQL schema")

    def state(self) -> StateConfig:
        backend = _choice(self.backend, (SQLITE, POSTGRES), "response cache backend")
        bodies = _choice(self.bodies_backend or backend, (backend, OBJECT_STORE),
                         "bodies backend")
        return StateConfig(
            postgres_url=_needs(backend, self.postgres_url, urls.POSTGRES_URL_ENV)
            if backend == POSTGRES else None,
            bodies_url=_needs(bodies, self.bodies_url, urls.BODIES_URL_ENV)
            if bodies == OBJECT_STORE else None,
            schema=self.state_schema)

    def open(self) -> AnswerStore:
        return self.state().open_cache()


class RateLimitResource(dg.ConfigurableResource):
    """Rate-limit buckets and quota records of every provider. `sqlite`: one file per provider
    in CTI_DATA_DIR (the processes of one host). `redis`: buckets (and quota records) in Redis,
    one budget for every host; quota records in `postgres` when only PostgreSQL is set."""

    buckets_backend: str = Field(default=SQLITE, description="sqlite or redis")
    quota_backend: str = Field(default=SQLITE, description="sqlite, redis or postgres")
    redis_url: str | None = Field(default=None, description="bind with dg.EnvVar")
    postgres_url: str | None = Field(default=None, description="bind with dg.EnvVar")
    state_schema: str = Field(default=urls.DEFAULT_SCHEMA, description="PostgreSQL schema")
    key_prefix: str = Field(default=urls.DEFAULT_KEY_PREFIX, description="Redis key prefix")

    def state(self) -> StateConfig:
        buckets = _choice(self.buckets_backend, (SQLITE, REDIS), "buckets backend")
        quota = _choice(self.quota_backend, (SQLITE, REDIS, POSTGRES), "quota backend")
        if (quota == REDIS) != (buckets == REDIS):
            raise ValueError("quota records live in Redis exactly when the buckets do")
        return StateConfig(
            redis_url=_needs(buckets, self.redis_url, urls.REDIS_URL_ENV)
            if buckets == REDIS else None,
            postgres_url=_needs(quota, self.postgres_url, urls.POSTGRES_URL_ENV)
            if quota == POSTGRES else None,
            schema=self.state_schema, key_prefix=self.key_prefix)

    def limiter(self, settings: ProviderSettings) -> SharedLimiter:
        return self.state().limiter(settings)


class DeferredLedgerResource(dg.ConfigurableResource):
    """Observables deferred by triage or an unavailable provider, taken up first next time.
    `sqlite`: deferred.sqlite in CTI_DATA_DIR; `postgres`: shared by every host."""

    backend: str = Field(default=SQLITE, description="sqlite or postgres")
    postgres_url: str | None = Field(default=None, description="bind with dg.EnvVar")
    state_schema: str = Field(default=urls.DEFAULT_SCHEMA, description="PostgreSQL schema")

    def open(self) -> Deferrals:
        backend = _choice(self.backend, (SQLITE, POSTGRES), "deferred ledger backend")
        url = _needs(backend, self.postgres_url, urls.POSTGRES_URL_ENV) \
            if backend == POSTGRES else None
        return StateConfig(postgres_url=url, schema=self.state_schema).open_deferred()


STATE_RESOURCE_KEYS = ("response_cache", "rate_limits", "deferred_ledger")


def state_resources() -> dict[str, dg.ConfigurableResource]:
    """The state resources with the backends the environment configures (URLs through
    dg.EnvVar, so the UI shows the variable's name, never the address or its password)."""
    config = StateConfig.from_env()
    pg = dg.EnvVar(urls.POSTGRES_URL_ENV) if config.postgres_url else None
    redis_var = urls.redis_url_env()
    redis = dg.EnvVar(redis_var) if redis_var else None
    bodies = dg.EnvVar(urls.BODIES_URL_ENV) if config.bodies_url else None
    return {
        "response_cache": ResponseCacheResource(
            backend=config.cache_backend, bodies_backend=config.bodies_backend,
            postgres_url=pg, bodies_url=bodies, state_schema=config.schema),
        "rate_limits": RateLimitResource(
            buckets_backend=config.bucket_backend, quota_backend=config.quota_backend,
            redis_url=redis, postgres_url=pg if config.quota_backend == POSTGRES else None,
            state_schema=config.schema, key_prefix=config.key_prefix),
        "deferred_ledger": DeferredLedgerResource(
            backend=config.deferred_backend, postgres_url=pg, state_schema=config.schema),
    }

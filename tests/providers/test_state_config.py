"""Where state lives is chosen by configuration only, shown by each resource, never with a
secret: the embedded default is unchanged, the shared variables pick the shared backends."""

from __future__ import annotations

import dagster as dg
import pytest

from cti_assets.defs.state import (
    DeferredLedgerResource,
    RateLimitResource,
    ResponseCacheResource,
    state_resources,
)
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.deferred import DeferredLedger
from cti_assets.state.config import StateConfig
from cti_assets.state.pg import PgConnection, StateBackendError
from cti_assets.state.urls import redact_url

SECRET = "s3cr3t-pw"
VARIABLES = ("CTI_STATE_POSTGRES_URL", "CTI_REDIS_URL", "CTI_RATELIMIT_REDIS_URL",
             "CTI_BODIES_URL", "CTI_STATE_SCHEMA", "CTI_STATE_KEY_PREFIX")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path))
    return monkeypatch


def test_redacted_urls_keep_the_place_and_drop_the_secret():
    assert redact_url(f"postgresql://cti:{SECRET}@db:5432/state?sslmode=require") == \
        "postgresql://cti:***@db:5432/state"
    assert redact_url(f"redis://:{SECRET}@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("s3://bucket/bodies?token=x") == "s3://bucket/bodies"


def test_the_default_is_the_embedded_sqlite_state(clean_env, tmp_path):
    config = StateConfig.from_env()
    assert set(config.describe().values()) == {"sqlite (CTI_DATA_DIR)"}
    resources = state_resources()
    cache = resources["response_cache"].open()
    assert isinstance(cache, ResponseCache) and cache.path == tmp_path / "cache.sqlite"
    cache.close()
    assert isinstance(resources["deferred_ledger"].open(), DeferredLedger)
    assert resources["rate_limits"].buckets_backend == "sqlite"


def test_shared_variables_pick_the_shared_backends_through_env_vars(clean_env):
    clean_env.setenv("CTI_STATE_POSTGRES_URL", f"postgresql://cti:{SECRET}@db/state")
    clean_env.setenv("CTI_REDIS_URL", f"redis://:{SECRET}@cache:6379/0")
    clean_env.setenv("CTI_BODIES_URL", "s3://bucket/bodies")
    described = StateConfig.from_env().describe()
    assert described == {
        "response_cache": "postgres (postgresql://cti:***@db/state)",
        "raw_bodies": "object_store (s3://bucket/bodies)",
        "rate_limit_buckets": "redis (redis://:***@cache:6379/0)",
        "quota_records": "redis (redis://:***@cache:6379/0)",
        "deferred_ledger": "postgres (postgresql://cti:***@db/state)",
    }
    resources = state_resources()
    cache, limits, ledger = (resources[k] for k in ("response_cache", "rate_limits",
                                                    "deferred_ledger"))
    assert (cache.backend, cache.bodies_backend) == ("postgres", "object_store")
    assert (limits.buckets_backend, limits.quota_backend) == ("redis", "redis")
    assert ledger.backend == "postgres"
    # the UI shows the resource's config: the variables' names, never their values
    for resource in resources.values():
        shown = repr(resource._get_non_default_public_field_values())  # noqa: SLF001
        assert SECRET not in shown
    assert isinstance(cache._get_non_default_public_field_values()["postgres_url"], dg.EnvVar)  # noqa: SLF001


def test_postgres_without_redis_keeps_quota_records_in_postgres(clean_env):
    clean_env.setenv("CTI_STATE_POSTGRES_URL", "postgresql://cti@db/state")
    limits = state_resources()["rate_limits"]
    assert (limits.buckets_backend, limits.quota_backend) == ("sqlite", "postgres")


def test_a_backend_without_its_address_is_one_clear_error():
    with pytest.raises(ValueError, match="CTI_STATE_POSTGRES_URL"):
        ResponseCacheResource(backend="postgres").open()
    with pytest.raises(ValueError, match="CTI_REDIS_URL"):
        RateLimitResource(buckets_backend="redis", quota_backend="redis").state()
    with pytest.raises(ValueError, match="exactly when"):
        RateLimitResource(buckets_backend="sqlite", quota_backend="redis",
                          redis_url="redis://x").state()
    with pytest.raises(ValueError, match="one of"):
        DeferredLedgerResource(backend="mysql").open()


def test_an_unreachable_postgres_error_names_no_password():
    pytest.importorskip("psycopg2", reason="psycopg2 not installed (postgres extra)")
    with pytest.raises(StateBackendError) as error:
        PgConnection(f"postgresql://cti:{SECRET}@127.0.0.1:1/state", "cti_state")
    assert SECRET not in str(error.value) and "127.0.0.1" in str(error.value)

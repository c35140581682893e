"""Dagster resources: the source (local store or OpenCTI), one resource per provider, and
(from defs/state.py) the project state: response cache, rate limits and quota records,
deferred ledger.

Secrets only ever reach a resource through dg.EnvVar, resolved at run launch and never shown in
the UI. A variable that is not set binds nothing (a provider without a key is skipped with a
status, not an error), so the definitions load on a laptop with no accounts.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from cti_assets import settings
from cti_assets.providers import base
from cti_assets.providers.config import KEY_VARS, TUNING_VARS, URL_VARS, tuning_value
from cti_assets.sources.base import Source, SourceError

PROVIDER_ENV: dict[str, tuple[str | None, str | None]] = {
    # provider: (API key variable, base URL variable), from the provider settings
    provider: (KEY_VARS[provider], URL_VARS[provider])
    for provider in base.ALL_PROVIDERS if provider != base.NETWORK_CONTEXT
}


class SourceResource(dg.ConfigurableResource):
    """Where observables come from: `local` (embedded SQLite STIX store) or `opencti`."""

    kind: str = Field(default="local", description="local or opencti")
    store_path: str | None = Field(default=None, description="SQLite file of the local store")
    opencti_url: str | None = None
    opencti_token: str | None = None
    opencti_ssl_verify: bool = True
    opencti_timeout_s: float = 30.0

    def get(self) -> Source:
        if self.kind == "opencti":
            from cti_assets.sources.opencti import OpenCTISource

            if not self.opencti_url or not self.opencti_token:
                raise SourceError("CTI_SOURCE=opencti needs OPENCTI_URL and OPENCTI_TOKEN")
            return OpenCTISource(
                url=self.opencti_url,
                token=self.opencti_token,
                ssl_verify=self.opencti_ssl_verify,
                timeout_s=self.opencti_timeout_s,
            )
        if self.kind != "local":
            raise SourceError(f"unknown source {self.kind!r}: use 'local' or 'opencti'")
        from cti_assets.sources.local import LocalStixStore

        return LocalStixStore(self.store_path) if self.store_path else LocalStixStore()


class ProviderResource(dg.ConfigurableResource):
    """One enrichment provider: key, base URL, TLP ceiling, rate limits, cache TTLs, timeout."""

    provider: str
    api_key: str | None = Field(default=None, description="API key (bind with dg.EnvVar)")
    base_url: str | None = Field(default=None, description="Override of the API base URL")
    max_tlp: str | None = Field(default=None, description="Highest TLP sent (default TLP:AMBER)")
    per_second: float | None = None
    per_minute: int | None = None
    per_day: int | None = None
    per_month: int | None = None
    timeout_s: float | None = None
    max_workers: int | None = None
    paid: bool = False
    cache_ttl_s: dict[str, int] | None = Field(
        default=None, description="Cache TTL per entity type, e.g. {'IPv4-Addr': 86400}"
    )
    not_found_ttl_s: int | None = Field(default=None, description="Cache TTL of not-found answers")

    def provider_settings(self):  # -> ProviderSettings, imported lazily
        from dataclasses import replace

        from cti_assets.providers.config import settings_from_env

        # the key comes only from this resource (dg.EnvVar); everything else may also come from
        # the run's environment (limits, retries, TTLs), with this resource's fields on top
        settings = replace(settings_from_env(self.provider), api_key=self.api_key or None)
        overrides = {
            "base_url": self.base_url,
            "max_tlp": self.max_tlp,
            "per_second": self.per_second,
            "per_minute": self.per_minute,
            "per_day": self.per_day,
            "per_month": self.per_month,
            "timeout_s": self.timeout_s,
            "max_workers": self.max_workers,
        }
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        if self.cache_ttl_s:
            settings = replace(settings, cache_ttl_s={**settings.cache_ttl_s, **self.cache_ttl_s})
        if self.not_found_ttl_s is not None:
            settings = replace(settings, not_found_ttl_s=self.not_found_ttl_s)
        if self.paid:
            settings = replace(settings, paid=True)
        return settings


def _env_or_none(name: str | None) -> dg.EnvVar | None:
    """Bind a variable through EnvVar when it is set; leave the field empty otherwise."""
    return dg.EnvVar(name) if name and os.environ.get(name) else None


def _tuning(prefix: str, suffix: str):
    """A provider variable read with the provider settings' own parser (TUNING_VARS)."""
    return tuning_value(f"{prefix}_{suffix}", TUNING_VARS[suffix][1])


def provider_resource(provider: str) -> ProviderResource:
    key_var, url_var = PROVIDER_ENV[provider]
    prefix = provider.upper()
    return ProviderResource(
        provider=provider,
        api_key=_env_or_none(key_var),
        base_url=_env_or_none(url_var),
        max_tlp=_env_or_none(f"{prefix}_MAX_TLP"),
        per_second=_tuning(prefix, "PER_SECOND"),
        per_minute=_tuning(prefix, "PER_MINUTE"),
        per_day=_tuning(prefix, "PER_DAY"),
        per_month=_tuning(prefix, "PER_MONTH"),
        timeout_s=_tuning(prefix, "TIMEOUT_S"),
        max_workers=_tuning(prefix, "MAX_WORKERS"),
        paid=settings.flag("GREYNOISE_PAID") if provider == base.GREYNOISE else False,
    )


def source_resource() -> SourceResource:
    kind = settings.source_kind()
    if kind == "opencti":
        return SourceResource(
            kind="opencti",
            opencti_url=dg.EnvVar("OPENCTI_URL"),
            opencti_token=dg.EnvVar("OPENCTI_TOKEN"),
            opencti_ssl_verify=settings.opencti_ssl_verify(),
        )
    return SourceResource(kind=kind)


def all_resources() -> dict[str, object]:
    from cti_assets.defs.io import ParquetIOManagerFactory
    from cti_assets.defs.state import state_resources

    resources: dict[str, object] = {
        "io_manager": ParquetIOManagerFactory(),
        "source": source_resource(),
        **state_resources(),
    }
    resources.update({provider: provider_resource(provider) for provider in PROVIDER_ENV})
    return resources

"""Every provider named in providers/base.py has all its entries (client, settings, key and URL
variables, fields, scope, label, page, sandbox route), and the stages that used to keep their own
lists of providers now take them from there: adding a provider is complete or fails here."""

from __future__ import annotations

import pytest

from cti_assets.providers import base
from cti_assets.providers.config import DEFAULTS, KEY_VARS, URL_VARS
from cti_assets.providers.fields import PROVIDER_FIELDS, PROVIDER_SCOPE
from cti_assets.providers.registry import CLIENTS, PROVIDER_PAGE_URLS
from cti_assets.sandbox import BASE_URL_PATHS, PROVIDERS

API_PROVIDERS = [p for p in base.ALL_PROVIDERS if p != base.NETWORK_CONTEXT]


@pytest.mark.parametrize("provider", API_PROVIDERS)
def test_each_provider_has_every_entry(provider):
    assert CLIENTS[provider].provider == provider
    assert DEFAULTS[provider].name == provider and DEFAULTS[provider].base_url.startswith("https")
    assert provider in KEY_VARS and URL_VARS[provider] in BASE_URL_PATHS
    assert PROVIDER_FIELDS[provider] and PROVIDER_SCOPE[provider]
    assert base.PROVIDER_LABELS[provider]
    assert set(PROVIDER_PAGE_URLS[provider]) <= set(PROVIDER_SCOPE[provider])
    assert provider in PROVIDERS  # the sandbox serves it


def test_no_provider_is_both_cheap_and_expensive():
    assert not set(base.CHEAP_PROVIDERS) & set(base.EXPENSIVE_PROVIDERS)
    assert len(set(base.ALL_PROVIDERS)) == len(base.ALL_PROVIDERS)


def test_assets_resources_demo_keys_and_pools_come_from_the_entries():
    from cti_assets.cli import demo, runs
    from cti_assets.defs import lookups, resources

    assert set(lookups.CHEAP_API_PROVIDERS) | set(base.EXPENSIVE_PROVIDERS) == set(API_PROVIDERS)
    assert set(resources.PROVIDER_ENV) == set(API_PROVIDERS)
    assert all(resources.PROVIDER_ENV[p] == (KEY_VARS[p], URL_VARS[p]) for p in API_PROVIDERS)
    assert {f"{prefix}_API_KEY" for prefix in demo.KEYED_PROVIDERS} == {
        v for v in KEY_VARS.values() if v}
    assert set(runs.POOL_LIMITS) == set(DEFAULTS) | {"opencti"}

"""The forced-refresh decision of lookup_frame: everything, nothing, or just the rows named by
STIX id, raw value or normalised value; the other rows keep coming from the cache."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from cti_assets import tables
from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.runner import lookup_frame, refreshes

KEYS = {
    "VIRUSTOTAL_API_KEY": "vt-refresh-key",
    "SHODAN_API_KEY": "shodan-refresh-key",
    "ABUSEIPDB_API_KEY": "abuse-refresh-key",
    "GREYNOISE_API_KEY": "gn-refresh-key",
    "SECURITYTRAILS_API_KEY": "st-refresh-key",
}
IP_PROVIDERS = (base.INTERNETDB, base.GREYNOISE, base.ABUSEIPDB, base.VIRUSTOTAL, base.SHODAN)
VALUES = ("45.83.70.1", "45.83.70.2", "45.83.70.3")


def observable(value, stix_id, entity_type="IPv4-Addr", raw=None):
    return {
        "internal_id": f"internal-{stix_id}",
        "stix_id": stix_id,
        "entity_type": entity_type,
        "value": raw if raw is not None else value,
        "normalized_value": value,
        "hash_type": None,
        "tlp": "TLP:GREEN",
        "marking_ids": [],
        "labels": [],
        "existing_score": None,
        "created_at": pd.Timestamp("2026-11-20", tz="UTC"),
        "status": "ok",
        "reason": None,
    }


def frame(*rows):
    return pd.DataFrame(list(rows), columns=list(tables.OBSERVABLE_COLUMNS))


def ip_frame():
    return frame(*[observable(v, f"ipv4-addr--refresh-{i}") for i, v in enumerate(VALUES)])


@pytest.fixture
def env(sb, tmp_path, monkeypatch):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    values = {**sb.base_urls, **KEYS}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def cache(tmp_path):
    store = ResponseCache(tmp_path / "cache.sqlite")
    yield store
    store.close()


def settings(env, provider):
    return replace(settings_from_env(provider, env), backoff_base_s=0.01, backoff_max_s=0.05)


def sent(sb, provider=None):
    """Observable values the sandbox was asked about (by one provider, or by any)."""
    return sorted(r.observable for r in sb.requests
                  if provider is None or r.provider == provider)


def warm(sb, env, cache, observables, provider):
    """A first run that caches every row, then a clean request log."""
    first, _ = lookup_frame(provider, observables, settings(env, provider), cache=cache)
    assert set(first["status"]) <= {base.OK, base.NOT_FOUND}
    assert not first["from_cache"].any()
    sb.reset_log()
    again, _ = lookup_frame(provider, observables, settings(env, provider), cache=cache)
    assert again["from_cache"].all() and sb.request_count() == 0
    return first


# --- refreshes(): the per-row decision -----------------------------------------------------

ROW = {"stix_id": "ipv4-addr--r", "value": " 45.83.70.9 ", "normalized_value": "45.83.70.9"}


@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_decides_for_every_row(flag):
    assert refreshes(flag, ROW) is flag
    assert refreshes(flag, {}) is flag


@pytest.mark.parametrize("name", ["stix_id", "value", "normalized_value"])
@pytest.mark.parametrize("kind", [set, frozenset, list, tuple])
def test_any_identifying_column_in_a_collection_refreshes_the_row(name, kind):
    assert refreshes(kind([ROW[name]]), ROW)
    assert refreshes(kind(["something-else", ROW[name]]), ROW)


@pytest.mark.parametrize(
    "wanted",
    [
        set(),
        [],
        {"45.83.70.99"},
        {"ipv4-addr--other"},
        {"45.83.70.90", "ipv4-addr--r2"},
        {"45.83.70."},
    ],
)
def test_a_collection_naming_other_rows_leaves_this_one_cached(wanted):
    assert not refreshes(wanted, ROW)


def test_rows_without_a_raw_value_are_matched_on_the_other_columns():
    row = {"stix_id": "ipv4-addr--r", "value": None, "normalized_value": "45.83.70.9"}
    assert refreshes({"45.83.70.9"}, row)
    assert refreshes(frozenset({"ipv4-addr--r"}), row)
    assert not refreshes({"45.83.70.8"}, row)
    assert not refreshes({"45.83.70.9"}, {"stix_id": "ipv4-addr--q"})


@pytest.mark.parametrize("raw", ["45.83.70.1", None], ids=["substring", "no-raw-value"])
def test_a_single_string_means_that_one_value_not_its_substrings(raw):
    row = {"stix_id": "ipv4-addr--s", "value": raw, "normalized_value": "45.83.70.1"}
    assert not refreshes("45.83.70.19", row)
    assert refreshes("45.83.70.1", row)


# --- lookup_frame against the sandbox --------------------------------------------------------


@pytest.mark.parametrize("provider", IP_PROVIDERS)
def test_refreshing_one_value_sends_one_request_and_the_rest_comes_from_cache(
    sb, env, cache, provider
):
    observables = ip_frame()
    first = warm(sb, env, cache, observables, provider)
    target = VALUES[1]

    out, stats = lookup_frame(provider, observables, settings(env, provider), cache=cache,
                              force_refresh={target})
    assert sent(sb) == [target]  # exactly one request, for that value, by this provider
    assert sb.request_count(provider) == 1
    assert list(out["from_cache"]) == [v != target for v in VALUES]
    assert list(out["stix_id"]) == list(observables["stix_id"])
    assert list(out["status"]) == list(first["status"])
    assert stats.calls == 1 and stats.cache_hits == len(VALUES) - 1


def test_refresh_by_stix_id(sb, env, cache):
    observables = ip_frame()
    warm(sb, env, cache, observables, base.GREYNOISE)
    target = observables.loc[2, "stix_id"]
    out, _ = lookup_frame(base.GREYNOISE, observables, settings(env, base.GREYNOISE),
                          cache=cache, force_refresh=[target])
    assert sent(sb) == [VALUES[2]]
    assert list(out["from_cache"]) == [True, True, False]


def test_refresh_by_raw_value_as_imported(sb, env, cache):
    observables = frame(
        observable("evil-refresh.net", "domain-name--a", "Domain-Name", raw="EVIL-Refresh.NET."),
        observable("calm-refresh.net", "domain-name--b", "Domain-Name"),
    )
    warm(sb, env, cache, observables, base.VIRUSTOTAL)
    out, _ = lookup_frame(base.VIRUSTOTAL, observables, settings(env, base.VIRUSTOTAL),
                          cache=cache, force_refresh=("EVIL-Refresh.NET.",))
    assert sent(sb) == ["evil-refresh.net"]
    assert list(out["from_cache"]) == [False, True]


def test_force_refresh_true_refetches_everything_and_false_nothing(sb, env, cache):
    observables = ip_frame()
    warm(sb, env, cache, observables, base.ABUSEIPDB)
    out, stats = lookup_frame(base.ABUSEIPDB, observables, settings(env, base.ABUSEIPDB),
                              cache=cache, force_refresh=True)
    assert sent(sb) == sorted(VALUES)
    assert not out["from_cache"].any() and stats.cache_hits == 0
    sb.reset_log()
    out, _ = lookup_frame(base.ABUSEIPDB, observables, settings(env, base.ABUSEIPDB),
                          cache=cache, force_refresh=False)
    assert sb.request_count() == 0 and out["from_cache"].all()


def test_an_empty_collection_refreshes_nothing(sb, env, cache):
    observables = ip_frame()
    warm(sb, env, cache, observables, base.GREYNOISE)
    out, _ = lookup_frame(base.GREYNOISE, observables, settings(env, base.GREYNOISE),
                          cache=cache, force_refresh=frozenset())
    assert sb.request_count() == 0 and out["from_cache"].all()


def test_a_refreshed_answer_replaces_the_cached_one(sb, env, cache):
    target = VALUES[0]
    sb.set_profile(target, "not_found")
    observables = ip_frame()
    first = warm(sb, env, cache, observables, base.GREYNOISE)
    assert first.loc[0, "status"] == base.NOT_FOUND

    sb.set_profile(target, "malicious")
    refreshed, _ = lookup_frame(base.GREYNOISE, observables, settings(env, base.GREYNOISE),
                                cache=cache, force_refresh={target})
    assert refreshed.loc[0, "status"] == base.OK
    assert refreshed.loc[0, "fields"] != first.loc[0, "fields"]
    # the unrefreshed rows still carry what the first run stored
    assert list(refreshed.loc[1:, "raw_digest"]) == list(first.loc[1:, "raw_digest"])

    sb.reset_log()
    later, _ = lookup_frame(base.GREYNOISE, observables, settings(env, base.GREYNOISE),
                            cache=cache)
    assert sb.request_count() == 0
    assert later.loc[0, "status"] == base.OK
    assert later.loc[0, "raw_digest"] == refreshed.loc[0, "raw_digest"]


def test_refresh_never_bypasses_the_gates(sb, env, cache):
    observables = frame(
        observable("45.83.70.50", "ipv4-addr--red") | {"tlp": "TLP:RED"},
        observable("10.1.2.3", "ipv4-addr--private"),
        observable("45.83.70.51", "ipv4-addr--fine"),
    )
    out, _ = lookup_frame(base.ABUSEIPDB, observables, settings(env, base.ABUSEIPDB),
                          cache=cache, force_refresh=True)
    assert list(out["reason"].fillna("")) == [base.SKIP_TLP, base.SKIP_SPECIAL_USE, ""]
    assert sent(sb) == ["45.83.70.51"]


def test_a_refreshed_value_is_sent_once_even_when_two_rows_name_it(sb, env, cache):
    observables = frame(
        observable(VALUES[0], "ipv4-addr--one"),
        observable(VALUES[0], "ipv4-addr--two", raw=f" {VALUES[0]} "),
        observable(VALUES[1], "ipv4-addr--three"),
    )
    warm(sb, env, cache, observables, base.GREYNOISE)
    out, stats = lookup_frame(base.GREYNOISE, observables, settings(env, base.GREYNOISE),
                              cache=cache, force_refresh={VALUES[0]})
    assert sent(sb) == [VALUES[0]] and stats.calls == 1
    assert list(out["from_cache"]) == [False, False, True]

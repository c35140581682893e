"""lookup_frame against the provider sandbox: gates, cache, dedupe, quota, stats, one row each."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from cti_assets import tables
from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.ratelimit import SharedLimiter
from cti_assets.providers.runner import LookupStats, lookup_frame

KEYS = {
    "VIRUSTOTAL_API_KEY": "vt-test-key",
    "SHODAN_API_KEY": "shodan-test-key",
    "ABUSEIPDB_API_KEY": "abuse-test-key",
    "GREYNOISE_API_KEY": "gn-test-key",
    "SECURITYTRAILS_API_KEY": "st-test-key",
}


def observable(value, entity_type="IPv4-Addr", tlp="TLP:GREEN", status="ok", stix_id=None,
               reason=None):
    return {
        "internal_id": f"internal-{value}",
        "stix_id": stix_id or f"{entity_type.lower()}--{abs(hash((entity_type, value))):x}",
        "entity_type": entity_type,
        "value": value,
        "normalized_value": None if status == "rejected" else value,
        "hash_type": None,
        "tlp": tlp,
        "marking_ids": [],
        "labels": [],
        "existing_score": None,
        "created_at": pd.Timestamp("2026-01-01", tz="UTC"),
        "status": status,
        "reason": reason,
    }


def frame(*rows):
    return pd.DataFrame(list(rows), columns=list(tables.OBSERVABLE_COLUMNS))


@pytest.fixture
def env(sb, tmp_path, monkeypatch):
    monkeypatch.setenv("CTI_DATA_DIR", str(tmp_path / "data"))
    values = {**sb.base_urls, **KEYS}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def cache(tmp_path):
    store = ResponseCache(tmp_path / "cache.sqlite")
    yield store
    store.close()


def settings(env, provider, **overrides):
    return replace(settings_from_env(provider, env), backoff_base_s=0.01, backoff_max_s=0.05,
                   **overrides)


def limiter_for(tmp_path, provider):
    return SharedLimiter(provider, {}, path=tmp_path / "ratelimit.sqlite")


def test_every_row_gets_a_status_in_order_and_gated_rows_never_leave(sb, env, cache):
    observables = frame(
        observable("45.83.65.1"),
        observable("bad value", status="rejected", reason="not an IP"),
        observable("d41d8cd98f00b204e9800998ecf8427e", entity_type="StixFile"),
        observable("45.83.65.2", tlp="TLP:RED"),
        observable("45.83.65.3", tlp="TLP:AMBER+STRICT"),
        observable("45.83.65.7", tlp=None),
        observable("10.0.0.1"),
        observable("127.0.0.1"),
        observable("192.0.2.1"),
        observable("::1", entity_type="IPv6-Addr"),
        observable("fc00::1", entity_type="IPv6-Addr"),
        observable("45.83.65.4", tlp="TLP:AMBER"),
        observable("45.83.65.5", stix_id="ipv4-addr--deferred"),
        observable("45.83.65.1", stix_id="ipv4-addr--duplicate"),
    )
    out, stats = lookup_frame(
        base.ABUSEIPDB, observables, settings(env, base.ABUSEIPDB), cache=cache,
        deferred={"ipv4-addr--deferred": base.DEFER_BUDGET},
    )
    assert list(out.columns) == list(tables.LOOKUP_COLUMNS)
    assert {c: str(t) for c, t in out.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in tables.LOOKUP_COLUMNS.items()
    }
    assert list(out["stix_id"]) == list(observables["stix_id"])
    assert list(zip(out["status"], out["reason"].fillna(""), strict=True)) == [
        (base.OK, ""),
        (base.SKIPPED, base.SKIP_REJECTED),
        (base.SKIPPED, base.SKIP_OUT_OF_SCOPE),
        (base.SKIPPED, base.SKIP_TLP),
        (base.SKIPPED, base.SKIP_TLP),
        (base.SKIPPED, base.SKIP_TLP),  # no TLP at all: fail closed
        *[(base.SKIPPED, base.SKIP_SPECIAL_USE)] * 5,
        (base.OK, ""),
        (base.DEFERRED, base.DEFER_BUDGET),
        (base.OK, ""),
    ]
    sent = sorted(r.observable for r in sb.requests)
    assert sent == ["45.83.65.1", "45.83.65.4"]  # the duplicate cost no second call
    assert stats.calls == 2 and stats.rows == len(observables)
    assert stats.skipped_by_reason[base.SKIP_SPECIAL_USE] == 5
    assert out.loc[0, "fields"] == out.loc[13, "fields"]


def test_special_use_names_never_reach_the_provider(sb, env, cache):
    observables = frame(
        observable("foo.local", entity_type="Domain-Name"),
        observable("x.test", entity_type="Domain-Name"),
        observable("printer.localhost", entity_type="Hostname"),
        observable("http://192.168.1.10/admin", entity_type="Url"),
    )
    out, _ = lookup_frame(base.VIRUSTOTAL, observables, settings(env, base.VIRUSTOTAL),
                          cache=cache)
    assert set(out["reason"]) == {base.SKIP_SPECIAL_USE}
    assert sb.request_count() == 0


def test_tlp_ceiling_follows_settings(sb, env, cache):
    observables = frame(observable("45.83.65.20", tlp="TLP:AMBER"))
    strict = settings(env, base.ABUSEIPDB, max_tlp="TLP:GREEN")
    out, _ = lookup_frame(base.ABUSEIPDB, observables, strict, cache=cache)
    assert out.loc[0, "reason"] == base.SKIP_TLP and sb.request_count() == 0
    lenient = settings(env, base.ABUSEIPDB, max_tlp="TLP:AMBER+STRICT")
    out, _ = lookup_frame(base.ABUSEIPDB, frame(observable("45.83.65.21",
                          tlp="TLP:AMBER+STRICT")), lenient, cache=cache)
    assert out.loc[0, "status"] == base.OK


def test_missing_key_skips_but_keyless_providers_still_run(sb, env, cache):
    observables = frame(observable("45.83.65.30"))
    out, _ = lookup_frame(base.VIRUSTOTAL, observables,
                          settings(env, base.VIRUSTOTAL, api_key=None), cache=cache)
    assert (out.loc[0, "status"], out.loc[0, "reason"]) == (base.SKIPPED, base.SKIP_NO_KEY)
    sb.set_profile("45.83.65.30", "malicious")
    out, _ = lookup_frame(base.INTERNETDB, observables, settings(env, base.INTERNETDB),
                          cache=cache)
    assert out.loc[0, "status"] == base.OK
    assert sb.request_count() == 1


def test_an_answer_already_cached_serves_after_the_key_is_removed(sb, env, cache):
    observables = frame(observable("45.83.65.31"), observable("45.83.65.32"))
    sb.set_profile("45.83.65.31", "malicious")
    keyed = settings(env, base.VIRUSTOTAL)
    first, _ = lookup_frame(base.VIRUSTOTAL, observables.iloc[:1], keyed, cache=cache)
    assert first.loc[0, "status"] == base.OK and sb.request_count() == 1
    keyless = settings(env, base.VIRUSTOTAL, api_key=None)
    again, stats = lookup_frame(base.VIRUSTOTAL, observables, keyless, cache=cache)
    # the day re-run without the key keeps the answer it paid for, sends nothing new
    assert list(again["status"]) == [base.OK, base.SKIPPED]
    assert again.loc[0, "fields"] == first.loc[0, "fields"]
    assert again.loc[1, "reason"] == base.SKIP_NO_KEY
    assert sb.request_count() == 1 and stats.calls == 0
    # refreshing a value needs the key
    forced, _ = lookup_frame(base.VIRUSTOTAL, observables.iloc[:1], keyless, cache=cache,
                             force_refresh=True)
    assert forced.loc[0, "reason"] == base.SKIP_NO_KEY and sb.request_count() == 1


def test_rerun_is_served_from_cache_and_force_refresh_calls_again(sb, env, cache):
    values = ["45.83.65.40", "45.83.65.41", "45.83.65.42"]
    sb.set_profile(values[0], "malicious")
    sb.set_profile(values[1], "not_found")
    observables = frame(*[observable(v) for v in values])
    conf = settings(env, base.GREYNOISE)
    first, _ = lookup_frame(base.GREYNOISE, observables, conf, cache=cache)
    calls = sb.request_count()
    assert calls == 3
    second, stats = lookup_frame(base.GREYNOISE, observables, conf, cache=cache)
    assert sb.request_count() == calls and stats.calls == 0 and stats.cache_hits == 3
    assert second["from_cache"].all()
    assert list(second["fields"]) == list(first["fields"])
    assert list(second["status"]) == list(first["status"])
    assert list(second["raw_digest"]) == list(first["raw_digest"])
    assert cache.raw_body(second.loc[0, "raw_digest"]) is not None
    third, _ = lookup_frame(base.GREYNOISE, observables, conf, cache=cache, force_refresh=True)
    assert sb.request_count() == 2 * calls and not third["from_cache"].any()


def test_answers_from_one_endpoint_never_serve_lookups_at_another(sb, env, cache):
    """A data directory the demo used keeps the sandbox's answers; a run at another endpoint
    (here a second server standing in for the real provider) asks that endpoint, and its
    answers then replace the first's."""
    from cti_assets.sandbox import ProviderSandbox

    values = ["45.83.65.43", "45.83.65.44"]
    observables = frame(*[observable(v) for v in values])
    demo = settings(env, base.GREYNOISE)
    lookup_frame(base.GREYNOISE, observables, demo, cache=cache)
    assert sb.request_count() == 2
    with ProviderSandbox() as elsewhere:
        other = replace(demo, base_url=elsewhere.base_urls["GREYNOISE_BASE_URL"])
        assert other.origin != demo.origin
        out, stats = lookup_frame(base.GREYNOISE, observables, other, cache=cache)
        assert elsewhere.request_count() == 2 and stats.cache_hits == 0
        assert not out["from_cache"].any()
        again, stats = lookup_frame(base.GREYNOISE, observables, other, cache=cache)
        assert elsewhere.request_count() == 2 and stats.cache_hits == 2
    lookup_frame(base.GREYNOISE, observables, demo, cache=cache)
    assert sb.request_count() == 4  # the other endpoint's answers replaced the demo's


def test_errors_are_not_cached(sb, env, cache):
    observables = frame(observable("45.83.65.50"))
    conf = settings(env, base.ABUSEIPDB, max_retries=0)
    sb.inject(base.ABUSEIPDB, "http_500")
    out, stats = lookup_frame(base.ABUSEIPDB, observables, conf, cache=cache)
    assert out.loc[0, "reason"] == base.ERR_TRANSIENT and stats.errors_by_class == {
        base.ERR_TRANSIENT: 1}
    out, _ = lookup_frame(base.ABUSEIPDB, observables, conf, cache=cache)
    assert out.loc[0, "status"] == base.OK and sb.request_count() == 2


QUOTA_CASES = {
    base.VIRUSTOTAL: "IPv4-Addr",
    base.SHODAN: "IPv4-Addr",
    base.ABUSEIPDB: "IPv4-Addr",
    base.GREYNOISE: "IPv4-Addr",
    base.SECURITYTRAILS: "Domain-Name",
}


@pytest.mark.parametrize("provider", list(QUOTA_CASES))
def test_quota_exhausted_mid_run_stops_and_loses_nothing(sb, env, cache, tmp_path, provider):
    entity_type = QUOTA_CASES[provider]
    if entity_type == "Domain-Name":
        values = [f"quota-{i}-{provider}.com" for i in range(6)]
    else:
        values = [f"45.83.66.{i}" for i in range(1, 7)]
    for value in values:
        sb.set_profile(value, "suspicious")
    observables = frame(*[observable(v, entity_type=entity_type) for v in values])
    limiter = limiter_for(tmp_path, provider)
    sb.set_daily_quota(provider, 2)
    try:
        out, stats = lookup_frame(provider, observables, settings(env, provider, max_workers=1),
                                  cache=cache, limiter=limiter)
    finally:
        sb.set_daily_quota(provider, None)
    assert list(out["status"]) == [base.OK] * 2 + [base.ERROR] * 4
    assert list(out["reason"][2:]) == [base.ERR_QUOTA] * 4
    assert sb.request_count(provider) == 3  # the third answer said the quota is spent
    assert stats.errors_by_class[base.ERR_QUOTA] == 4
    assert limiter.exhausted_until() is not None
    assert limiter.remaining("day") == 0
    # the ledger is shared: the next run does not call at all, and nothing was cached
    out, stats = lookup_frame(provider, observables, settings(env, provider), cache=cache,
                              limiter=limiter)
    assert sb.request_count(provider) == 3 and stats.calls == 0
    assert list(out["status"][:2]) == [base.OK] * 2 and out["from_cache"][:2].all()
    assert list(out["reason"][2:]) == [base.ERR_QUOTA] * 4
    limiter.close()


def test_refused_key_stops_the_run(sb, env, cache):
    observables = frame(*[observable(f"45.83.67.{i}") for i in range(1, 5)])
    conf = settings(env, base.ABUSEIPDB, api_key="bad-key", max_workers=1)
    out, _ = lookup_frame(base.ABUSEIPDB, observables, conf, cache=cache)
    assert list(out["reason"]) == [base.ERR_AUTH] * 4
    assert sb.request_count() == 1
    assert "not called" in out.loc[3, "message"]


def test_local_daily_budget_stops_the_run(sb, env, cache, tmp_path):
    observables = frame(*[observable(f"45.83.68.{i}") for i in range(1, 5)])
    conf = settings(env, base.ABUSEIPDB, per_second=None, per_day=2, max_workers=1)
    limiter = SharedLimiter.for_settings(conf, path=tmp_path / "rl.sqlite")
    out, _ = lookup_frame(base.ABUSEIPDB, observables, conf, cache=cache, limiter=limiter)
    assert list(out["status"]) == [base.OK, base.OK, base.ERROR, base.ERROR]
    assert set(out["reason"][2:]) == {base.ERR_QUOTA}
    assert sb.request_count() == 2
    assert limiter.remaining("day") == 0
    limiter.close()


def test_input_index_is_kept_and_bad_frames_are_refused(sb, env, cache):
    observables = frame(observable("45.83.65.60"), observable("45.83.65.61"))
    observables.index = [10, 20]
    out, _ = lookup_frame(base.INTERNETDB, observables, settings(env, base.INTERNETDB),
                          cache=cache)
    assert list(out.index) == [10, 20]
    with pytest.raises(ValueError, match="tlp"):
        lookup_frame(base.INTERNETDB, observables.drop(columns=["tlp"]),
                     settings(env, base.INTERNETDB), cache=cache)
    empty, stats = lookup_frame(base.INTERNETDB, observables.iloc[:0],
                                settings(env, base.INTERNETDB), cache=cache)
    assert empty.empty and list(empty.columns) == list(tables.LOOKUP_COLUMNS)
    assert stats.rows == 0


def test_stats_metadata_is_plain_and_combines(sb, env, cache):
    observables = frame(observable("45.83.65.70"), observable("45.83.65.71", tlp="TLP:RED"))
    _, stats = lookup_frame(base.ABUSEIPDB, observables, settings(env, base.ABUSEIPDB),
                            cache=cache)
    meta = stats.as_metadata()
    assert all(isinstance(v, (int, float, str)) for v in meta.values())
    assert meta["calls"] == 1 and meta["skipped_tlp"] == 1 and meta["status_ok"] == 1
    assert meta["latency_p50_ms"] > 0 and meta["latency_p95_ms"] >= meta["latency_p50_ms"]
    assert isinstance(meta["quota_remaining"], int)
    both = stats.combine(stats)
    assert both.calls == 2 and both.by_status[base.SKIPPED] == 2
    assert LookupStats().as_metadata()["rows"] == 0


def test_calls_overlap_up_to_max_workers(sb, env, cache):
    values = [f"45.83.69.{i}" for i in range(1, 13)]
    observables = frame(*[observable(v) for v in values])
    sb.set_latency(150)
    try:
        out, stats = lookup_frame(base.INTERNETDB, observables,
                                  settings(env, base.INTERNETDB, max_workers=4), cache=cache)
    finally:
        sb.set_latency(0)
    assert len(out) == 12 and stats.calls == 12
    spans = [(r.started, r.ended) for r in sb.requests if r.ended is not None]
    peak = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert 2 <= peak <= 4  # parallel, and never more than the pool


def test_a_failed_store_of_an_answer_gives_its_lease_back(sb, env, cache, tmp_path):
    """The body store failed after the call: the step fails, and its retry (another holder)
    may fetch at once instead of waiting out the lease, which lasts minutes."""
    class BodiesGone(ResponseCache):
        def put(self, *args, **kwargs):
            raise OSError("NoSuchBucket: the bucket is gone")

    observables = frame(observable("45.83.65.45"))
    with BodiesGone(tmp_path / "cache.sqlite") as failing, pytest.raises(OSError):
        lookup_frame(base.GREYNOISE, observables, settings(env, base.GREYNOISE), cache=failing)
    with ResponseCache(tmp_path / "cache.sqlite") as retry:
        assert retry.claim(base.GREYNOISE, "IPv4-Addr", "45.83.65.45", lease_s=60)

"""URLhaus, ThreatFox, MalwareBazaar, OTX and CrowdSec CTI against the provider sandbox over real
sockets (found, not found, refused key, 429, malformed, hostile values, no key), and against
recorded-shape bodies for the answers the sandbox does not give on its own."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest

from cti_assets import tables
from cti_assets.providers import base
from cti_assets.providers.cache import ResponseCache
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.fields import PROVIDER_FIELDS
from cti_assets.providers.http import HttpAnswer
from cti_assets.providers.ratelimit import SharedLimiter
from cti_assets.providers.registry import make_client, provider_page_url
from cti_assets.providers.runner import lookup_frame

KEYS = {"ABUSECH_API_KEY": "abusech-test-key", "OTX_API_KEY": "otx-test-key",
        "CROWDSEC_API_KEY": "crowdsec-test-key"}
SHA256 = "9c1e4a6f0b5d3c2e8a7f6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e"
# provider -> what it looks up, each with an observable of that type
SAMPLES = {
    base.URLHAUS: [("Url", "http://45.83.64.20/bins/mozi.m"), ("Domain-Name", "dl-cdn.evil.com"),
                   ("IPv4-Addr", "45.83.64.21"), ("StixFile", SHA256)],
    base.THREATFOX: [("IPv4-Addr", "45.83.64.22"), ("Domain-Name", "c2.evil-panel.com"),
                     ("Url", "http://45.83.64.23/gate.php"), ("StixFile", SHA256)],
    base.MALWAREBAZAAR: [("StixFile", SHA256)],
    base.OTX: [("IPv4-Addr", "45.83.64.24"), ("IPv6-Addr", "2a0e:97c0:3e3::1"),
               ("Domain-Name", "evil-otx.com"), ("Hostname", "a.b.evil-otx.com"),
               ("Url", "https://evil-otx.com/a/b?c=d#e"), ("StixFile", SHA256)],
    base.CROWDSEC: [("IPv4-Addr", "45.83.64.25"), ("IPv6-Addr", "2a0e:97c0:3e3::2")],
}
CASES = [(p, t, v) for p, samples in SAMPLES.items() for t, v in samples]
PROVIDERS = list(SAMPLES)
# the endpoint path each provider's requests must keep, whatever the value
POST_PATHS = {base.THREATFOX: "/threatfox/api/v1/", base.MALWAREBAZAAR: "/malwarebazaar/api/v1/"}


def client_for(sb, provider, **overrides):
    settings = replace(settings_from_env(provider, {**sb.base_urls, **KEYS}),
                       backoff_base_s=0.01, backoff_max_s=0.02, **overrides)
    return make_client(provider, settings)


@pytest.mark.parametrize(("provider", "entity_type", "value"), CASES)
def test_found_fills_the_contract_fields(sb, provider, entity_type, value):
    sb.set_profile(value, "malicious")
    result = client_for(sb, provider).lookup(entity_type, value)
    assert result.status == base.OK, result.message
    assert set(result.fields) == set(PROVIDER_FIELDS[provider])
    assert result.http_status == 200 and result.raw_digest and len(result.raw_digest) == 64
    assert sb.request_count(provider) == 1
    record = sb.requests[-1]
    assert record.observable == value  # the sandbox read the value from where it travels
    assert "test-key" not in json.dumps(record.redacted())


def test_found_answers_name_the_family_and_its_sightings(sb):
    url, ip = "http://45.83.64.20/bins/mozi.m", "45.83.64.22"
    for value in (url, ip, SHA256):
        sb.set_profile(value, "malicious")
    urlhaus = client_for(sb, base.URLHAUS).lookup("Url", url).fields
    assert urlhaus["url_status"] in ("online", "offline") and urlhaus["signatures"]
    assert urlhaus["threat"] == "malware_download" and urlhaus["first_seen"].endswith("+00:00")
    threatfox = client_for(sb, base.THREATFOX).lookup("IPv4-Addr", ip).fields
    assert threatfox["threat_types"] == ["botnet_cc"] and threatfox["malware"]
    assert 0 < threatfox["max_confidence"] <= 100 and threatfox["malware_aliases"]
    bazaar = client_for(sb, base.MALWAREBAZAAR).lookup("StixFile", SHA256).fields
    assert bazaar["signature"] and bazaar["file_type"] and bazaar["first_seen"]
    otx = client_for(sb, base.OTX).lookup("IPv4-Addr", ip).fields
    assert otx["pulse_count"] >= 3 and otx["malware_families"] and otx["whitelisted"] is False
    crowdsec = client_for(sb, base.CROWDSEC).lookup("IPv4-Addr", ip).fields
    assert crowdsec["reputation"] == "malicious" and crowdsec["behaviors"]


@pytest.mark.parametrize(("provider", "entity_type", "value"), CASES)
def test_unknown_values_are_not_found(sb, provider, entity_type, value):
    sb.set_profile(value, "not_found")
    result = client_for(sb, provider).lookup(entity_type, value)
    assert result.status == base.NOT_FOUND, result.message
    assert result.fields == {} and result.raw_digest  # the "nothing here" body is kept


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_refused_key_is_an_auth_error_not_retried(sb, provider):
    entity_type, value = SAMPLES[provider][0]
    sb.set_key(provider, "the-right-key")
    try:
        result = client_for(sb, provider).lookup(entity_type, value)
    finally:
        sb.set_key(provider, None)
    assert (result.status, result.reason) == (base.ERROR, base.ERR_AUTH)
    assert result.http_status in (401, 403) and sb.request_count(provider) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_is_retried_then_answered(sb, provider):
    entity_type, value = SAMPLES[provider][0]
    sb.set_profile(value, "malicious")
    sb.inject(provider, "http_429")
    client = client_for(sb, provider, max_retry_after_s=1.0)
    client._sleep = lambda seconds: None  # Retry-After honoured by the policy, not waited here
    result = client.lookup(entity_type, value)
    assert result.status == base.OK and sb.request_count(provider) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_without_retries_left_is_rate_limited(sb, provider):
    entity_type, value = SAMPLES[provider][0]
    sb.inject(provider, "http_429")
    result = client_for(sb, provider, max_retries=0).lookup(entity_type, value)
    assert (result.status, result.reason) == (base.ERROR, base.ERR_RATE)


def test_crowdsec_spent_daily_quota_stops_the_run(sb):
    sb.set_daily_quota(base.CROWDSEC, 1)
    try:
        client = client_for(sb, base.CROWDSEC)
        first = client.lookup("IPv4-Addr", "45.83.64.31")
        second = client.lookup("IPv4-Addr", "45.83.64.32")
    finally:
        sb.set_daily_quota(base.CROWDSEC, None)
    assert first.status in (base.OK, base.NOT_FOUND)
    assert (second.status, second.reason) == (base.ERROR, base.ERR_QUOTA)
    assert "Limit Exceeded" in (second.message or "") and sb.request_count(base.CROWDSEC) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["malformed_json", "html_200"])
def test_a_body_that_is_not_the_api_answer_is_an_error(sb, provider, fault):
    entity_type, value = SAMPLES[provider][0]
    sb.inject(provider, fault)
    result = client_for(sb, provider, max_retries=0).lookup(entity_type, value)
    assert result.status == base.ERROR
    assert result.reason in (base.ERR_MALFORMED, base.ERR_TRANSIENT)
    assert result.raw_digest is None  # never cached


HOSTILE = ["../../admin", "x/../../_sandbox/reset", "a?key=1#frag", "%2e%2e%2fetc", "a\r\nX: y",
           "45.83.64.40/../../v2/smoke/1.1.1.1", "http://a/../../../../_sandbox/reset?x=1#y"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_value_never_changes_the_request_path(sb, provider, hostile):
    kinds = [t for t, _ in SAMPLES[provider]]
    for entity_type in kinds:
        sb.reset_log()
        result = client_for(sb, provider, max_retries=0).lookup(entity_type, hostile)
        requests = sb.requests
        assert len(requests) <= 1
        if not requests:  # refused before sending: a bad request, never a lookup
            assert (result.status, result.reason) == (base.ERROR, base.ERR_BAD_REQUEST)
            continue
        path = requests[0].path
        assert requests[0].provider == provider and not path.startswith("/_sandbox")
        if provider in POST_PATHS:
            assert path == POST_PATHS[provider]
        elif provider == base.URLHAUS:
            assert path in ("/urlhaus/v1/url/", "/urlhaus/v1/host/", "/urlhaus/v1/payload/")
        else:  # OTX: the value is exactly one encoded segment before /general
            assert path.startswith("/otx/api/v1/indicators/") and path.endswith("/general")
            assert path.count("/") == 7 and ".." not in path.split("/")
            assert requests[0].observable == hostile  # decoded back to the value, whole


def test_otx_encodes_a_url_as_one_path_segment(sb):
    url = "https://evil-otx.com/a/b?c=d#e"
    sb.set_profile(url, "malicious")
    assert client_for(sb, base.OTX).lookup("Url", url).status == base.OK
    assert sb.requests[-1].path == ("/otx/api/v1/indicators/url/"
                                    "https%3A%2F%2Fevil-otx.com%2Fa%2Fb%3Fc%3Dd%23e/general")


def test_urlhaus_skips_a_sha1_without_calling(sb):
    result = client_for(sb, base.URLHAUS).lookup("StixFile", "a" * 40)
    assert (result.status, result.reason) == (base.SKIPPED, base.SKIP_OUT_OF_SCOPE)
    assert sb.request_count(base.URLHAUS) == 0


def test_threatfox_counts_an_ip_with_any_port_but_not_a_longer_address():
    client = make_client(base.THREATFOX, settings_from_env(base.THREATFOX, KEYS))
    entry = {"ioc": "45.83.64.2:443", "threat_type": "botnet_cc", "malware_printable":
             "Cobalt Strike", "malware_alias": "CobaltStrike,cobeacon", "confidence_level": 75,
             "first_seen": "2026-11-20 10:00:00 UTC", "last_seen": None, "tags": ["c2"]}
    body = {"query_status": "ok", "data": [entry, {**entry, "ioc": "45.83.64.22:80",
                                                   "malware_printable": "QakBot"}]}
    fields = client.parse_ok("IPv4-Addr", "45.83.64.2", body)
    assert fields is not None and fields["malware"] == ["Cobalt Strike"]
    assert fields["malware_aliases"] == ["CobaltStrike", "cobeacon"]
    assert fields["first_seen"] == fields["last_seen"] == "2026-11-20T10:00:00+00:00"
    assert client.parse_ok("IPv4-Addr", "45.83.64.9", body) is None  # substring hits only


def _answer(body: object, status: int = 200) -> HttpAnswer:
    return HttpAnswer(status, {"content-type": "application/json"}, json.dumps(body).encode(),
                      1.0)


@pytest.mark.parametrize(("query_status", "status", "reason"), [
    ("no_results", base.NOT_FOUND, None),
    ("hash_not_found", base.NOT_FOUND, None),
    ("unknown_auth_key", base.ERROR, base.ERR_AUTH),
    ("illegal_hash", base.ERROR, base.ERR_BAD_REQUEST),
    ("invalid_url", base.ERROR, base.ERR_BAD_REQUEST),
    ("no_hash_provided", base.ERROR, base.ERR_BAD_REQUEST),
    ("something_new", base.ERROR, base.ERR_MALFORMED),
])
def test_abusech_query_status_on_a_200(query_status, status, reason):
    for provider, entity_type in ((base.URLHAUS, "Url"), (base.MALWAREBAZAAR, "StixFile"),
                                  (base.THREATFOX, "Domain-Name")):
        client = make_client(provider, settings_from_env(provider, KEYS))
        outcome = client.classify(entity_type, "x", _answer({"query_status": query_status}))
        assert (outcome.status, outcome.reason) == (status, reason), provider


def test_recorded_shape_answers_parse():
    otx = make_client(base.OTX, settings_from_env(base.OTX, KEYS))
    general = {"indicator": "8.8.8.8", "type": "IPv4", "reputation": 0,
               "validation": [{"source": "whitelist", "name": "Whitelisted indicator",
                               "message": "Whitelisted indicator 8.8.8.8"}],
               "pulse_info": {"count": 2, "pulses": [
                   {"name": "DNS seen in malware", "tags": ["dns"], "adversary": "",
                    "malware_families": [], "attack_ids": [], "modified": "2025-03-01T10:00:00"},
                   {"name": "x", "tags": ["dns"], "adversary": "APT28",
                    "malware_families": [{"id": "Zebrocy", "display_name": "Zebrocy"}],
                    "attack_ids": [{"id": "T1071", "display_name": "T1071 - App"}],
                    "modified": "2025-04-01T10:00:00"}]}}
    fields = otx.classify("IPv4-Addr", "8.8.8.8", _answer(general)).fields
    assert fields["whitelisted"] is True and fields["adversaries"] == ["APT28"]
    assert fields["malware_families"] == ["Zebrocy"] and fields["attack_ids"] == ["T1071"]
    assert fields["latest_pulse"] == "2025-04-01T10:00:00" and fields["tags"] == ["dns"]
    assert otx.classify("IPv4-Addr", "8.8.8.8", _answer({"detail": "Not found."}, 404)
                        ).status == base.NOT_FOUND
    crowdsec = make_client(base.CROWDSEC, settings_from_env(base.CROWDSEC, KEYS))
    throttled = HttpAnswer(429, {"content-type": "application/json", "retry-after": "1"},
                           b'{"message": "Too Many Requests"}', 1.0)
    assert crowdsec.classify("IPv4-Addr", "1.2.3.4", throttled).reason == base.ERR_RATE
    assert crowdsec.classify("IPv4-Addr", "1.2.3.4", _answer({"ip": "1.2.3.4"})).status == base.OK
    assert crowdsec.classify("IPv4-Addr", "1.2.3.4", _answer({"nothing": 1})).reason == (
        base.ERR_MALFORMED)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_without_a_key_every_row_is_skipped_and_nothing_is_sent(sb, provider, tmp_path):
    entity_type, value = SAMPLES[provider][0]
    row = {name: None for name in tables.OBSERVABLE_COLUMNS} | {
        "stix_id": "x--1", "internal_id": "1", "entity_type": entity_type, "value": value,
        "normalized_value": value, "tlp": "TLP:GREEN", "marking_ids": [], "labels": [],
        "created_at": pd.Timestamp("2026-11-30", tz="UTC"), "status": "ok"}
    observables = pd.DataFrame([row], columns=list(tables.OBSERVABLE_COLUMNS))
    settings = settings_from_env(provider, sb.base_urls)  # no key variable set
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        out, _ = lookup_frame(provider, observables, settings, cache=cache,
                              limiter=SharedLimiter(provider, {}, path=tmp_path / "rl.sqlite"))
    assert out.iloc[0][["status", "reason"]].tolist() == [base.SKIPPED, base.SKIP_NO_KEY]
    assert sb.request_count(provider) == 0


@pytest.mark.parametrize(("provider", "entity_type", "value"), CASES)
def test_every_scope_type_has_a_page_for_the_analyst(provider, entity_type, value):
    page = provider_page_url(provider, entity_type, value)
    assert page is not None and page.startswith("https://") and " " not in page

"""Each provider client against the provider sandbox over real sockets: answers and failures."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cti_assets.providers import base
from cti_assets.providers.config import settings_from_env
from cti_assets.providers.fields import PROVIDER_FIELDS
from cti_assets.providers.registry import make_client

KEYS = {
    "VIRUSTOTAL_API_KEY": "vt-test-key",
    "SHODAN_API_KEY": "shodan-test-key",
    "ABUSEIPDB_API_KEY": "abuse-test-key",
    "GREYNOISE_API_KEY": "gn-test-key",
    "SECURITYTRAILS_API_KEY": "st-test-key",
    "ABUSECH_API_KEY": "abusech-test-key",
    "OTX_API_KEY": "otx-test-key",
    "CROWDSEC_API_KEY": "crowdsec-test-key",
}
# provider -> (entity type, value) of an observable the sandbox knows when told to
SAMPLES = {
    base.VIRUSTOTAL: ("IPv4-Addr", "45.83.64.11"),
    base.SHODAN: ("IPv4-Addr", "45.83.64.12"),
    base.INTERNETDB: ("IPv4-Addr", "45.83.64.13"),
    base.ABUSEIPDB: ("IPv4-Addr", "45.83.64.14"),
    base.GREYNOISE: ("IPv4-Addr", "45.83.64.15"),
    base.SECURITYTRAILS: ("Domain-Name", "evil-sample.com"),
}
PROVIDERS = list(SAMPLES)
KEYED = [p for p in PROVIDERS if p != base.INTERNETDB]


def client_for(sb, provider, **overrides):
    env = {**sb.base_urls, **KEYS}
    settings = settings_from_env(provider, env)
    settings = replace(settings, backoff_base_s=0.01, backoff_max_s=0.05, **overrides)
    return make_client(provider, settings, internetdb_settings=settings_from_env(
        base.INTERNETDB, env))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_happy_path_fills_exactly_the_contract_fields(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.set_profile(value, "malicious")
    result = client_for(sb, provider).lookup(entity_type, value)
    assert result.status == base.OK, result.message
    assert set(result.fields) == set(PROVIDER_FIELDS[provider])
    assert any(v not in (None, [], "") for v in result.fields.values())
    assert result.http_status == 200
    assert result.raw_digest and len(result.raw_digest) == 64
    assert sb.request_count(provider) == 1


def test_virustotal_malicious_profile_has_detections(sb):
    sb.set_profile("45.83.64.11", "malicious")
    result = client_for(sb, base.VIRUSTOTAL).lookup("IPv4-Addr", "45.83.64.11")
    assert result.fields["malicious"] > 0


def test_virustotal_url_uses_unpadded_urlsafe_base64_id(sb):
    url = "http://bad.example-shop.com/login?next=/a&b=~x"
    sb.set_profile(url, "malicious")
    result = client_for(sb, base.VIRUSTOTAL).lookup("Url", url)
    assert result.status == base.OK
    path = sb.requests[-1].path
    ident = path.rsplit("/", 1)[1]
    assert "=" not in ident and "+" not in ident and "/" not in ident
    assert sb.requests[-1].observable == url


@pytest.mark.parametrize("provider", PROVIDERS)
def test_not_found(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.set_profile(value, "not_found")
    result = client_for(sb, provider).lookup(entity_type, value)
    if provider == base.ABUSEIPDB:
        # AbuseIPDB has no 404: an unreported address is an answer with zero reports
        assert result.status == base.OK
        assert result.fields["total_reports"] == 0
    else:
        assert result.status == base.NOT_FOUND, result.message
        assert result.fields == {}


@pytest.mark.parametrize("provider", KEYED)
def test_bad_key_is_auth_error_without_retry(sb, provider):
    entity_type, value = SAMPLES[provider]
    result = client_for(sb, provider, api_key="bad-key").lookup(entity_type, value)
    if provider == base.GREYNOISE:
        assert result.status == base.ERROR and result.reason == base.ERR_AUTH
    else:
        assert (result.status, result.reason, result.http_status) == (
            base.ERROR, base.ERR_AUTH, 401)
    assert sb.request_count(provider) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_injected_401(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.inject(provider, "http_401")
    result = client_for(sb, provider).lookup(entity_type, value)
    assert (result.status, result.reason) == (base.ERROR, base.ERR_AUTH)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_retried_after_retry_after(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.set_profile(value, "suspicious")
    sb.inject(provider, "http_429")
    result = client_for(sb, provider).lookup(entity_type, value)
    assert result.status == base.OK, result.message
    first, second = [r for r in sb.requests if r.provider == provider]
    assert first.status == 429
    assert second.started - first.ended >= 1.0  # the sandbox sent Retry-After: 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_5xx_retried_then_ok(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.set_profile(value, "benign")
    sb.inject(provider, "http_503")
    sb.inject(provider, "http_500")
    result = client_for(sb, provider, max_retries=3).lookup(entity_type, value)
    assert result.status == base.OK, result.message
    assert [r.status for r in sb.requests if r.provider == provider][:2] == [503, 500]
    assert sb.request_count(provider) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_5xx_exhausting_retries_is_transient(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.inject(provider, "http_502", count=3)
    result = client_for(sb, provider, max_retries=2).lookup(entity_type, value)
    assert (result.status, result.reason) == (base.ERROR, base.ERR_TRANSIENT)
    assert sb.request_count(provider) == 3
    assert "3 attempts" in result.message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_hang_is_cut_by_the_timeout(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.inject(provider, "hang")
    result = client_for(sb, provider, timeout_s=0.3, max_retries=0).lookup(entity_type, value)
    assert (result.status, result.reason) == (base.ERROR, base.ERR_TRANSIENT)
    assert "timeout" in result.message
    assert result.latency_ms < 3000


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_body(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.inject(provider, "malformed_json")
    result = client_for(sb, provider).lookup(entity_type, value)
    assert (result.status, result.reason) == (base.ERROR, base.ERR_MALFORMED)
    assert sb.request_count(provider) == 1  # not retried: the same body would come back


@pytest.mark.parametrize("provider", PROVIDERS)
def test_html_error_page_is_transient(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.inject(provider, "html_error")
    result = client_for(sb, provider, max_retries=0).lookup(entity_type, value)
    assert (result.status, result.reason) == (base.ERROR, base.ERR_TRANSIENT)
    assert "HTML" in result.message


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p != base.INTERNETDB])
def test_quota_answer_is_quota_exhausted_and_not_retried(sb, provider):
    entity_type, value = SAMPLES[provider]
    sb.inject(provider, "quota")
    result = client_for(sb, provider).lookup(entity_type, value)
    assert (result.status, result.reason) == (base.ERROR, base.ERR_QUOTA), result.message
    assert sb.request_count(provider) == 1


def test_internetdb_429_without_quota_text_is_rate_limited(sb):
    sb.inject(base.INTERNETDB, "quota", count=5)
    result = client_for(sb, base.INTERNETDB, max_retries=1).lookup(*SAMPLES[base.INTERNETDB])
    assert (result.status, result.reason) == (base.ERROR, base.ERR_RATE)
    assert sb.request_count(base.INTERNETDB) == 2


def test_abuseipdb_reports_remaining_daily_quota(sb):
    sb.set_daily_quota(base.ABUSEIPDB, 10)
    try:
        result = client_for(sb, base.ABUSEIPDB).lookup(*SAMPLES[base.ABUSEIPDB])
    finally:
        sb.set_daily_quota(base.ABUSEIPDB, None)
    assert result.quota_remaining == 9


def test_shodan_403_falls_back_to_internetdb(sb):
    value = "45.83.64.12"
    sb.set_profile(value, "malicious")
    sb.inject(base.SHODAN, "http_403")
    client = client_for(sb, base.SHODAN)
    result = client.lookup("IPv4-Addr", value)
    assert result.status == base.OK and result.provider == base.SHODAN
    assert "InternetDB" in result.message
    assert set(result.fields) == set(PROVIDER_FIELDS[base.SHODAN])
    assert result.fields["org"] is None and result.fields["ports"]
    # the host API refused the membership once: later lookups go straight to InternetDB
    client.lookup("IPv4-Addr", "45.83.64.99")
    assert sb.request_count(base.SHODAN) == 1
    assert sb.request_count(base.INTERNETDB) == 2


def test_greynoise_paid_uses_v3_ip_endpoint(sb):
    value = "45.83.64.15"
    sb.set_profile(value, "malicious")
    result = client_for(sb, base.GREYNOISE, paid=True).lookup("IPv4-Addr", value)
    assert result.status == base.OK, result.message
    assert "/v3/ip/" in sb.requests[-1].path
    assert result.fields["classification"] == "malicious"


def test_greynoise_community_without_key_sends_no_key_header(sb):
    value = "45.83.64.15"
    sb.set_profile(value, "benign")
    result = client_for(sb, base.GREYNOISE, api_key=None).lookup("IPv4-Addr", value)
    assert result.status == base.OK
    assert "key" not in sb.requests[-1].headers


def test_dot_segment_values_are_refused_without_a_request(sb):
    client = client_for(sb, base.VIRUSTOTAL)
    for value in ("..", ".", "  "):
        result = client.lookup("Domain-Name", value)
        assert (result.status, result.reason) == (base.ERROR, base.ERR_BAD_REQUEST)
    assert sb.request_count() == 0


def test_connection_refused_is_transient(sb):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = replace(settings_from_env(base.ABUSEIPDB, KEYS),
                       base_url=f"http://127.0.0.1:{port}/api/v2", max_retries=0)
    result = make_client(base.ABUSEIPDB, settings).lookup(*SAMPLES[base.ABUSEIPDB])
    assert (result.status, result.reason) == (base.ERROR, base.ERR_TRANSIENT)


def test_retry_after_longer_than_allowed_is_not_waited_for(sb):
    value = SAMPLES[base.VIRUSTOTAL][1]
    sb.set_rate_limit(base.VIRUSTOTAL, 1 / 60)
    try:
        client = client_for(sb, base.VIRUSTOTAL, max_retry_after_s=2.0)
        assert client.lookup("IPv4-Addr", value).status in (base.OK, base.NOT_FOUND)
        result = client.lookup("IPv4-Addr", "45.83.64.77")
    finally:
        sb.set_rate_limit(base.VIRUSTOTAL, None)
    assert (result.status, result.reason) == (base.ERROR, base.ERR_RATE)
    assert "longer than a run waits" in result.message
    assert sb.request_count(base.VIRUSTOTAL) == 2


def test_shodan_client_without_key_answers_from_internetdb(sb):
    value = "45.83.64.12"
    sb.set_profile(value, "suspicious")
    result = client_for(sb, base.SHODAN, api_key=None).lookup("IPv4-Addr", value)
    assert result.status == base.OK and "no Shodan API key" in result.message
    assert sb.request_count(base.SHODAN) == 0 and sb.request_count(base.INTERNETDB) == 1

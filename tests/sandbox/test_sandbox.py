"""The provider sandbox over real sockets: each provider's contract, limits, faults, the
request log and the admin endpoints."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
from collections import Counter
from urllib.parse import quote

import pytest
import requests

from cti_assets.sandbox import FAULTS, PROFILES, ProviderSandbox, profile_of
from cti_assets.sandbox.faults import DELIVERY_FAULTS

MAL_IP = "45.77.10.21"
BENIGN_IP = "45.77.10.22"
MISSING_IP = "45.77.10.23"
UNKNOWN_IP = "45.77.10.24"
MAL_DOMAIN = "login-verify.example-bad.com"
MISSING_DOMAIN = "nothing-here.example.org"
FILE_MD5 = "44d88612fea8a8f36de82e1278abb02f"
TIMEOUT = 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sb(clock: FakeClock):
    sandbox = ProviderSandbox(clock=clock)
    sandbox.set_profile(MAL_IP, "malicious")
    sandbox.set_profile(BENIGN_IP, "benign")
    sandbox.set_profile(MISSING_IP, "not_found")
    sandbox.set_profile(UNKNOWN_IP, "unknown")
    sandbox.set_profile(MAL_DOMAIN, "malicious")
    sandbox.set_profile(MISSING_DOMAIN, "not_found")
    sandbox.set_profile(FILE_MD5, "malicious")
    with sandbox:
        yield sandbox


def vt(sb: ProviderSandbox, collection: str, ident: str, key: str | None = "k"):
    headers = {"x-apikey": key} if key is not None else {}
    url = f"{sb.base_urls['VIRUSTOTAL_BASE_URL']}/{collection}/{quote(ident, safe='')}"
    return requests.get(url, headers=headers, timeout=TIMEOUT)


def shodan(sb: ProviderSandbox, ip: str, key: str = "k"):
    url = f"{sb.base_urls['SHODAN_BASE_URL']}/shodan/host/{quote(ip, safe='')}"
    return requests.get(url, params={"key": key}, timeout=TIMEOUT)


def internetdb(sb: ProviderSandbox, ip: str):
    return requests.get(f"{sb.base_urls['SHODAN_INTERNETDB_URL']}/{quote(ip, safe='')}",
                        timeout=TIMEOUT)  # fmt: skip


def abuse(sb: ProviderSandbox, ip: str, key: str = "k", **params):
    url = f"{sb.base_urls['ABUSEIPDB_BASE_URL']}/check"
    headers = {"Key": key, "Accept": "application/json"}
    return requests.get(url, params={"ipAddress": ip, "maxAgeInDays": 90, **params},
                        headers=headers, timeout=TIMEOUT)  # fmt: skip


def greynoise(sb: ProviderSandbox, ip: str, key: str | None = None, paid: bool = False):
    path = "v3/ip" if paid else "v3/community"
    headers = {"key": key} if key else {}
    return requests.get(f"{sb.base_urls['GREYNOISE_BASE_URL']}/{path}/{quote(ip, safe='')}",
                        headers=headers, timeout=TIMEOUT)  # fmt: skip


def securitytrails(sb: ProviderSandbox, domain: str, key: str = "k"):
    url = f"{sb.base_urls['SECURITYTRAILS_BASE_URL']}/domain/{quote(domain, safe='')}"
    return requests.get(url, headers={"APIKEY": key}, timeout=TIMEOUT)


# --- happy paths ----------------------------------------------------------------------


def test_virustotal_ip_domain_file_url_shapes(sb):
    ip = vt(sb, "ip_addresses", MAL_IP)
    assert ip.status_code == 200
    assert ip.headers["Content-Type"] == "application/json"
    attributes = ip.json()["data"]["attributes"]
    assert ip.json()["data"]["type"] == "ip_address"
    stats = attributes["last_analysis_stats"]
    assert set(stats) == {"harmless", "malicious", "suspicious", "undetected", "timeout"}
    assert 8 <= stats["malicious"] <= 40
    assert sum(stats.values()) == len(attributes["last_analysis_results"])
    assert attributes["reputation"] < 0 and isinstance(attributes["asn"], int)

    domain = vt(sb, "domains", MAL_DOMAIN).json()["data"]
    assert domain["id"] == MAL_DOMAIN and domain["type"] == "domain"
    assert domain["attributes"]["categories"]

    file_body = vt(sb, "files", FILE_MD5).json()["data"]
    assert file_body["id"] == file_body["attributes"]["sha256"]
    assert file_body["attributes"]["md5"] == FILE_MD5
    assert "type-unsupported" in file_body["attributes"]["last_analysis_stats"]
    label = file_body["attributes"]["popular_threat_classification"]["suggested_threat_label"]
    from cti_assets.sandbox import FAMILY_NAMES

    assert any(name.lower() in label for name in FAMILY_NAMES)

    url = "http://login-verify.example-bad.com/a?b=c"
    sb.set_profile(url, "malicious")
    url_id = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
    by_b64 = vt(sb, "urls", url_id)
    assert by_b64.status_code == 200
    url_sha = hashlib.sha256(url.encode()).hexdigest()
    assert by_b64.json()["data"]["id"] == url_sha
    assert by_b64.json()["data"]["attributes"]["url"] == url
    assert vt(sb, "urls", url_sha).json() == by_b64.json()
    assert sb.requests[-1].observable == url


def test_shodan_and_internetdb_shapes(sb):
    host = shodan(sb, MAL_IP)
    assert host.status_code == 200
    body = host.json()
    assert body["ip_str"] == MAL_IP and body["asn"].startswith("AS")
    assert body["vulns"] and all(v.startswith("CVE-") for v in body["vulns"])
    assert [banner["port"] for banner in body["data"]] == body["ports"]
    minified = requests.get(f"{sb.base_urls['SHODAN_BASE_URL']}/shodan/host/{MAL_IP}",
                            params={"key": "k", "minify": "true"}, timeout=TIMEOUT).json()
    assert "data" not in minified and minified["ports"] == body["ports"]
    assert "vulns" not in shodan(sb, BENIGN_IP).json()

    idb = internetdb(sb, MAL_IP).json()
    assert set(idb) == {"ip", "ports", "cpes", "hostnames", "tags", "vulns"}
    assert idb["ports"] == body["ports"] and idb["vulns"] == body["vulns"]


def test_abuseipdb_check_shape_and_rate_headers(sb):
    response = abuse(sb, MAL_IP, verbose="")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["abuseConfidenceScore"] >= 75 and data["totalReports"] > 0
    assert data["countryName"] and data["reports"]
    assert int(response.headers["X-RateLimit-Remaining"]) == int(
        response.headers["X-RateLimit-Limit"]
    ) - 1
    quiet = abuse(sb, MAL_IP).json()["data"]
    assert "reports" not in quiet and "countryName" not in quiet


def test_greynoise_community_and_v3_shapes(sb):
    community = greynoise(sb, MAL_IP)
    assert community.status_code == 200
    assert community.json()["classification"] == "malicious"
    assert community.json()["noise"] is True and community.json()["message"] == "Success"
    paid = greynoise(sb, MAL_IP, key="k", paid=True).json()
    assert paid["internet_scanner_intelligence"]["classification"] == "malicious"
    assert paid["internet_scanner_intelligence"]["tags"][0]["intention"] == "malicious"
    assert greynoise(sb, MAL_IP, paid=True).status_code == 401  # the paid API needs a key


def test_securitytrails_domain_shape(sb):
    body = securitytrails(sb, "www." + MAL_DOMAIN).json()
    assert body["hostname"] == "www." + MAL_DOMAIN and body["apex_domain"] == "example-bad.com"
    assert body["current_dns"]["a"]["values"][0]["ip"]
    assert body["current_dns"]["aaaa"] == {}
    sb.set_key("securitytrails", "good")
    ping = requests.get(f"{sb.base_urls['SECURITYTRAILS_BASE_URL']}/ping",
                        params={"apikey": "good"}, timeout=TIMEOUT)  # fmt: skip
    assert ping.json() == {"success": True}


# --- not found, bad input, auth ---------------------------------------------------------


def test_not_found_answers_follow_each_provider(sb):
    missing = vt(sb, "ip_addresses", MISSING_IP)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NotFoundError"
    assert shodan(sb, MISSING_IP).json() == {"error": "No information available for that IP."}
    assert internetdb(sb, MISSING_IP).status_code == 404
    assert internetdb(sb, MISSING_IP).json() == {"detail": "No information available"}
    never_reported = abuse(sb, MISSING_IP)
    assert never_reported.status_code == 200  # AbuseIPDB never 404s
    data = never_reported.json()["data"]
    assert (data["abuseConfidenceScore"], data["totalReports"], data["lastReportedAt"]) == (
        0, 0, None)  # fmt: skip
    not_observed = greynoise(sb, MISSING_IP)
    assert not_observed.status_code == 404
    assert not_observed.json()["noise"] is False and "not observed" in not_observed.json()[
        "message"]  # fmt: skip
    empty = securitytrails(sb, MISSING_DOMAIN).json()
    assert all(record == {} for record in empty["current_dns"].values())


def test_bad_input_answers(sb):
    assert vt(sb, "ip_addresses", "999.1.1.1").json()["error"]["code"] == "InvalidArgumentError"
    assert vt(sb, "files", "nothex").status_code == 400
    invalid = abuse(sb, "not-an-ip")
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["source"] == {"parameter": "ipAddress"}
    assert abuse(sb, MAL_IP, maxAgeInDays=999).status_code == 422
    private = greynoise(sb, "10.1.2.3")
    assert private.json() == {"message": "Request is not a valid routable IPv4 address"}
    assert shodan(sb, "nope").json() == {"error": "Invalid IP"}


def test_bad_key_gets_401_in_each_provider_style(sb):
    assert vt(sb, "ip_addresses", MAL_IP, key="bad-1").json()["error"]["code"] == (
        "WrongCredentialsError")  # fmt: skip
    assert vt(sb, "ip_addresses", MAL_IP, key=None).json()["error"]["code"] == (
        "AuthenticationRequiredError")  # fmt: skip
    assert shodan(sb, MAL_IP, key="invalid").status_code == 401
    rejected = abuse(sb, MAL_IP, key="bad-key")
    assert rejected.status_code == 401
    assert rejected.json()["errors"][0]["detail"].startswith("Authentication failed.")
    assert greynoise(sb, MAL_IP, key="invalid").status_code == 401
    assert securitytrails(sb, MAL_DOMAIN, key="invalid").status_code == 401
    assert internetdb(sb, MAL_IP).status_code == 200  # no auth at all


def test_set_key_makes_only_that_key_valid(sb):
    sb.set_key("virustotal", "the-key")
    assert sb.valid_keys == {"virustotal": "the-key"}
    assert vt(sb, "ip_addresses", MAL_IP, key="the-key").status_code == 200
    assert vt(sb, "ip_addresses", MAL_IP, key="another-key").status_code == 401
    assert shodan(sb, MAL_IP, key="another-key").status_code == 200


# --- rate limits and quotas -------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_until_window_passes(sb, clock):
    sb.set_rate_limit("abuseipdb", 2)
    statuses = [abuse(sb, MAL_IP).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    throttled = abuse(sb, MAL_IP)
    assert throttled.headers["Retry-After"] == "1"
    assert "X-RateLimit-Remaining" in throttled.headers
    clock.now += 1.0
    assert abuse(sb, MAL_IP).status_code == 200


def test_requests_are_counted_when_they_arrived_not_when_answered(sb, clock):
    from cti_assets.sandbox.faults import SlidingWindowLimiter

    limiter = SlidingWindowLimiter(clock)
    limiter.set_rate("abuseipdb", 2)
    clock.now = 10.0  # two requests that arrived 0.95 s apart, both answered only now
    assert limiter.admit("abuseipdb", at=9.0) is None
    assert limiter.admit("abuseipdb", at=9.95) is None
    clock.now = 10.1  # the window before 10.05 holds one arrival (9.95): room for this one
    assert limiter.admit("abuseipdb", at=10.05) is None
    assert limiter.admit("abuseipdb", at=10.06) == 1  # 9.95 and 10.05 in its window: refused
    # the handler stamps each request's arrival before the latency the sandbox adds
    abuse(sb, MAL_IP)
    assert sb.requests[-1].arrived == clock.now


def test_a_request_judged_late_counts_only_in_the_windows_it_arrived_in(clock):
    from cti_assets.sandbox.faults import SlidingWindowLimiter

    limiter = SlidingWindowLimiter(clock)
    limiter.set_rate("abuseipdb", 2)
    clock.now = 11.0  # two later arrivals reached the limiter before the one of 10.0
    assert limiter.admit("abuseipdb", at=10.95) is None
    assert limiter.admit("abuseipdb", at=11.0) is None
    # An edge judging in arrival order admits all three: no 1 s window holds more than 2.
    assert limiter.admit("abuseipdb", at=10.0) is None
    # 10.5 would put three arrivals (10.5, 10.95, 11.0) into the window ending at 11.0.
    assert limiter.admit("abuseipdb", at=10.5) == 1
    # 10.02 fits no window: (9.02, 10.02] would hold 10.0 and 10.02, then 10.95 is the third
    # arrival of (9.95, 10.95].
    assert limiter.admit("abuseipdb", at=10.02) == 1


def _read_answer(reader) -> bytes:
    """One HTTP/1.1 answer with a Content-Length, from a binary file over the socket."""
    status = reader.readline()
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    reader.read(length)
    return status


def test_arrival_is_when_the_request_reached_the_host_not_when_a_thread_took_it_up():
    import socket
    import time
    from urllib.parse import urlsplit

    sandbox = ProviderSandbox()  # the real clock: arrivals are the kernel's receive times
    sandbox.set_latency(300, "shodan_internetdb")
    with sandbox:
        url = urlsplit(sandbox.base_urls["SHODAN_INTERNETDB_URL"])
        request = f"GET {url.path}/{MAL_IP} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
        with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT) as conn:
            # Two requests in one write: the connection's thread takes the second up only once
            # it has answered the first, 300 ms later.
            before = time.monotonic()
            conn.sendall(request + request)
            sent = time.monotonic()
            with conn.makefile("rb") as reader:
                statuses = [_read_answer(reader), _read_answer(reader)]
    assert all(status.startswith(b"HTTP/1.1 200") for status in statuses), statuses
    first, second = [r for r in sandbox.requests if r.provider == "shodan_internetdb"]
    assert second.started - sent >= 0.3  # taken up after the first answer's latency
    # Yet counted when it arrived. (The arrival is converted from the kernel's real-time stamp
    # by reading the sandbox's clock, then the real one: a thread switch between the two can
    # only move it earlier, hence the lower bound's slack.)
    assert before - 0.05 <= second.arrived <= sent
    # one write, one arrival: the same kernel stamp, read against the clocks a moment apart
    assert abs(second.arrived - first.arrived) < 0.005


def test_a_slow_drip_is_judged_when_it_arrives_like_any_request(sb):
    import socket
    import time
    from urllib.parse import urlsplit

    sb.set_latency(1000, "shodan_internetdb")
    sb.set_rate_limit("shodan_internetdb", 1)  # the fake clock stands still: one is admitted
    sb.inject("shodan_internetdb", "slow_drip")
    url = urlsplit(sb.base_urls["SHODAN_INTERNETDB_URL"])
    request = f"GET {url.path}/{MAL_IP} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()
    with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT) as dripping:
        dripping.sendall(request)
        deadline = time.monotonic() + TIMEOUT
        while sb.stats()["pending_faults"]:  # its handler has taken the fault up
            assert time.monotonic() < deadline, "the slow drip never reached a handler"
            time.sleep(0.005)
        later = internetdb(sb, MAL_IP)  # arrives while the first waits its 1 s of latency
        with dripping.makefile("rb") as reader:
            status = reader.readline()
    # the first to arrive is admitted and dripped; the second finds the window full
    assert status.startswith(b"HTTP/1.1 200"), status
    assert later.status_code == 429
    assert [r.status for r in sb.requests] == [200, 429]


def test_slow_rate_widens_window(sb, clock):
    sb.set_rate_limit("virustotal", 4 / 60)  # the public API's 4 per minute
    assert vt(sb, "ip_addresses", MAL_IP).status_code == 200
    throttled = vt(sb, "ip_addresses", MAL_IP)
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "TooManyRequestsError"
    assert int(throttled.headers["Retry-After"]) == 15
    clock.now += 15
    assert vt(sb, "ip_addresses", MAL_IP).status_code == 200


def test_auth_is_checked_before_rate_limit(sb):
    sb.set_rate_limit("shodan", 1)
    assert shodan(sb, MAL_IP).status_code == 200
    assert shodan(sb, MAL_IP, key="invalid").status_code == 401
    assert shodan(sb, MAL_IP).json()["error"].startswith("Request rate limit reached")


@pytest.mark.parametrize(
    ("provider", "call", "check"),
    [
        ("virustotal", lambda sb: vt(sb, "ip_addresses", MAL_IP),
         lambda r: r.json()["error"]["code"] == "QuotaExceededError"),
        ("abuseipdb", lambda sb: abuse(sb, MAL_IP),
         lambda r: r.json()["errors"][0]["detail"].startswith("Daily rate limit of 2 requests")
         and r.headers["X-RateLimit-Remaining"] == "0" and int(r.headers["Retry-After"]) > 0),
        ("greynoise", lambda sb: greynoise(sb, MAL_IP),
         lambda r: {"plan", "rate-limit", "plan_url", "message"} <= set(r.json())),
        ("securitytrails", lambda sb: securitytrails(sb, MAL_DOMAIN),
         lambda r: r.json() == {"message": "You've exceeded the usage limits for your account."}),
        ("shodan", lambda sb: shodan(sb, MAL_IP), lambda r: "error" in r.json()),
    ],
)  # fmt: skip
def test_daily_quota_exhaustion(sb, provider, call, check):
    sb.set_daily_quota(provider, 2)
    assert [call(sb).status_code for _ in range(2)] == [200, 200]
    exhausted = call(sb)
    assert exhausted.status_code == 429
    assert check(exhausted)


def test_quota_from_constructor_and_reset(clock):
    with ProviderSandbox(daily_quota={"virustotal": 1}, clock=clock) as sandbox:
        sandbox.set_profile(MAL_IP, "malicious")
        assert vt(sandbox, "ip_addresses", MAL_IP).status_code == 200
        assert vt(sandbox, "ip_addresses", MAL_IP).status_code == 429
        requests.post(f"{sandbox.url}/_sandbox/reset", timeout=TIMEOUT).raise_for_status()
        assert vt(sandbox, "ip_addresses", MAL_IP).status_code == 200


# --- faults -----------------------------------------------------------------------------

EXPECTED_FAULT_STATUS = {"http_500": 500, "http_502": 502, "http_503": 503,
                         "malformed_json": 200, "html_error": 502, "http_401": 401,
                         "http_403": 403, "http_429": 429, "quota": 429,
                         "html_200": 200}  # fmt: skip


@pytest.mark.parametrize("fault", sorted(EXPECTED_FAULT_STATUS))
def test_each_fault_answers_once_then_normal(sb, fault):
    sb.inject("greynoise", fault)
    faulty = greynoise(sb, MAL_IP)
    assert faulty.status_code == EXPECTED_FAULT_STATUS[fault]
    if fault == "malformed_json":
        with pytest.raises(ValueError):
            faulty.json()
    elif fault in ("html_error", "html_200"):
        assert faulty.headers["Content-Type"].startswith("text/html")
    else:
        assert "message" in faulty.json()
    if fault == "http_429":
        assert faulty.headers["Retry-After"] == "1"
    assert greynoise(sb, MAL_IP).status_code == 200


def test_fault_count_and_scope(sb):
    sb.inject("virustotal", "http_503", count=2)
    statuses = [vt(sb, "ip_addresses", MAL_IP).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert sb.requests[0].observable == MAL_IP
    assert vt(sb, "ip_addresses", MAL_IP).status_code == 200
    with pytest.raises(ValueError):
        sb.inject("virustotal", "explode")
    with pytest.raises(ValueError):
        sb.inject("nowhere", "http_500")


def test_hang_outlasts_client_timeout_and_stop_releases_it(sb):
    sb.inject("shodan_internetdb", "hang")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sb.base_urls['SHODAN_INTERNETDB_URL']}/{MAL_IP}", timeout=0.2)
    record = sb.requests[-1]
    assert record.status is None and record.observable == MAL_IP
    sb.release_hangs()
    assert internetdb(sb, MAL_IP).status_code == 200


def test_stop_closes_kept_alive_connections(clock):
    sandbox = ProviderSandbox(clock=clock).start()
    session = requests.Session()
    assert session.get(f"{sandbox.base_urls['SHODAN_INTERNETDB_URL']}/{MAL_IP}",
                       timeout=TIMEOUT).status_code in (200, 404)  # fmt: skip
    sandbox.inject("shodan_internetdb", "hang")
    sandbox.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"{sandbox.base_urls['SHODAN_INTERNETDB_URL']}/{MAL_IP}", timeout=TIMEOUT)


# --- hostile paths and the request log --------------------------------------------------


def test_hostile_value_stays_one_path_segment(sb):
    hostile = "evil.com/../x?y=1#frag%2F\r\nHost: other"
    response = vt(sb, "domains", hostile)
    assert response.status_code == 400
    record = sb.requests[-1]
    assert record.path == f"/virustotal/api/v3/domains/{quote(hostile, safe='')}"
    assert record.path.count("/") == 5 and record.query == {}
    assert record.observable == hostile


def test_extra_path_segment_is_a_provider_style_404(sb):
    url = f"{sb.base_urls['VIRUSTOTAL_BASE_URL']}/ip_addresses/{MAL_IP}/extra"
    response = requests.get(url, headers={"x-apikey": "k"}, timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFoundError"
    gone = requests.get(f"{sb.base_urls['SHODAN_BASE_URL']}/shodan/host/{MAL_IP}/x",
                        params={"key": "k"}, timeout=TIMEOUT)  # fmt: skip
    assert gone.status_code == 404 and "error" in gone.json()
    assert [r.status for r in sb.requests] == [404, 404]


def test_request_log_records_what_arrived(sb):
    abuse(sb, "2001:db8::1")
    vt(sb, "ip_addresses", MAL_IP)
    first, second = sb.requests
    assert first.provider == "abuseipdb" and first.path == "/abuseipdb/api/v2/check"
    assert first.query["ipAddress"] == ["2001:db8::1"] and first.observable == "2001:db8::1"
    assert first.headers["key"] == "k" and first.method == "GET" and first.status == 200
    assert first.started <= first.ended <= second.started
    assert second.headers["x-apikey"] == "k"
    assert sb.request_count() == 2 and sb.request_count("virustotal") == 1
    sb.reset_log()
    assert sb.request_count() == 0


def test_admin_endpoints(sb):
    vt(sb, "ip_addresses", MAL_IP)
    shodan(sb, MISSING_IP)
    log = requests.get(f"{sb.url}/_sandbox/requests", timeout=TIMEOUT).json()
    assert [r["provider"] for r in log] == ["virustotal", "shodan"]
    assert log[0]["headers"]["x-apikey"] == "***" and log[1]["query"]["key"] == ["***"]
    since = requests.get(f"{sb.url}/_sandbox/requests", params={"since": 1}, timeout=TIMEOUT)
    assert [r["provider"] for r in since.json()] == ["shodan"]
    stats = requests.get(f"{sb.url}/_sandbox/stats", timeout=TIMEOUT).json()
    assert stats["providers"]["shodan"]["by_status"] == {"404": 1}
    config = {"profiles": {UNKNOWN_IP: "not_found"}, "rate_limits": {"securitytrails": 1},
              "faults": [{"provider": "abuseipdb", "fault": "http_502", "count": 1}],
              "daily_quota": {"virustotal": 5}, "latency_ms": 0}  # fmt: skip
    posted = requests.post(f"{sb.url}/_sandbox/config", json=config, timeout=TIMEOUT)
    assert posted.json() == {"ok": True}
    assert internetdb(sb, UNKNOWN_IP).status_code == 404
    assert abuse(sb, MAL_IP).status_code == 502
    assert [securitytrails(sb, MAL_DOMAIN).status_code for _ in range(2)] == [200, 429]
    bad = requests.post(f"{sb.url}/_sandbox/config", data=b"[1]", timeout=TIMEOUT)
    assert bad.status_code == 400
    requests.post(f"{sb.url}/_sandbox/reset", timeout=TIMEOUT)
    assert requests.get(f"{sb.url}/_sandbox/stats", timeout=TIMEOUT).json()["total"] == 0


# --- determinism and distribution -------------------------------------------------------


def test_same_value_same_answer_and_values_differ(clock):
    values = [f"81.{i}.7.9" for i in range(1, 30)]
    with ProviderSandbox(clock=clock) as first, ProviderSandbox(clock=clock) as second:
        answers = [vt(first, "ip_addresses", v).text for v in values]
        assert answers == [vt(first, "ip_addresses", v).text for v in values]
        assert answers == [vt(second, "ip_addresses", v).text for v in values]
    assert len(set(answers)) == len(values)


def test_profile_is_coherent_across_providers(sb):
    for value in (f"82.{i}.1.1" for i in range(40)):
        profile = sb.profile(value)
        gn = greynoise(sb, value)
        if profile == "not_found":
            assert gn.status_code == 404 and vt(sb, "ip_addresses", value).status_code == 404
        else:
            expected = {"malicious": "malicious", "suspicious": "suspicious",
                        "benign": "benign"}.get(profile, "unknown")  # fmt: skip
            assert gn.json()["classification"] == expected


def test_profile_distribution_roughly_as_designed():
    counts = Counter(profile_of(f"value-{i}.example") for i in range(2000))
    expected = {"malicious": 0.20, "suspicious": 0.15, "benign": 0.25, "unknown": 0.25,
                "not_found": 0.15}  # fmt: skip
    assert set(counts) == set(PROFILES)
    for profile, share in expected.items():
        assert abs(counts[profile] / 2000 - share) < 0.04, (profile, counts)
    assert Counter(profile_of(f"value-{i}.example", seed=1) for i in range(2000)) != counts


# --- CLI entry --------------------------------------------------------------------------


def test_serve_forever_prints_exports_and_exits_cleanly_on_sigterm():
    code = "from cti_assets.sandbox import serve_forever; serve_forever(port=0)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        first = process.stdout.readline().strip()
        assert first.startswith("export VIRUSTOTAL_BASE_URL=http://127.0.0.1:")
        base = first.split("=", 1)[1]
        response = requests.get(f"{base}/ip_addresses/{MAL_IP}", headers={"x-apikey": "k"},
                                timeout=TIMEOUT)  # fmt: skip
        assert response.status_code in (200, 404)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "Traceback" not in stderr


def test_fault_names_are_the_documented_ones():
    assert set(FAULTS) == set(EXPECTED_FAULT_STATUS) | {"hang", *DELIVERY_FAULTS}


def test_abuseipdb_errors_are_html_without_accept_json(sb):
    url = f"{sb.base_urls['ABUSEIPDB_BASE_URL']}/check"
    plain = requests.get(url, params={"ipAddress": "nope"}, headers={"Key": "k"}, timeout=TIMEOUT)
    assert plain.status_code == 422
    assert plain.headers["Content-Type"].startswith("text/html")
    ok = requests.get(url, params={"ipAddress": MAL_IP}, headers={"Key": "k"}, timeout=TIMEOUT)
    assert ok.json()["data"]["ipAddress"] == MAL_IP  # successes stay JSON


def test_latency_per_provider(sb):
    sb.set_latency(5000, "virustotal")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sb.base_urls['VIRUSTOTAL_BASE_URL']}/ip_addresses/{MAL_IP}",
                     headers={"x-apikey": "k"}, timeout=0.2)  # fmt: skip
    assert internetdb(sb, MAL_IP).status_code == 200  # other providers are not delayed


def test_serve_forever_reports_a_busy_port(sb):
    from cti_assets.sandbox import serve_forever

    with pytest.raises(SystemExit, match="cannot listen on 127.0.0.1"):
        serve_forever(port=sb.port)


def test_serve_forever_rejects_unknown_provider_in_rate_limits():
    from cti_assets.sandbox import serve_forever

    with pytest.raises(SystemExit, match="unknown provider 'vtotal'"):
        serve_forever(port=0, rate_limits={"vtotal": 1})


HOSTILE = "a/b?c=d#e..%2F%\r\nX: y"


@pytest.mark.parametrize(
    ("provider", "url_of", "prefix"),
    [
        ("virustotal", lambda sb, seg: f"{sb.base_urls['VIRUSTOTAL_BASE_URL']}/files/{seg}",
         "/virustotal/api/v3/files/"),
        ("shodan", lambda sb, seg: f"{sb.base_urls['SHODAN_BASE_URL']}/shodan/host/{seg}",
         "/shodan/shodan/host/"),
        ("shodan_internetdb", lambda sb, seg: f"{sb.base_urls['SHODAN_INTERNETDB_URL']}/{seg}",
         "/internetdb/"),
        ("greynoise", lambda sb, seg: f"{sb.base_urls['GREYNOISE_BASE_URL']}/v3/community/{seg}",
         "/greynoise/v3/community/"),
        ("securitytrails",
         lambda sb, seg: f"{sb.base_urls['SECURITYTRAILS_BASE_URL']}/domain/{seg}",
         "/securitytrails/v1/domain/"),
    ],
)  # fmt: skip
def test_hostile_values_are_bad_input_never_a_new_path(sb, provider, url_of, prefix):
    segment = quote(HOSTILE, safe="")
    response = requests.get(url_of(sb, segment), params={"key": "k"},
                            headers={"x-apikey": "k", "APIKEY": "k"}, timeout=TIMEOUT)
    assert response.status_code == 400
    record = sb.requests[-1]
    assert (record.provider, record.path, record.observable) == (provider, prefix + segment,
                                                                 HOSTILE)  # fmt: skip
    assert set(record.query) == {"key"}


def test_ipv6_lookups(sb):
    ipv6 = "2a03:2880:f10c:83:face:b00c:0:25de"
    sb.set_profile(ipv6, "malicious")
    assert vt(sb, "ip_addresses", ipv6).json()["data"]["id"] == ipv6
    assert shodan(sb, ipv6).json()["ip_str"] == ipv6
    assert abuse(sb, ipv6).json()["data"]["ipVersion"] == 6
    assert greynoise(sb, ipv6).status_code == 400  # community is IPv4 only


def test_daily_quota_resets_at_utc_midnight():
    wall = FakeClock()
    wall.now = 1_767_268_800.0  # 2026-01-01T12:00:00Z
    with ProviderSandbox(daily_quota={"abuseipdb": 1}, wall_clock=wall) as sandbox:
        first = abuse(sandbox, MAL_IP)
        assert first.headers["X-RateLimit-Reset"] == "1767312000"  # 2026-01-02T00:00:00Z
        assert first.headers["X-RateLimit-Remaining"] == "0"
        refused = abuse(sandbox, MAL_IP)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == str(12 * 3600)
        wall.now += 12 * 3600
        assert abuse(sandbox, MAL_IP).status_code == 200


def test_abuseipdb_never_reports_more_distinct_users_than_reports():
    from cti_assets.sandbox import data

    reported = 0
    for profile in (data.MALICIOUS, data.SUSPICIOUS, None):
        for index in range(300):
            facts = data.facts_for(f"45.83.{index // 250}.{index % 250}", forced_profile=profile)
            assert facts.abuse_users <= facts.abuse_reports
            reported += facts.abuse_reports > 0
    assert reported > 300  # the check saw reported addresses, not only clean ones

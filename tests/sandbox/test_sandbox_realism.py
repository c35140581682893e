"""The sandbox's dates follow the day it runs (issue 14 fidelity) and VirusTotal's domain
registration and popularity come in their documented shapes; the community sources answer with
realistic families over real sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import requests

from cti_assets.sandbox import ProviderSandbox

NOW = datetime(2026, 11, 30, 17, 20, 5, tzinfo=UTC).timestamp()
DAY = 86400
IP = "45.77.10.21"
TIMEOUT = 5


def _abuse(sb: ProviderSandbox, ip: str) -> dict:
    response = requests.get(f"{sb.url}/abuseipdb/api/v2/check", timeout=TIMEOUT,
                            params={"ipAddress": ip, "verbose": "true"},
                            headers={"Key": "k", "Accept": "application/json"})
    return response.json()["data"]


def _vt_domain(sb: ProviderSandbox, domain: str) -> dict:
    response = requests.get(f"{sb.url}/virustotal/api/v3/domains/{domain}", timeout=TIMEOUT,
                            headers={"x-apikey": "k"})
    assert response.status_code == 200
    return response.json()["data"]["attributes"]


def test_reports_are_dated_before_the_day_the_sandbox_runs():
    with ProviderSandbox(wall_clock=lambda: NOW) as sb:
        sb.set_profile(IP, "malicious")
        first = _abuse(sb, IP)
        again = _abuse(sb, IP)
    assert sb.anchor == int(NOW) // 3600 * 3600  # 17:00 that day
    reported = datetime.fromisoformat(first["lastReportedAt"]).timestamp()
    assert NOW - 21 * DAY <= reported <= NOW  # at most 20 days before today, never after
    assert again == first  # stable while the sandbox lives


def test_dates_move_with_the_anchor_and_nothing_else_does():
    with ProviderSandbox(wall_clock=lambda: NOW) as today, \
            ProviderSandbox(wall_clock=lambda: NOW - 300 * DAY) as earlier:
        for sb in (today, earlier):
            sb.set_profile(IP, "malicious")
        late, early = _abuse(today, IP), _abuse(earlier, IP)
    shift = (datetime.fromisoformat(late["lastReportedAt"])
             - datetime.fromisoformat(early["lastReportedAt"])).total_seconds()
    assert shift == today.anchor - earlier.anchor == 300 * DAY
    assert {k: v for k, v in late.items() if k not in ("lastReportedAt", "reports")} == {
        k: v for k, v in early.items() if k not in ("lastReportedAt", "reports")}


def test_virustotal_domains_carry_registration_and_popularity_in_the_documented_shape():
    with ProviderSandbox(wall_clock=lambda: NOW) as sb:
        sb.set_profile("popular-site.com", "benign")
        sb.set_profile("fresh-phish.com", "malicious")
        popular = _vt_domain(sb, "popular-site.com")
        fresh = _vt_domain(sb, "fresh-phish.com")
        sub = _vt_domain(sb, "login.fresh-phish.com")
    ranks = popular["popularity_ranks"]
    assert ranks and all(set(entry) == {"rank", "timestamp"} and entry["rank"] > 0
                         for entry in ranks.values())
    assert NOW - popular["creation_date"] > 1000 * DAY  # an old, popular name
    assert 0 < NOW - fresh["creation_date"] <= 61 * DAY and fresh["popularity_ranks"] == {}
    assert "creation_date" not in sub  # WHOIS describes the registered name, not a host in it


def test_abuse_ch_sources_name_real_looking_families():
    from cti_assets.sandbox.community import REAL_FAMILIES

    printable = {family[0] for family in REAL_FAMILIES.values()}
    with ProviderSandbox(wall_clock=lambda: NOW) as sb:
        sb.set_profile(IP, "malicious")
        answer = requests.post(f"{sb.url}/threatfox/api/v1/", timeout=TIMEOUT,
                               headers={"Auth-Key": "k"},
                               json={"query": "search_ioc", "search_term": IP}).json()
        refused = requests.post(f"{sb.url}/threatfox/api/v1/", timeout=TIMEOUT,
                                json={"query": "search_ioc", "search_term": IP})
        wrong_verb = requests.get(f"{sb.url}/threatfox/api/v1/", timeout=TIMEOUT,
                                  headers={"Auth-Key": "k"})
    entry = answer["data"][0]
    assert answer["query_status"] == "ok" and entry["ioc"].startswith(f"{IP}:")
    assert entry["malware_printable"] in printable and entry["threat_type"] == "botnet_cc"
    assert entry["confidence_level"] in (50, 75, 100)
    assert entry["first_seen"].endswith(" UTC")
    assert refused.status_code == 401 and refused.json() == {"query_status": "unknown_auth_key"}
    assert wrong_verb.status_code == 404

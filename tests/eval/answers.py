"""Provider answer bodies in the providers' documented shapes (docs/providers reference §1-§5),
for the evaluation cases: each builder returns an `Http` (status and JSON body) that the real
client parses, so the evaluation exercises the same parsing as a live run.

Times are relative to `FETCHED_AT`, the moment every evaluation lookup is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from tests.scoring.scoring_factories import FETCHED_AT

EPOCH_NOW = int(FETCHED_AT.timestamp())
DAY = 86400
VT_ENGINES = {"ip_address": 94, "domain": 94, "url": 97, "file": 76}


@dataclass
class Http:
    """One HTTP answer of a provider: status and JSON body."""

    status: int
    body: dict[str, Any]
    paid: bool = False  # GreyNoise: the body is the paid v3 answer
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


def days_ago_iso(days: float) -> str:
    """AbuseIPDB's timestamp form: ISO-8601 with offset."""
    return (FETCHED_AT - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def days_ago_date(days: float) -> str:
    return (FETCHED_AT - timedelta(days=days)).strftime("%Y-%m-%d")


# --- VirusTotal v3 -----------------------------------------------------------------------------

def vt(kind: str, ident: str, malicious: int = 0, suspicious: int = 0, harmless: int | None = None,
       *, reputation: int = 0, votes: tuple[int, int] = (0, 0), tags: list[str] | None = None,
       analysed_days_ago: float = 2, **attributes: Any) -> Http:
    """GET /{collection}/{id}: `harmless` defaults to a typical split of the remaining engines;
    `votes` is (harmless, malicious)."""
    total = VT_ENGINES[kind]
    rest = total - malicious - suspicious
    if harmless is None:
        harmless = 0 if kind == "file" else max(0, rest * 2 // 3)
    undetected = max(0, rest - harmless)
    stats = {"harmless": harmless, "malicious": malicious, "suspicious": suspicious,
             "undetected": undetected, "timeout": 0}
    if kind == "file":
        stats.update({"type-unsupported": 0, "confirmed-timeout": 0, "failure": 0})
    body = {
        "last_analysis_stats": stats,
        "last_analysis_date": EPOCH_NOW - int(analysed_days_ago * DAY),
        "last_modification_date": EPOCH_NOW - DAY,
        "reputation": reputation,
        "total_votes": {"harmless": votes[0], "malicious": votes[1]},
        "tags": tags or [],
        **attributes,
    }
    collection = {"ip_address": "ip_addresses", "domain": "domains", "url": "urls",
                  "file": "files"}[kind]
    return Http(200, {"data": {
        "id": ident, "type": kind,
        "links": {"self": f"https://www.virustotal.com/api/v3/{collection}/{ident}"},
        "attributes": body,
    }})


def vt_ip(ip: str, malicious: int = 0, suspicious: int = 0, *, as_owner: str = "",
          asn: int = 0, country: str = "US", network: str = "", **kw: Any) -> Http:
    return vt("ip_address", ip, malicious, suspicious, as_owner=as_owner, asn=asn,
              country=country, network=network or f"{ip}/24", **kw)


def vt_domain(domain: str, malicious: int = 0, suspicious: int = 0, *,
              created_days_ago: float | None = None, categories: dict[str, str] | None = None,
              ranks: dict[str, int] | None = None, registrar: str = "", **kw: Any) -> Http:
    extra: dict[str, Any] = {"categories": categories or {}, "registrar": registrar,
                             "popularity_ranks": {name: {"rank": rank, "timestamp": EPOCH_NOW - DAY}
                                                  for name, rank in (ranks or {}).items()}}
    if created_days_ago is not None:
        extra["creation_date"] = EPOCH_NOW - int(created_days_ago * DAY)
    return vt("domain", domain, malicious, suspicious, **extra, **kw)


def vt_url(url: str, malicious: int = 0, suspicious: int = 0, *,
           categories: dict[str, str] | None = None, threat_names: list[str] | None = None,
           first_submitted_days_ago: float = 1, times_submitted: int = 1, **kw: Any) -> Http:
    return vt("url", "0" * 64, malicious, suspicious, url=url, last_final_url=url,
              categories=categories or {}, threat_names=threat_names or [],
              first_submission_date=EPOCH_NOW - int(first_submitted_days_ago * DAY),
              times_submitted=times_submitted, **kw)


def vt_file(sha256: str, malicious: int = 0, suspicious: int = 0, *, label: str | None = None,
            names: list[str] | None = None, **kw: Any) -> Http:
    extra: dict[str, Any] = {"sha256": sha256, "meaningful_name": (names or ["file.bin"])[0],
                             "names": names or ["file.bin"]}
    if label:
        family = label.split("/")[-1]
        extra["popular_threat_classification"] = {
            "suggested_threat_label": label,
            "popular_threat_category": [{"count": malicious, "value": label.split(".")[0]}],
            "popular_threat_name": [{"count": malicious, "value": family}],
        }
    return vt("file", sha256, malicious, suspicious, **extra, **kw)


def vt_not_found(kind: str, ident: str) -> Http:
    text = {"ip_address": "IP address", "domain": "Domain", "url": "URL", "file": "File"}[kind]
    return Http(404, {"error": {"code": "NotFoundError", "message": f'{text} "{ident}" not found'}})


# --- AbuseIPDB v2 /check (verbose) -------------------------------------------------------------

def abuse(ip: str, score: int = 0, *, reports: int = 0, users: int = 0,
          last_days_ago: float | None = None, categories: list[list[int]] | None = None,
          whitelisted: bool | None = False, tor: bool = False,
          usage: str = "Data Center/Web Hosting/Transit", isp: str = "", domain: str = "",
          country: str = "US") -> Http:
    """`categories` is one list per report (reports beyond them repeat the last one)."""
    per_report = categories or ([[18, 22]] if reports else [])
    report_rows = [
        {"reportedAt": days_ago_iso((last_days_ago or 0) + i * 0.5), "comment": "",
         "categories": per_report[min(i, len(per_report) - 1)],
         "reporterId": 1000 + i % max(users, 1),
         "reporterCountryCode": "DE", "reporterCountryName": "Germany"}
        for i in range(min(reports, 25))
    ]
    return Http(200, {"data": {
        "ipAddress": ip, "isPublic": True, "ipVersion": 6 if ":" in ip else 4,
        "isWhitelisted": whitelisted, "abuseConfidenceScore": score, "countryCode": country,
        "countryName": "", "usageType": usage, "isp": isp, "domain": domain, "hostnames": [],
        "isTor": tor, "totalReports": reports, "numDistinctUsers": users,
        "lastReportedAt": days_ago_iso(last_days_ago) if last_days_ago is not None else None,
        "reports": report_rows,
    }})


# --- GreyNoise ---------------------------------------------------------------------------------

def gn_community(ip: str, *, noise: bool = False, riot: bool = False,
                 classification: str = "unknown", name: str = "unknown",
                 last_seen_days_ago: float = 1) -> Http:
    """GET /v3/community/{ip}; never seen: `gn_community_not_found`."""
    link = f"https://viz.greynoise.io/{'riot' if riot else 'ip'}/{ip}"
    return Http(200, {"ip": ip, "noise": noise, "riot": riot, "classification": classification,
                      "name": name, "link": link,
                      "last_seen": days_ago_date(last_seen_days_ago), "message": "Success"})


def gn_community_not_found(ip: str) -> Http:
    return Http(404, {"ip": ip, "noise": False, "riot": False, "message":
                      "IP not observed scanning the internet or contained in RIOT data set."})


def gn_v3(ip: str, *, noise: bool = False, classification: str = "unknown", actor: str = "unknown",
          riot: bool = False, trust_level: str | None = None, service: str = "",
          category: str = "", tags: list[tuple[str, str]] | None = None, tor: bool = False,
          vpn: bool = False) -> Http:
    """GET /v3/ip/{ip} (paid): `tags` as (name, intention) pairs."""
    scanner: dict[str, Any] = {"found": noise}
    if noise:
        scanner.update({
            "seen": True, "classification": classification, "actor": actor, "spoofable": False,
            "bot": False, "tor": tor, "vpn": vpn, "vpn_service": "", "cves": [],
            "first_seen": days_ago_date(200), "last_seen": days_ago_date(1),
            "last_seen_timestamp": days_ago_iso(1).replace("+00:00", "Z"),
            "tags": [{"id": f"t{i}", "slug": n.lower().replace(" ", "-"), "name": n,
                      "category": "activity", "intention": intent, "recommend_block":
                      intent == "malicious"} for i, (n, intent) in enumerate(tags or [])],
            "metadata": {"asn": "", "organization": "", "category": "hosting"},
        })
    business: dict[str, Any] = {"found": riot}
    if riot:
        business.update({"category": category, "name": service, "description": "",
                         "explanation": "", "last_updated": days_ago_iso(3), "reference": "",
                         "trust_level": trust_level})
    return Http(200, {"ip": ip, "business_service_intelligence": business,
                      "internet_scanner_intelligence": scanner,
                      "request_metadata": {"restricted_fields": []}}, paid=True)


# --- Shodan ------------------------------------------------------------------------------------

def internetdb(ip: str, *, ports: list[int] | None = None, tags: list[str] | None = None,
               vulns: list[str] | None = None, hostnames: list[str] | None = None) -> Http:
    return Http(200, {"ip": ip, "ports": ports or [], "cpes": [], "hostnames": hostnames or [],
                      "tags": tags or [], "vulns": vulns or []})


def internetdb_not_found() -> Http:
    return Http(404, {"detail": "No information available"})


# --- SecurityTrails v1 /domain -----------------------------------------------------------------

def securitytrails(domain: str, *, first_seen_days_ago: float = 3000, rank: int | None = None,
                   a: list[str] | None = None, ns: list[str] | None = None,
                   subdomains: int = 3) -> Http:
    seen = days_ago_date(first_seen_days_ago)
    return Http(200, {
        "endpoint": f"/v1/domain/{domain}", "hostname": domain, "apex_domain": domain,
        "alexa_rank": rank, "subdomain_count": subdomains,
        "current_dns": {
            "a": {"first_seen": seen, "values": [{"ip": ip, "ip_count": 1, "ip_organization": ""}
                                                 for ip in (a or ["198.51.100.20"])]},
            "ns": {"first_seen": seen, "values": [{"nameserver": n, "nameserver_count": 100,
                                                   "nameserver_organization": ""}
                                                  for n in (ns or ["ns1.example-dns.net"])]},
            "mx": {}, "aaaa": {}, "soa": {}, "txt": {},
        },
    })

"""Deterministic, fictitious provider answers for the sandbox.

The profile of an observable (malicious, suspicious, benign, unknown, not_found) comes from a
stable hash of its normalised value, so every provider tells a coherent story about the same
value and two runs give the same answers. Shapes follow /work/shared/reference/providers.md;
names, organisations and ASNs are invented (ASNs come from the private-use range).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

MALICIOUS = "malicious"
SUSPICIOUS = "suspicious"
BENIGN = "benign"
UNKNOWN = "unknown"
NOT_FOUND = "not_found"
PROFILES = (MALICIOUS, SUSPICIOUS, BENIGN, UNKNOWN, NOT_FOUND)
# Cumulative share of each profile, in basis points of the hash space.
_PROFILE_CUTS = ((2000, MALICIOUS), (3500, SUSPICIOUS), (6000, BENIGN), (8500, UNKNOWN))

# Fictitious malware families (VirusTotal threat names) and scanner actors (GreyNoise).
FAMILY_NAMES = (
    "CrimsonLynx", "ShadowPetal", "GlassHeron", "RustWing", "VelvetMantis", "PaperKraken",
    "EmberFinch", "QuietViper",
)  # fmt: skip
ACTOR_NAMES = ("Ashen Relay", "Cobalt Drift", "Night Lantern", "Sable Orchard", "Tin Moth")
BENIGN_SCANNERS = ("Northwind Research Scanner", "Openfield Census", "Lattice Survey Project")
RIOT_SERVICES = (
    ("cdn", "Brightpath CDN", "1"),
    ("public_dns", "Oakline Public DNS", "1"),
    ("cloud", "Cirrusbay Cloud", "3"),
    ("email", "Postwell Mail Relay", "2"),
)
ORGS = (
    "Nimbus Hosting Ltd", "Harborview Telecom", "Kestrel Datacenters", "Bluefjord Networks",
    "Amberline Broadband", "Tessellate Cloud",
)  # fmt: skip
COUNTRIES = (
    ("US", "United States", "NA", "ARIN"), ("DE", "Germany", "EU", "RIPE NCC"),
    ("NL", "Netherlands", "EU", "RIPE NCC"), ("BR", "Brazil", "SA", "LACNIC"),
    ("SG", "Singapore", "AS", "APNIC"), ("FR", "France", "EU", "RIPE NCC"),
)  # fmt: skip
CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Greenville")
_ENGINE_PREFIXES = ("Arc", "Bastion", "Cinder", "Delta", "Ember", "Fjord", "Granite", "Halo",
                    "Iris", "Juniper", "Kite")  # fmt: skip
_ENGINE_SUFFIXES = ("Guard", "Scan", "Shield", "Labs", "Sec", "AV", "Defender")
ENGINE_NAMES = tuple(f"{p}{s}" for p in _ENGINE_PREFIXES for s in _ENGINE_SUFFIXES)  # 77
VT_BAD_CATEGORIES = ("malicious web sites", "phishing", "command and control", "malware sites")
VT_GOOD_CATEGORIES = ("information technology", "business", "search engines and portals")
CATEGORY_VENDORS = ("Forcepoint ThreatSeeker", "Sophos", "BitDefender")
STRONG_ABUSE_CATEGORIES = (4, 7, 15, 18, 20, 21, 22)
WEAK_ABUSE_CATEGORIES = (14, 19, 18)
RISKY_PORTS = (23, 445, 3389, 5900, 9200, 4444, 8081)
COMMON_PORTS = (22, 53, 80, 443, 8080, 8443)
# Default reference instant of generated timestamps when no anchor is given (pure calls, tests).
# A running sandbox anchors its dates at its start instead (server.ProviderSandbox), so a report
# "2 days old" is 2 days before the requests of that run, and stays the same all run long.
BASE_EPOCH = 1767225600  # 2026-01-01T00:00:00Z


def normalise(value: str) -> str:
    """Provider-independent form of an observable used for hashing and profile overrides."""
    text = value.strip()
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        pass
    if "://" in text:
        return text
    return text.lower().rstrip(".")


def _digest(normalised: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{normalised}".encode()).digest()


def profile_of(value: str, seed: int = 0) -> str:
    """The profile the sandbox gives `value` when no override is set."""
    return _profile_from_digest(_digest(normalise(value), seed))


def _profile_from_digest(digest: bytes) -> str:
    bucket = int.from_bytes(digest[:4], "big") % 10000
    for cut, profile in _PROFILE_CUTS:
        if bucket < cut:
            return profile
    return NOT_FOUND


@dataclass(frozen=True)
class Facts:
    """What the fictitious world knows about one value; every provider body derives from it."""

    value: str
    profile: str
    family: str | None
    actor: str | None
    org: str
    asn: int
    country: tuple[str, str, str, str]
    city: str
    ports: tuple[int, ...]
    vulns: tuple[str, ...]
    shodan_tags: tuple[str, ...]
    engines_malicious: int
    engines_suspicious: int
    engines_harmless: int
    engines_total: int
    reputation: int
    votes_malicious: int
    votes_harmless: int
    abuse_score: int
    abuse_reports: int
    abuse_users: int
    abuse_categories: tuple[int, ...]
    whitelisted: bool
    is_tor: bool
    riot: tuple[str, str, str] | None  # (category, name, trust_level)
    benign_scanner: str | None
    first_seen: int  # epoch
    last_seen: int  # epoch
    alexa_rank: int | None
    subdomain_count: int
    rng_seed: int


def anchor_for(epoch: float) -> int:
    """The anchor of a sandbox started at `epoch`: the start of that UTC hour."""
    return int(epoch) // 3600 * 3600


@lru_cache(maxsize=65536)
def facts_for(value: str, seed: int = 0, forced_profile: str | None = None,
              anchor: int = BASE_EPOCH) -> Facts:
    """Facts about `value`; `forced_profile` overrides the hash-derived profile. Dates are
    `anchor` minus a number of days drawn from the value's hash (the same for every anchor)."""
    normalised = normalise(value)
    digest = _digest(normalised, seed)
    profile = forced_profile or _profile_from_digest(digest)
    rng = random.Random(int.from_bytes(digest[4:12], "big"))
    total = rng.randint(66, 74)
    family = actor = scanner = None
    riot = None
    whitelisted = is_tor = False
    alexa: int | None = None
    if profile == MALICIOUS:
        bad, sus = rng.randint(8, 40), rng.randint(0, 4)
        harmless = rng.randint(0, 8)
        reputation = -rng.randint(5, 90)
        votes = (rng.randint(3, 40), rng.randint(0, 2))
        family = rng.choice(FAMILY_NAMES)
        actor = rng.choice(ACTOR_NAMES)
        abuse = _abuse(rng.randint(75, 100), rng.randint(20, 900), rng.randint(5, 200))
        categories = tuple(rng.sample(STRONG_ABUSE_CATEGORIES, rng.randint(1, 3)))
        ports = tuple(sorted({rng.choice(RISKY_PORTS), rng.choice(COMMON_PORTS)}))
        tags: tuple[str, ...] = (rng.choice(("c2", "malware", "compromised")),)
        vulns = _cves(rng, rng.randint(1, 5))
        is_tor = rng.random() < 0.1
        first_seen = anchor - rng.randint(2, 60) * 86400
    elif profile == SUSPICIOUS:
        bad, sus = rng.randint(1, 3), rng.randint(0, 2)
        harmless = rng.randint(2, 9)
        reputation = -rng.randint(0, 5)
        votes = (rng.randint(0, 3), rng.randint(0, 3))
        family = rng.choice(FAMILY_NAMES)
        abuse = _abuse(rng.randint(25, 74), rng.randint(2, 30), rng.randint(1, 12))
        categories = tuple(rng.sample(WEAK_ABUSE_CATEGORIES, rng.randint(1, 2)))
        ports = tuple(sorted({rng.choice(COMMON_PORTS), rng.choice(RISKY_PORTS)}))
        tags = (rng.choice(("scanner", "self-signed", "proxy", "vpn")),)
        vulns = _cves(rng, rng.randint(0, 2))
        is_tor = rng.random() < 0.2
        first_seen = anchor - rng.randint(30, 400) * 86400
    elif profile == BENIGN:
        bad = sus = 0
        harmless = rng.randint(55, 64)
        reputation = rng.randint(0, 60)
        votes = (0, rng.randint(1, 30))
        reports = rng.choice((0, 0, 0, 1, 2))  # a stray report or two, score stays 0
        abuse = (0, reports, min(reports, 1))
        categories = ()
        whitelisted = rng.random() < 0.3
        riot = rng.choice(RIOT_SERVICES) if rng.random() < 0.6 else None
        scanner = None if riot else rng.choice(BENIGN_SCANNERS)
        ports = (80, 443)
        tags = (rng.choice(("cdn", "cloud")),)
        vulns = ()
        alexa = rng.randint(1, 20000)
        first_seen = anchor - rng.randint(1500, 7000) * 86400
    else:  # UNKNOWN and NOT_FOUND: nothing notable
        bad = sus = 0
        harmless = rng.randint(0, 6)
        reputation = 0
        votes = (0, 0)
        reports = rng.choice((0, 0, 1)) if profile == UNKNOWN else 0
        abuse = (rng.randint(0, 3) if reports else 0, reports, reports)
        categories = (14,) if reports else ()
        ports = (rng.choice(COMMON_PORTS),)
        tags = ("cloud",) if rng.random() < 0.3 else ()
        vulns = ()
        first_seen = anchor - rng.randint(100, 3000) * 86400
    return Facts(
        value=normalised, profile=profile, family=family, actor=actor,
        org=rng.choice(ORGS), asn=64512 + rng.randint(0, 1000), country=rng.choice(COUNTRIES),
        city=rng.choice(CITIES), ports=ports, vulns=vulns, shodan_tags=tags,
        engines_malicious=bad, engines_suspicious=sus, engines_harmless=harmless,
        engines_total=total, reputation=reputation, votes_malicious=votes[0],
        votes_harmless=votes[1], abuse_score=abuse[0], abuse_reports=abuse[1],
        abuse_users=abuse[2], abuse_categories=categories, whitelisted=whitelisted,
        is_tor=is_tor, riot=riot, benign_scanner=scanner, first_seen=first_seen,
        last_seen=max(first_seen, anchor - rng.randint(0, 20) * 86400), alexa_rank=alexa,
        subdomain_count=rng.randint(0, 3000) if profile == BENIGN else rng.randint(0, 12),
        rng_seed=int.from_bytes(digest[12:20], "big"),
    )  # fmt: skip


def _cves(rng: random.Random, count: int) -> tuple[str, ...]:
    return tuple(sorted({f"CVE-{rng.randint(2016, 2025)}-{rng.randint(1000, 49999)}"
                         for _ in range(count)}))  # fmt: skip


def _date(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _iso_offset(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _iso_naive_micro(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000")


def _fake_ip(f: Facts, index: int) -> str:
    """A documentation-range IPv4 (RFC 5737) standing in for resolved addresses."""
    block = ("192.0.2", "198.51.100", "203.0.113")[(f.rng_seed + index) % 3]
    return f"{block}.{(f.rng_seed >> (index * 3)) % 254 + 1}"


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_public_ipv4(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return address.version == 4 and address.is_global


# --- VirusTotal -------------------------------------------------------------------------


def vt_url_id(url: str) -> str:
    """VirusTotal's URL identifier: URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def vt_decode_url_id(url_id: str) -> str | None:
    """The URL behind an unpadded URL-safe base64 id, or None when it does not decode."""
    try:
        raw = base64.urlsafe_b64decode(url_id + "=" * (-len(url_id) % 4))
        text = raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return text if "://" in text or "." in text else None


def _vt_stats(f: Facts, file_kind: bool) -> dict[str, int]:
    undetected = f.engines_total - f.engines_malicious - f.engines_suspicious - f.engines_harmless
    stats = {
        "harmless": 0 if file_kind else f.engines_harmless,
        "malicious": f.engines_malicious,
        "suspicious": f.engines_suspicious,
        "undetected": undetected + (f.engines_harmless if file_kind else 0),
        "timeout": 0,
    }
    if file_kind:
        stats.update({"type-unsupported": 4, "confirmed-timeout": 0, "failure": 0})
    return stats


def _vt_results(f: Facts, file_kind: bool) -> dict[str, dict[str, Any]]:
    family = f.family if file_kind else None
    harmless = 0 if file_kind else f.engines_harmless
    return _engine_results(f.engines_total, f.engines_malicious, f.engines_suspicious, harmless,
                           file_kind, family)  # fmt: skip


@lru_cache(maxsize=8192)
def _engine_results(total: int, malicious: int, suspicious: int, harmless: int,
                    file_kind: bool, family: str | None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per-engine verdicts; shared between answers with the same counts (never mutated)."""
    results: dict[str, dict[str, Any]] = {}
    bad_result = family.lower() if family else "malicious"
    result: str | None
    for index, engine in enumerate(ENGINE_NAMES[:total]):
        if index < malicious:
            category, result = "malicious", bad_result
        elif index < malicious + suspicious:
            category, result = "suspicious", "suspicious"
        elif index < malicious + suspicious + harmless:
            category, result = "harmless", "clean"
        else:
            category, result = "undetected", None if file_kind else "unrated"
        results[engine] = {"category": category, "result": result, "method": "blacklist",
                           "engine_name": engine}  # fmt: skip
    return results


def _vt_common(f: Facts, file_kind: bool = False) -> dict[str, Any]:
    tags: list[str] = []
    if f.profile == MALICIOUS and not file_kind:
        tags = ["malware"]
    return {
        "last_analysis_stats": _vt_stats(f, file_kind),
        "last_analysis_results": _vt_results(f, file_kind),
        "last_analysis_date": f.last_seen,
        "last_modification_date": f.last_seen + 3600,
        "reputation": f.reputation,
        "total_votes": {"harmless": f.votes_harmless, "malicious": f.votes_malicious},
        "tags": tags,
    }


def vt_ip(ip: str, f: Facts) -> dict[str, Any]:
    code, _, continent, rir = f.country
    network = ipaddress.ip_network(f"{ip}/{24 if ':' not in ip else 48}", strict=False)
    attributes = _vt_common(f) | {
        "as_owner": f.org, "asn": f.asn, "country": code, "continent": continent,
        "network": str(network), "regional_internet_registry": rir,
        "whois": f"NetRange: {network}\nOrgName: {f.org}\nCountry: {code}\n",
        "whois_date": f.first_seen, "jarm": hashlib.sha256(ip.encode()).hexdigest()[:62],
    }  # fmt: skip
    return _vt_envelope(ip, "ip_address", "ip_addresses", attributes)


def vt_domain(domain: str, f: Facts) -> dict[str, Any]:
    if f.profile in (MALICIOUS, SUSPICIOUS):
        rng = random.Random(f.rng_seed)
        categories = {v: rng.choice(VT_BAD_CATEGORIES) for v in CATEGORY_VENDORS[:2]}
    elif f.profile == BENIGN:
        categories = {CATEGORY_VENDORS[0]: VT_GOOD_CATEGORIES[f.rng_seed % 3]}
    else:
        categories = {}
    attributes = _vt_common(f) | {
        "categories": categories,
        "last_dns_records": [{"type": "A", "value": _fake_ip(f, 0), "ttl": 300},
                             {"type": "NS", "value": f"ns1.{_apex(domain)}", "ttl": 3600}],
        "last_dns_records_date": f.last_seen,
        "popularity_ranks": _popularity_ranks(f),
    }  # fmt: skip
    if domain == _apex(domain):  # WHOIS (creation_date) describes a registered name only
        attributes |= {
            "creation_date": f.first_seen, "last_update_date": f.last_seen,
            "expiration_date": f.last_seen + 365 * 86400,
            "registrar": "Northgate Registrar LLC",
            "whois": f"Domain Name: {domain}\nRegistrar: Northgate Registrar LLC\n"
                     f"Creation Date: {_iso_z(f.first_seen)}\n",
            "whois_date": f.last_seen,
        }  # fmt: skip
    return _vt_envelope(domain, "domain", "domains", attributes)


_RANKERS = ("Majestic", "Cisco Umbrella", "Tranco")


def _popularity_ranks(f: Facts) -> dict[str, dict[str, int]]:
    """VT's `popularity_ranks` ({ranker: {rank, timestamp}}): popular (benign) names only, each
    ranker a little off the others, as the real lists disagree."""
    if not f.alexa_rank:
        return {}
    return {ranker: {"rank": f.alexa_rank + index * (f.rng_seed % 97), "timestamp": f.last_seen}
            for index, ranker in enumerate(_RANKERS)}


def _iso_z(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def vt_url(url: str, f: Facts) -> dict[str, Any]:
    url_sha256 = hashlib.sha256(url.encode()).hexdigest()
    bad = f.profile in (MALICIOUS, SUSPICIOUS)
    attributes = _vt_common(f) | {
        "url": url, "last_final_url": url, "title": "Sign in" if bad else "Welcome",
        "last_http_response_code": 200, "categories": {},
        "threat_names": [f.family] if f.profile == MALICIOUS and f.family else [],
        "times_submitted": 1 + f.rng_seed % 40, "first_submission_date": f.first_seen,
        "last_submission_date": f.last_seen, "has_content": False, "outgoing_links": [],
    }  # fmt: skip
    return _vt_envelope(url_sha256, "url", "urls", attributes)


def vt_file(file_hash: str, f: Facts) -> dict[str, Any]:
    hashes = file_hashes(file_hash)
    attributes = _vt_common(f, file_kind=True) | {
        **hashes, "size": 20480 + f.rng_seed % 2_000_000, "type_description": "Win32 EXE",
        "type_tag": "peexe", "type_extension": "exe", "magic": "PE32 executable (GUI) Intel 80386",
        "meaningful_name": f"setup_{hashes['md5'][:6]}.exe",
        "names": [f"setup_{hashes['md5'][:6]}.exe"],
        "first_submission_date": f.first_seen, "last_submission_date": f.last_seen,
        "times_submitted": 1 + f.rng_seed % 25, "unique_sources": 1 + f.rng_seed % 9,
    }  # fmt: skip
    if f.family and f.profile in (MALICIOUS, SUSPICIOUS):
        token = f.family.lower()
        category = "trojan" if f.profile == MALICIOUS else "hacktool"
        attributes["popular_threat_classification"] = {
            "suggested_threat_label": f"{category}.{token}/{token}",
            "popular_threat_category": [{"count": max(f.engines_malicious, 1), "value": category}],
            "popular_threat_name": [{"count": max(f.engines_malicious - 2, 1), "value": token}],
        }
    return _vt_envelope(hashes["sha256"], "file", "files", attributes)


def file_hashes(file_hash: str) -> dict[str, str]:
    """md5/sha1/sha256 for a file known by any one of them (the others are derived)."""
    value = file_hash.lower()
    seed = value.encode()
    derived = {
        "md5": hashlib.md5(seed, usedforsecurity=False).hexdigest(),
        "sha1": hashlib.sha1(seed, usedforsecurity=False).hexdigest(),
        "sha256": hashlib.sha256(seed).hexdigest(),
    }
    given = {32: "md5", 40: "sha1", 64: "sha256"}.get(len(value))
    if given:
        derived[given] = value
    return derived


def _vt_envelope(object_id: str, kind: str, collection: str, attributes: dict) -> dict[str, Any]:
    return {"data": {"id": object_id, "type": kind,
                     "links": {"self": f"https://www.virustotal.com/api/v3/{collection}/{object_id}"},
                     "attributes": attributes}}  # fmt: skip


# --- Shodan host and InternetDB -----------------------------------------------------------


def shodan_host(ip: str, f: Facts, minify: bool = False) -> dict[str, Any]:
    code, name, _, _ = f.country
    hostnames = [_hostname(ip, f)] if f.profile != UNKNOWN else []
    asn = f"AS{f.asn}"
    body: dict[str, Any] = {
        "ip": int(ipaddress.ip_address(ip)), "ip_str": ip, "ports": list(f.ports),
        "hostnames": hostnames, "domains": [_apex(h) for h in hostnames], "org": f.org,
        "isp": f.org, "asn": asn, "os": None, "tags": list(f.shodan_tags),
        "last_update": _iso_naive_micro(f.last_seen), "country_code": code, "country_name": name,
        "city": f.city, "region_code": "01", "latitude": 10.0 + f.rng_seed % 50,
        "longitude": 5.0 + f.rng_seed % 90, "postal_code": None, "area_code": None,
        "dma_code": None,
    }  # fmt: skip
    if f.vulns:
        body["vulns"] = list(f.vulns)
    if not minify:
        body["data"] = [_banner(ip, port, f, asn, hostnames) for port in f.ports]
    return body


def _banner(ip: str, port: int, f: Facts, asn: str, hostnames: list[str]) -> dict[str, Any]:
    module = {80: "http", 443: "https", 22: "ssh", 53: "dns-udp"}.get(port, "auto")
    banner: dict[str, Any] = {
        "port": port, "transport": "udp" if port == 53 else "tcp",
        "timestamp": _iso_naive_micro(f.last_seen), "data": f"service banner on {port}\r\n",
        "ip_str": ip, "hostnames": hostnames, "domains": [_apex(h) for h in hostnames],
        "org": f.org, "isp": f.org, "asn": asn, "os": None, "tags": list(f.shodan_tags),
        "location": {"country_code": f.country[0], "city": f.city},
        "_shodan": {"module": module, "id": hashlib.md5(f"{ip}:{port}".encode(),
                                                        usedforsecurity=False).hexdigest(),
                    "crawler": "0" * 40},
    }  # fmt: skip
    if f.vulns:
        banner["vulns"] = {cve: {"cvss": "7.5", "summary": "Fictitious vulnerability.",
                                 "references": [], "verified": False} for cve in f.vulns}
    return banner


def internetdb(ip: str, f: Facts) -> dict[str, Any]:
    hostnames = [_hostname(ip, f)] if f.profile != UNKNOWN else []
    cpes = ["cpe:/a:nginx:nginx"] if 80 in f.ports or 443 in f.ports else []
    if 22 in f.ports:
        cpes.append("cpe:/a:openbsd:openssh")
    return {"ip": ip, "ports": list(f.ports), "cpes": cpes, "hostnames": hostnames,
            "tags": list(f.shodan_tags), "vulns": list(f.vulns)}  # fmt: skip


def _hostname(ip: str, f: Facts) -> str:
    label = ip.replace(".", "-").replace(":", "-")
    return f"host-{label}.{f.org.split()[0].lower()}.example.net"


# --- AbuseIPDB --------------------------------------------------------------------------


def abuseipdb_check(ip: str, f: Facts, verbose: bool = False) -> dict[str, Any]:
    address = ipaddress.ip_address(ip)
    code, name, _, _ = f.country
    usage = ("Content Delivery Network" if f.riot else "Data Center/Web Hosting/Transit")
    reported = f.abuse_reports > 0 and address.is_global
    data: dict[str, Any] = {
        "ipAddress": ip, "isPublic": address.is_global, "ipVersion": address.version,
        "isWhitelisted": f.whitelisted, "abuseConfidenceScore": f.abuse_score if reported else 0,
        "countryCode": code, "usageType": usage, "isp": f.org,
        "domain": f"{f.org.split()[0].lower()}.example.net", "hostnames": [], "isTor": f.is_tor,
        "totalReports": f.abuse_reports if reported else 0,
        "numDistinctUsers": f.abuse_users if reported else 0,
        "lastReportedAt": _iso_offset(f.last_seen) if reported else None,
    }  # fmt: skip
    if verbose:
        data["countryName"] = name
        data["reports"] = [
            {"reportedAt": _iso_offset(f.last_seen - i * 3600), "comment": "Fictitious report.",
             "categories": list(f.abuse_categories), "reporterId": 1000 + i,
             "reporterCountryCode": "US", "reporterCountryName": "United States"}
            for i in range(min(data["totalReports"], 5))
        ]  # fmt: skip
    return {"data": data}


# --- GreyNoise --------------------------------------------------------------------------


def greynoise_classification(f: Facts) -> str:
    return {MALICIOUS: "malicious", SUSPICIOUS: "suspicious", BENIGN: "benign"}.get(
        f.profile, "unknown"
    )


def greynoise_community(ip: str, f: Facts) -> dict[str, Any]:
    """Community answer for a found IP (call only when profile != not_found)."""
    riot = f.riot is not None
    noise = not riot
    if f.riot is not None:
        name = f.riot[1]
    elif f.benign_scanner:
        name = f.benign_scanner
    else:
        name = f.actor or "unknown"
    return {"ip": ip, "noise": noise, "riot": riot, "classification": greynoise_classification(f),
            "name": name, "link": f"https://viz.greynoise.io/{'riot' if riot else 'ip'}/{ip}",
            "last_seen": _date(f.last_seen), "message": "Success"}  # fmt: skip


def greynoise_not_observed(ip: str) -> dict[str, Any]:
    return {"ip": ip, "noise": False, "riot": False,
            "message": "IP not observed scanning the internet or contained in RIOT data set."}


def greynoise_v3_ip(ip: str, f: Facts, quick: bool = False) -> dict[str, Any]:
    riot = f.riot
    noise = riot is None
    classification = greynoise_classification(f) if noise else ""
    if quick:
        return {"ip": ip,
                "business_service_intelligence": {"found": riot is not None,
                                                  "trust_level": riot[2] if riot else ""},
                "internet_scanner_intelligence": {"found": noise,
                                                  "classification": classification}}  # fmt: skip
    bsi: dict[str, Any] = {"found": False, "category": "", "name": "", "description": "",
                           "explanation": "", "last_updated": "", "reference": "",
                           "trust_level": ""}  # fmt: skip
    if riot:
        bsi = {"found": True, "category": riot[0], "name": riot[1],
               "description": f"{riot[1]} (fictitious business service).",
               "explanation": "Known business service traffic.",
               "last_updated": f"{_date(f.last_seen)}T00:00:00Z", "reference": "",
               "trust_level": riot[2]}  # fmt: skip
    isi: dict[str, Any] = {"found": False, "seen": False, "classification": "", "tags": [],
                           "cves": []}  # fmt: skip
    if noise:
        intention = {"malicious": "malicious", "suspicious": "suspicious"}.get(
            classification, "unknown" if not f.benign_scanner else "benign"
        )
        tag_name = f"{f.family} Scanner" if f.family else "Web Crawler"
        isi = {
            "found": True, "seen": True, "classification": classification,
            "first_seen": _date(f.first_seen), "last_seen": _date(f.last_seen),
            "last_seen_timestamp": f"{_date(f.last_seen)}T12:00:00Z",
            "actor": f.benign_scanner or f.actor or "unknown", "spoofable": False,
            "bot": False, "tor": f.is_tor, "vpn": False, "vpn_service": "", "cves": list(f.vulns),
            "tags": [{"id": hashlib.md5(tag_name.encode(), usedforsecurity=False).hexdigest(),
                      "slug": tag_name.lower().replace(" ", "-"), "name": tag_name,
                      "category": "activity", "intention": intention,
                      "description": "Fictitious tag.", "references": [],
                      "recommend_block": intention == "malicious", "cves": list(f.vulns),
                      "created_at": "2024-01-01", "updated_at": _date(f.last_seen)}],
            "metadata": {"asn": f"AS{f.asn}", "organization": f.org, "rdns": "",
                         "category": "hosting", "source_country": f.country[1],
                         "source_country_code": f.country[0], "source_city": f.city,
                         "destination_countries": [], "destination_country_codes": []},
            "raw_data": {"scan": [{"port": p, "protocol": "TCP"} for p in f.ports],
                         "ja3": [], "hassh": [], "http": {"path": [], "useragent": []}},
        }  # fmt: skip
    return {"ip": ip, "business_service_intelligence": bsi,
            "internet_scanner_intelligence": isi,
            "request_metadata": {"restricted_fields": []}}  # fmt: skip


# --- SecurityTrails ---------------------------------------------------------------------

_TWO_LEVEL_SUFFIXES = frozenset({"co.uk", "com.au", "co.jp", "com.br", "org.uk", "co.nz"})


def _apex(hostname: str) -> str:
    labels = hostname.lower().rstrip(".").split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _TWO_LEVEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def securitytrails_domain(domain: str, f: Facts) -> dict[str, Any]:
    apex = _apex(domain)
    body: dict[str, Any] = {"endpoint": f"/v1/domain/{domain}", "hostname": domain,
                            "apex_domain": apex, "alexa_rank": None, "subdomain_count": 0,
                            "current_dns": {k: {} for k in ("a", "aaaa", "mx", "ns", "soa",
                                                            "txt")}}  # fmt: skip
    if f.profile == NOT_FOUND:
        return body
    seen = _date(f.first_seen)
    cheap_ns = f.profile in (MALICIOUS, SUSPICIOUS)
    ns_org = "Freezone DNS" if cheap_ns else f.org
    body["alexa_rank"] = f.alexa_rank
    body["subdomain_count"] = f.subdomain_count
    body["current_dns"] = {
        "a": {"first_seen": seen, "values": [
            {"ip": _fake_ip(f, i), "ip_count": 3 + (f.rng_seed >> i) % 4000,
             "ip_organization": f.org} for i in range(1 + f.rng_seed % 2)]},
        "aaaa": {},
        "mx": {"first_seen": seen, "values": [{"hostname": f"mx.{apex}", "hostname_count": 1,
                                                "hostname_organization": f.org, "priority": 10}]},
        "ns": {"first_seen": seen, "values": [
            {"nameserver": f"ns{i}.{'freezone-dns.example' if cheap_ns else apex}",
             "nameserver_count": 90000 if cheap_ns else 4, "nameserver_organization": ns_org}
            for i in (1, 2)]},
        "soa": {"first_seen": seen, "values": [{"email": f"hostmaster.{apex}", "email_count": 1,
                                                 "ttl": 3600}]},
        "txt": {"first_seen": seen, "values": [{"value": "v=spf1 -all"}]},
    }  # fmt: skip
    return body


def _abuse(score: int, reports: int, users: int) -> tuple[int, int, int]:
    """(abuse confidence, reports, distinct reporters): never more reporters than reports, as
    AbuseIPDB's numDistinctUsers <= totalReports (same draws, so the profiles stay stable)."""
    return score, reports, min(users, reports)

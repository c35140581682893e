"""Sandbox answers of the community and abuse.ch sources: URLhaus, ThreatFox, MalwareBazaar,
AlienVault OTX and CrowdSec CTI, in their documented shapes, from the same `Facts` as the other
providers so every source tells one story about a value.

abuse.ch lists only what is malicious: a benign or unknown value gets their "nothing here"
answer. Family names are real-looking (Emotet, QakBot, Cobalt Strike, Mozi, ...); each maps to
the sandbox's fictitious family of the value, which ThreatFox, MalwareBazaar and OTX give as an
alias, so the sample's malware objects (whose aliases are those names) are matched.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from typing import Any

from cti_assets.sandbox.data import (
    BENIGN,
    MALICIOUS,
    SUSPICIOUS,
    Facts,
    file_hashes,
)

# fictitious family -> (family as abuse.ch prints it, its alias, Malpedia id, file type)
REAL_FAMILIES: dict[str, tuple[str, str, str, str]] = {
    "CrimsonLynx": ("Emotet", "Heodo", "win.emotet", "dll"),
    "ShadowPetal": ("QakBot", "Qbot", "win.qakbot", "dll"),
    "GlassHeron": ("Cobalt Strike", "CobaltStrike", "win.cobalt_strike", "exe"),
    "RustWing": ("Mozi", "Mozi.m", "elf.mozi", "elf"),
    "VelvetMantis": ("Agent Tesla", "AgentTesla", "win.agent_tesla", "exe"),
    "PaperKraken": ("Formbook", "XLoader", "win.formbook", "exe"),
    "EmberFinch": ("AsyncRAT", "Async RAT", "win.asyncrat", "exe"),
    "QuietViper": ("Mirai", "Katana", "elf.mirai", "elf"),
}
BEHAVIORS = (
    ("ssh:bruteforce", "SSH Bruteforce", "IP has been reported for performing brute force on "
     "ssh services."),
    ("http:exploit", "HTTP Exploit", "IP has been reported for attempting to exploit a "
     "vulnerability in a web application."),
    ("http:scan", "HTTP Scan", "IP has been reported for performing actions related to HTTP "
     "vulnerability scanning and discovery."),
    ("tcp:scan", "TCP Scan", "IP has been reported for performing TCP port scanning."),
    ("generic:exploit", "Exploitation attempt", "IP has been reported trying to exploit known "
     "vulnerability/CVE on unspecified protocols."),
)
ATTACK_IDS = (("T1071", "Application Layer Protocol"), ("T1105", "Ingress Tool Transfer"),
              ("T1059", "Command and Scripting Interpreter"), ("T1566", "Phishing"))
REPORTERS = ("abuse_ch", "Cryptolaemus1", "JAMESWT_MHT", "malpulse", "drb_ra", "anonymous")


def _stamp(epoch: int) -> str:
    """abuse.ch's time form: "2026-11-28 14:02:11 UTC"."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _short(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:8]


def _family(f: Facts) -> tuple[str, str, str, str] | None:
    return REAL_FAMILIES.get(f.family or "")


def listed(f: Facts) -> bool:
    """abuse.ch lists malicious values only: a suspicious one stays off its lists, so the other
    providers' story (a weak signal or two) is not turned into a confident one."""
    return f.profile == MALICIOUS


def _payload_sha(f: Facts, index: int) -> str:
    return hashlib.sha256(f"{f.value}#{index}".encode()).hexdigest()


def _tags(f: Facts) -> list[str]:
    family = _family(f)
    if family is None:
        return []
    tags = [family[3], family[0]] if family[3] == "elf" else [family[0]]
    return tags + (["32-bit", "mips"] if family[3] == "elf" else [])


# --- URLhaus ------------------------------------------------------------------------------


def _urlhaus_status(f: Facts) -> str:
    return "online" if f.profile == MALICIOUS and f.rng_seed % 4 else "offline"


def _url_entry(url: str, f: Facts, number: int) -> dict[str, Any]:
    ident = 2_800_000 + f.rng_seed % 400_000 + number
    return {"id": str(ident), "urlhaus_reference": f"https://urlhaus.abuse.ch/url/{ident}/",
            "url": url, "url_status": _urlhaus_status(f), "date_added": _stamp(f.first_seen),
            "threat": "malware_download", "reporter": REPORTERS[f.rng_seed % len(REPORTERS)],
            "larted": "true", "takedown_time_seconds": None, "tags": _tags(f)}


def urlhaus_url(url: str, f: Facts) -> dict[str, Any]:
    if not listed(f):
        return {"query_status": "no_results"}
    family = _family(f)
    entry = _url_entry(url, f, 0)
    entry.pop("larted")
    payloads = [{
        "firstseen": _stamp(f.first_seen)[:10], "filename": url.rsplit("/", 1)[-1] or None,
        "file_type": family[3] if family else "exe", "response_size": str(20480 + f.rng_seed
                                                                          % 90000),
        "response_md5": hashlib.md5(_payload_sha(f, 0).encode(),
                                    usedforsecurity=False).hexdigest(),
        "response_sha256": _payload_sha(f, 0),
        "urlhaus_download": f"https://urlhaus-api.abuse.ch/v1/download/{_payload_sha(f, 0)}/",
        "signature": family[0] if family else None,
        "virustotal": None, "imphash": None, "ssdeep": None, "tlsh": None,
    }]  # fmt: skip
    return {"query_status": "ok", **entry, "host": url.split("/")[2] if "//" in url else url,
            "last_online": _stamp(f.last_seen) if entry["url_status"] == "offline" else None,
            "blacklists": {"spamhaus_dbl": "abused_legit_malware" if f.rng_seed % 2 else
                           "not listed", "surbl": "not listed"},
            "larted": "true", "payloads": payloads}  # fmt: skip


def urlhaus_host(host: str, f: Facts) -> dict[str, Any]:
    if not listed(f):
        return {"query_status": "no_results"}
    count = 1 + f.rng_seed % 6
    folder = "bins" if _tags(f)[:1] == ["elf"] else "wp-content"
    urls = [_url_entry(f"http://{host}/{folder}/{_short(f'{host}{i}')}", f, i)
            for i in range(count)]
    return {"query_status": "ok", "urlhaus_reference": f"https://urlhaus.abuse.ch/host/{host}/",
            "host": host, "firstseen": _stamp(f.first_seen), "url_count": str(count),
            "blacklists": {"spamhaus_dbl": "not listed", "surbl": "not listed"},
            "urls": urls}  # fmt: skip


def urlhaus_payload(file_hash: str, f: Facts) -> dict[str, Any]:
    if f.profile != MALICIOUS:
        return {"query_status": "no_results"}
    family = _family(f)
    hashes = file_hashes(file_hash)
    url_id = 2_800_000 + f.rng_seed % 400_000
    urls = [{"url_id": str(url_id),
             "url": f"http://198.51.100.{1 + f.rng_seed % 250}/bins/x86",
             "url_status": _urlhaus_status(f),
             "urlhaus_reference": f"https://urlhaus.abuse.ch/url/{url_id}/",
             "filename": None, "firstseen": _stamp(f.first_seen)[:10],
             "lastseen": _stamp(f.last_seen)[:10]}]  # fmt: skip
    return {"query_status": "ok", "md5_hash": hashes["md5"], "sha256_hash": hashes["sha256"],
            "file_type": family[3] if family else "exe", "file_size": str(20480 + f.rng_seed
                                                                          % 90000),
            "signature": family[0] if family else None, "firstseen": _stamp(f.first_seen),
            "lastseen": _stamp(f.last_seen), "url_count": "1",
            "urlhaus_download": f"https://urlhaus-api.abuse.ch/v1/download/{hashes['sha256']}/",
            "virustotal": None, "imphash": None, "ssdeep": None, "tlsh": None,
            "urls": urls}  # fmt: skip


# --- ThreatFox ----------------------------------------------------------------------------


def threatfox_search(term: str, kind: str, f: Facts) -> dict[str, Any]:
    """search_ioc: `kind` is ip, domain, url or hash (how the sandbox read the term)."""
    family = _family(f)
    if not listed(f) or family is None:
        return {"query_status": "no_result", "data": "Your search did not yield any results"}
    rng = random.Random(f.rng_seed)
    if kind == "ip":
        port = rng.choice((443, 8080, 2222, 4444, 80))
        ioc, ioc_type, threat_type = f"{term}:{port}", "ip:port", "botnet_cc"
    elif kind == "domain":
        ioc, ioc_type, threat_type = term, "domain", "botnet_cc"
    elif kind == "url":
        ioc, ioc_type, threat_type = term, "url", "payload_delivery"
    else:
        ioc = term
        ioc_type = {32: "md5_hash", 40: "sha1_hash", 64: "sha256_hash"}.get(len(term), "hash")
        threat_type = "payload"
    confidence = 100 if f.profile == MALICIOUS and rng.random() < 0.5 else (
        75 if f.profile == MALICIOUS else 50)
    description = {"botnet_cc": "Indicator that identifies a botnet command&control server "
                                "(C&C)",
                   "payload_delivery": "Indicator that identifies a malware distribution "
                                       "server (payload delivery)",
                   "payload": "Indicator that identifies a malware sample (payload)"}
    entry = {
        "id": str(1_300_000 + f.rng_seed % 200_000), "ioc": ioc, "threat_type": threat_type,
        "threat_type_desc": description[threat_type], "ioc_type": ioc_type,
        "ioc_type_desc": f"{ioc_type} used by malware", "malware": family[2],
        "malware_printable": family[0], "malware_alias": f"{family[1]},{f.family}",
        "malware_malpedia": f"https://malpedia.caad.fkie.fraunhofer.de/details/{family[2]}",
        "confidence_level": confidence, "first_seen": _stamp(f.first_seen),
        "last_seen": _stamp(f.last_seen) if f.last_seen > f.first_seen else None,
        "reference": None, "reporter": REPORTERS[f.rng_seed % len(REPORTERS)],
        "tags": [family[0], "c2" if threat_type == "botnet_cc" else family[3]],
    }  # fmt: skip
    return {"query_status": "ok", "data": [entry]}


# --- MalwareBazaar ------------------------------------------------------------------------


def malwarebazaar_info(file_hash: str, f: Facts) -> dict[str, Any]:
    family = _family(f)
    if not listed(f):
        return {"query_status": "hash_not_found"}
    hashes = file_hashes(file_hash)
    file_type = family[3] if family else "exe"
    signature = family[0].replace(" ", "") if family else None
    sample = {
        "sha256_hash": hashes["sha256"], "sha3_384_hash": hashlib.sha3_384(
            hashes["sha256"].encode()).hexdigest(), "sha1_hash": hashes["sha1"],
        "md5_hash": hashes["md5"], "first_seen": _stamp(f.first_seen)[:19],
        "last_seen": _stamp(f.last_seen)[:19] if f.last_seen > f.first_seen else None,
        "file_name": f"{hashes['md5'][:8]}.{file_type}", "file_size": 20480 + f.rng_seed % 900000,
        "file_type_mime": "application/x-dosexec" if file_type != "elf"
        else "application/x-executable", "file_type": file_type,
        "reporter": REPORTERS[f.rng_seed % len(REPORTERS)], "origin_country": f.country[0],
        "anonymous": 0, "signature": signature, "imphash": None, "tlsh": None,
        "telfhash": None, "gimphash": None, "ssdeep": None, "dhash_icon": None,
        "comment": None, "archive_pw": None,
        "delivery_method": "email_attachment" if file_type in ("dll", "exe") else "web_download",
        "intelligence": {"clamav": None, "downloads": str(10 + f.rng_seed % 300),
                         "uploads": "1", "mail": None},
        "file_information": [], "ole_information": [], "yara_rules": None,
        "vendor_intel": {},
        "tags": [t for t in (signature, f.family, file_type) if t],
    }  # fmt: skip
    return {"query_status": "ok", "data": [sample]}


# --- AlienVault OTX -----------------------------------------------------------------------


def otx_general(indicator: str, section_type: str, f: Facts) -> dict[str, Any]:
    rng = random.Random(f.rng_seed ^ 0x07C)
    family = _family(f)
    if f.profile == MALICIOUS:
        count = rng.randint(3, 25)
    elif f.profile == SUSPICIOUS:
        count = rng.randint(0, 1)  # an indicator dump at most, naming nothing
    elif f.profile == BENIGN:
        count = rng.choice((0, 0, 1, 3))  # popular infrastructure lands in pulses too
    else:
        count = 0
    pulses = []
    for index in range(min(count, 10)):
        bad = f.profile in (MALICIOUS, SUSPICIOUS)
        printable = family[0] if f.profile == MALICIOUS and family else None
        families = ([{"id": printable, "display_name": printable, "target": None},
                     {"id": f.family, "display_name": f.family, "target": None}]
                    if printable else [])
        adversary = f.actor if f.profile == MALICIOUS and f.actor and index % 2 == 0 else ""
        name = f"{printable} activity {index + 1}" if printable else f"Indicator list {index + 1}"
        modified = f.last_seen - index * 86400
        pulses.append({
            "id": hashlib.md5(f"{f.value}{index}".encode(), usedforsecurity=False).hexdigest()[:24],
            "name": name, "description": "", "modified": _iso(modified),
            "created": _iso(f.first_seen), "tags": [printable.lower(), "c2"] if printable
            else ["list"], "references": [], "public": 1, "adversary": adversary,
            "targeted_countries": [], "malware_families": families,
            "attack_ids": [{"id": a, "name": n, "display_name": f"{a} - {n}"}
                           for a, n in ATTACK_IDS[: 2 if bad else 0]],
            "industries": [], "TLP": "white", "author": {"username": "AlienVault"},
            "indicator_count": 40 + index, "indicator_type_counts": {section_type: 40 + index},
        })  # fmt: skip
    validation = []
    if f.profile == BENIGN:
        validation = [{"source": "whitelist", "message": f"Whitelisted indicator {indicator}",
                       "name": "Whitelisted indicator"}]
        if f.alexa_rank:
            validation.append({"source": "majestic", "message": f"Rank: {f.alexa_rank}",
                               "name": "Whitelisted domain majestic"})
    return {
        "indicator": indicator, "type": section_type, "type_title": section_type,
        "base_indicator": {"indicator": indicator, "type": section_type},
        "reputation": 0, "whois": "", "sections": ["general", "reputation", "geo"],
        "validation": validation, "false_positive": [],
        "pulse_info": {"count": count, "pulses": pulses, "references": [],
                       "related": {"alienvault": {"adversary": [], "malware_families": [],
                                                  "industries": []},
                                   "other": {"adversary": [], "malware_families": [],
                                             "industries": []}}},
    }  # fmt: skip


# --- CrowdSec CTI -------------------------------------------------------------------------


def crowdsec_found(f: Facts) -> bool:
    return f.profile in (MALICIOUS, SUSPICIOUS, BENIGN)


def crowdsec_smoke(ip: str, f: Facts) -> dict[str, Any]:
    """/smoke/{ip} for an address CrowdSec knows (call only when crowdsec_found)."""
    rng = random.Random(f.rng_seed ^ 0xC5)
    if f.profile == MALICIOUS:
        reputation, confidence, behaviors = "malicious", "high", rng.sample(BEHAVIORS, 3)
        threat, noise = rng.randint(3, 5), rng.randint(5, 10)
    elif f.profile == SUSPICIOUS:
        reputation, confidence, behaviors = "suspicious", "medium", rng.sample(BEHAVIORS[2:], 1)
        threat, noise = rng.randint(1, 3), rng.randint(2, 6)
    else:
        reputation = "safe" if f.riot else "known"
        confidence, behaviors, threat, noise = "high", [], 0, rng.randint(0, 2)
    classifications = []
    if f.is_tor:
        classifications.append({"name": "proxy:tor", "label": "TOR exit node",
                                "description": "IP is being flagged as a TOR exit node."})
    if f.profile == MALICIOUS:
        classifications.append({"name": "community-blocklist", "label": "CrowdSec Community "
                                "Blocklist", "description": "IP belongs to the CrowdSec "
                                "Community Blocklist"})
    false_positives = []
    if f.riot:
        false_positives.append({"name": f"{f.riot[0]}:{f.riot[1].split()[0].lower()}",
                                "label": f.riot[1], "description": f"IP belongs to {f.riot[1]}."})
    code = f.country[0]
    overall = {"aggressiveness": threat, "threat": threat, "trust": threat,
               "anomaly": 1 if f.profile == MALICIOUS else 0, "total": threat}
    return {
        "ip_range_score": threat, "ip": ip, "ip_range": f"{ip.rsplit('.', 1)[0]}.0/24"
        if "." in ip else f"{ip}/64", "as_name": f.org, "as_num": f.asn,
        "ip_range_24": None, "ip_range_24_reputation": reputation, "ip_range_24_score": threat,
        "location": {"country": code, "city": f.city, "latitude": 0.0, "longitude": 0.0},
        "reverse_dns": None, "behaviors": [{"name": n, "label": label, "description": d}
                                           for n, label, d in behaviors],
        "history": {"first_seen": _iso(f.first_seen)[:19] + "+00:00",
                    "last_seen": _iso(f.last_seen)[:19] + "+00:00",
                    "full_age": max(1, (f.last_seen - f.first_seen) // 86400),
                    "days_age": max(1, (f.last_seen - f.first_seen) // 86400)},
        "classifications": {"false_positives": false_positives,
                            "classifications": classifications},
        "attack_details": [{"name": f"crowdsecurity/{n.replace(':', '-')}", "label": label,
                            "description": d, "references": []} for n, label, d in behaviors],
        "target_countries": {"US": 40, "DE": 20, "FR": 15} if behaviors else {},
        "background_noise_score": noise, "background_noise": "high" if noise >= 7 else "low",
        "scores": {"overall": overall, "last_day": overall, "last_week": overall,
                   "last_month": overall},
        "references": [], "reputation": reputation, "confidence": confidence,
        "mitre_techniques": [{"name": "T1110", "label": "Brute Force", "description": ""}]
        if behaviors else [], "cves": list(f.vulns) if f.profile == MALICIOUS else [],
    }  # fmt: skip


__all__ = ["crowdsec_found", "crowdsec_smoke", "listed", "malwarebazaar_info",
           "otx_general", "threatfox_search", "urlhaus_host", "urlhaus_payload", "urlhaus_url"]

"""Answer bodies of URLhaus, ThreatFox, MalwareBazaar, AlienVault OTX and CrowdSec CTI in their
documented shapes (abuse.ch API pages, OTX indicator `general` section, CrowdSec `/smoke`), for
the evaluation cases; times relative to `FETCHED_AT` like tests/eval/answers.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.eval.answers import Http, days_ago_iso
from tests.scoring.scoring_factories import FETCHED_AT


def _stamp(days: float) -> str:
    """abuse.ch's time form: "2026-11-28 14:02:11 UTC"."""
    return (FETCHED_AT - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- URLhaus -----------------------------------------------------------------------------------

def urlhaus_none() -> Http:
    return Http(200, {"query_status": "no_results"})


def urlhaus_url(url: str, *, status: str = "online", tags: list[str] | None = None,
                signature: str | None = None, file_type: str = "exe",
                added_days_ago: float = 1) -> Http:
    host = url.split("/")[2]
    payloads = [{"firstseen": _stamp(added_days_ago)[:10], "filename": url.rsplit("/", 1)[-1],
                 "file_type": file_type, "response_size": "151212",
                 "response_md5": "0" * 32, "response_sha256": "1" * 64,
                 "urlhaus_download": "https://urlhaus-api.abuse.ch/v1/download/" + "1" * 64 + "/",
                 "signature": signature, "virustotal": None, "imphash": None, "ssdeep": None,
                 "tlsh": None}] if signature or status == "online" else []
    return Http(200, {"query_status": "ok", "id": "3021457",
                      "urlhaus_reference": "https://urlhaus.abuse.ch/url/3021457/", "url": url,
                      "url_status": status, "host": host, "date_added": _stamp(added_days_ago),
                      "threat": "malware_download",
                      "blacklists": {"spamhaus_dbl": "not listed", "surbl": "not listed"},
                      "reporter": "abuse_ch", "larted": "true", "takedown_time_seconds": None,
                      "tags": tags or [], "payloads": payloads})


def urlhaus_host(host: str, *, online: int = 0, offline: int = 1, tags: list[str] | None = None,
                 first_days_ago: float = 30, url_count: int | None = None) -> Http:
    urls = [{"id": str(3_000_000 + i), "urlhaus_reference": f"https://urlhaus.abuse.ch/url/{i}/",
             "url": f"https://{host}/files/{i}/payload.zip",
             "url_status": "online" if i < online else "offline", "date_added": _stamp(i + 1),
             "threat": "malware_download", "reporter": "abuse_ch", "larted": "true",
             "takedown_time_seconds": None, "tags": tags or []}
            for i in range(online + offline)]
    return Http(200, {"query_status": "ok",
                      "urlhaus_reference": f"https://urlhaus.abuse.ch/host/{host}/",
                      "host": host, "firstseen": _stamp(first_days_ago),
                      "url_count": str(url_count or len(urls)),
                      "blacklists": {"spamhaus_dbl": "not listed", "surbl": "not listed"},
                      "urls": urls})


def urlhaus_payload(sha256: str, *, signature: str | None, file_type: str = "exe",
                    first_days_ago: float = 2) -> Http:
    return Http(200, {"query_status": "ok", "md5_hash": "2" * 32, "sha256_hash": sha256,
                      "file_type": file_type, "file_size": "201216", "signature": signature,
                      "firstseen": _stamp(first_days_ago), "lastseen": _stamp(0.5),
                      "url_count": "3", "urlhaus_download": "", "virustotal": None,
                      "imphash": None, "ssdeep": None, "tlsh": None,
                      "urls": [{"url_id": "1", "url": "http://203.0.113.9/a.exe",
                                "url_status": "online", "urlhaus_reference": "",
                                "filename": "a.exe", "firstseen": _stamp(2)[:10],
                                "lastseen": _stamp(1)[:10]}]})


# --- ThreatFox ---------------------------------------------------------------------------------

def threatfox_none() -> Http:
    return Http(200, {"query_status": "no_result", "data": "Your search did not yield any results"})


def threatfox(ioc: str, *, ioc_type: str, threat_type: str, malware: str, printable: str,
              alias: str | None = None, confidence: int = 75, first_days_ago: float = 3,
              last_days_ago: float | None = None, tags: list[str] | None = None) -> Http:
    return Http(200, {"query_status": "ok", "data": [{
        "id": "1234567", "ioc": ioc, "threat_type": threat_type, "threat_type_desc": "",
        "ioc_type": ioc_type, "ioc_type_desc": "", "malware": malware,
        "malware_printable": printable, "malware_alias": alias,
        "malware_malpedia": f"https://malpedia.caad.fkie.fraunhofer.de/details/{malware}",
        "confidence_level": confidence, "first_seen": _stamp(first_days_ago),
        "last_seen": _stamp(last_days_ago) if last_days_ago is not None else None,
        "reference": None, "reporter": "abuse_ch", "tags": tags or []}]})


# --- MalwareBazaar -----------------------------------------------------------------------------

def bazaar_none() -> Http:
    return Http(200, {"query_status": "hash_not_found"})


def bazaar(sha256: str, *, signature: str | None, file_type: str = "exe",
           tags: list[str] | None = None, first_days_ago: float = 2) -> Http:
    return Http(200, {"query_status": "ok", "data": [{
        "sha256_hash": sha256, "sha3_384_hash": "3" * 96, "sha1_hash": "4" * 40,
        "md5_hash": "5" * 32, "first_seen": _stamp(first_days_ago)[:19], "last_seen": None,
        "file_name": f"sample.{file_type}", "file_size": 245760,
        "file_type_mime": "application/x-dosexec", "file_type": file_type,
        "reporter": "abuse_ch", "origin_country": "DE", "anonymous": 0, "signature": signature,
        "imphash": None, "tlsh": None, "telfhash": None, "gimphash": None, "ssdeep": None,
        "dhash_icon": None, "comment": None, "archive_pw": None,
        "delivery_method": "email_attachment",
        "intelligence": {"clamav": None, "downloads": "41", "uploads": "1", "mail": None},
        "file_information": [], "ole_information": [], "yara_rules": None, "vendor_intel": {},
        "tags": tags or []}]})


# --- AlienVault OTX ----------------------------------------------------------------------------

def otx(indicator: str, kind: str, *, pulses: list[dict[str, Any]] | None = None,
        whitelisted: str | None = None) -> Http:
    """`pulses`: dicts with name, families, adversary, days_ago; `whitelisted`: a validation
    entry's name (OTX's `validation` list)."""
    bodies = [{"id": f"{i:024x}", "name": p.get("name", f"pulse {i}"), "description": "",
               "modified": days_ago_iso(p.get("days_ago", 10)).replace("+00:00", ".000000"),
               "created": days_ago_iso(p.get("days_ago", 10) + 1).replace("+00:00", ".000000"),
               "tags": p.get("tags", []), "references": [], "public": 1,
               "adversary": p.get("adversary", ""), "targeted_countries": [],
               "malware_families": [{"id": f, "display_name": f, "target": None}
                                    for f in p.get("families", [])],
               "attack_ids": [], "industries": [], "TLP": "white",
               "author": {"username": "AlienVault"}}
              for i, p in enumerate(pulses or [])]
    validation = ([{"source": "whitelist", "message": f"{whitelisted}: {indicator}",
                    "name": whitelisted}] if whitelisted else [])
    return Http(200, {"indicator": indicator, "type": kind, "type_title": kind,
                      "reputation": 0, "validation": validation, "false_positive": [],
                      "sections": ["general"],
                      "pulse_info": {"count": len(bodies), "pulses": bodies, "references": [],
                                     "related": {}}})


# --- CrowdSec CTI ------------------------------------------------------------------------------

def crowdsec_none() -> Http:
    return Http(404, {"message": "IP address information not found"})


def crowdsec(ip: str, *, reputation: str, behaviors: list[str] | None = None,
             false_positives: list[str] | None = None, threat: int = 0,
             last_days_ago: float = 1) -> Http:
    scores = {"aggressiveness": threat, "threat": threat, "trust": threat, "anomaly": 0,
              "total": threat}
    return Http(200, {
        "ip": ip, "ip_range_score": threat, "ip_range": f"{ip}/24", "as_name": "AS-EXAMPLE",
        "as_num": 64500, "location": {"country": "NL", "city": "", "latitude": 0.0,
                                      "longitude": 0.0},
        "reverse_dns": None,
        "behaviors": [{"name": b, "label": b, "description": ""} for b in behaviors or []],
        "history": {"first_seen": days_ago_iso(last_days_ago + 20),
                    "last_seen": days_ago_iso(last_days_ago), "full_age": 21, "days_age": 20},
        "classifications": {"false_positives": [{"name": f, "label": f, "description": ""}
                                                for f in false_positives or []],
                            "classifications": []},
        "attack_details": [], "target_countries": {}, "background_noise_score": 3,
        "scores": {"overall": scores, "last_day": scores, "last_week": scores,
                   "last_month": scores},
        "references": [], "reputation": reputation, "confidence": "high",
        "mitre_techniques": [], "cves": []})

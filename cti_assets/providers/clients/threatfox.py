"""ThreatFox (abuse.ch) client: IOC search (`POST /` with the JSON body
`{"query": "search_ioc", "search_term": ...}`, Auth-Key header).

ThreatFox stores IP indicators as `ip:port`, so an address is searched as a term and the
answer filtered here to that address (any port); names, URLs and hashes are searched with
`exact_match` and filtered the same way, so a substring hit never counts. Several IOCs may
match: their families, threat types and tags are merged, the highest confidence kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cti_assets.providers import base
from cti_assets.providers.clients.abusech import AbuseChClient, iso_time, strings, to_int
from cti_assets.providers.http import Request

IP_TYPES = ("IPv4-Addr", "IPv6-Addr")


def _matches(ioc: Any, entity_type: str, value: str) -> bool:
    if not isinstance(ioc, str):
        return False
    if entity_type in IP_TYPES:
        host, _, port = ioc.rpartition(":")
        return ioc == value or (host == value and port.isdigit())
    if entity_type == "Url":
        return ioc == value
    return ioc.lower() == value.lower()


def _names(entries: Iterable[dict[str, Any]], key: str) -> list[str]:
    names: list[str] = []
    for entry in entries:
        raw = entry.get(key)
        if isinstance(raw, str):
            names.extend(part.strip() for part in raw.split(","))
        elif isinstance(raw, list):
            names.extend(str(part) for part in raw)
    return list(dict.fromkeys(n for n in names if n and n.lower() not in ("none", "unknown")))


class ThreatFoxClient(AbuseChClient):
    provider = base.THREATFOX

    def build_request(self, entity_type: str, value: str) -> Request:
        if not value.strip():
            raise ValueError("empty observable")
        body: dict[str, Any] = {"query": "search_ioc", "search_term": value}
        if entity_type not in IP_TYPES:
            body["exact_match"] = True
        return Request(self.url(""), headers=self.auth_headers(), method="POST", json_body=body)

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        data = payload["data"]
        if not isinstance(data, list):
            raise TypeError("data is not a list")
        entries = [e for e in data if isinstance(e, dict) and _matches(e.get("ioc"), entity_type,
                                                                         value)]
        if not entries:
            return None
        confidences = [c for c in (to_int(e.get("confidence_level")) for e in entries)
                       if c is not None]
        first = sorted(t for t in (iso_time(e.get("first_seen")) for e in entries) if t)
        last = sorted(t for t in (iso_time(e.get("last_seen") or e.get("first_seen"))
                                  for e in entries) if t)
        return {
            "ioc_count": len(entries),
            "threat_types": _names(entries, "threat_type"),
            "malware": _names(entries, "malware_printable"),
            "malware_aliases": _names(entries, "malware_alias"),
            "max_confidence": max(confidences) if confidences else None,
            "tags": strings([t for e in entries for t in (e.get("tags") or [])]),
            "first_seen": first[0] if first else None,
            "last_seen": last[-1] if last else None,
        }

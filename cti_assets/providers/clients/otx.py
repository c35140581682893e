"""AlienVault OTX client: the `general` section of an indicator
(`GET /indicators/{IPv4|IPv6|domain|hostname|url|file}/{indicator}/general`, header
X-OTX-API-KEY), which carries the pulses (with their adversary and malware family names), the
reputation and OTX's own validation (whitelists, popular domains, known false positives).

The indicator is one path segment, percent-encoded with nothing kept (a URL's `/`, `?` and
`#` included) and checked first, so no value can change the path. OTX answers any well-formed
indicator: one in no pulse is an answer (pulse_count 0), a 404 is `not_found`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Any

from cti_assets.providers import base
from cti_assets.providers.http import ProviderClient, Request, path_segment

SECTION_TYPES = {
    "IPv4-Addr": "IPv4",
    "IPv6-Addr": "IPv6",
    "Domain-Name": "domain",
    "Hostname": "hostname",
    "Url": "url",
    "StixFile": "file",
}
MAX_TAGS = 20
_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_HASH = re.compile(r"^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")


def validate(entity_type: str, value: str) -> None:
    """ValueError unless `value` is a well-formed indicator of its type."""
    if entity_type in ("IPv4-Addr", "IPv6-Addr"):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("not an IP address") from None
    elif entity_type in ("Domain-Name", "Hostname"):
        if not _NAME.match(value) or ".." in value:
            raise ValueError("not a domain name")
    elif entity_type == "StixFile":
        if not _HASH.match(value):
            raise ValueError("not an MD5, SHA-1 or SHA-256 hash")
    elif entity_type == "Url":
        if "://" not in value or any(ch.isspace() or ord(ch) < 32 for ch in value):
            raise ValueError("not a URL")
    else:
        raise ValueError(f"OTX does not look up {entity_type}")


def _names(pulses: list[dict[str, Any]], key: str, prefer: str = "display_name") -> list[str]:
    """Names under `key` over the pulses: strings, or objects' `prefer` (else `id`) field."""
    names: list[str] = []
    for pulse in pulses:
        raw = pulse.get(key)
        items = raw if isinstance(raw, list) else [raw]
        for item in items:
            if isinstance(item, dict):
                item = item.get(prefer) or item.get("id")
            if isinstance(item, str) and item.strip():
                names.append(item.strip())
    return list(dict.fromkeys(names))


class OTXClient(ProviderClient):
    provider = base.OTX

    def build_request(self, entity_type: str, value: str) -> Request:
        section_type = SECTION_TYPES.get(entity_type)
        if section_type is None:
            raise ValueError(f"OTX does not look up {entity_type}")
        validate(entity_type, value)
        return Request(self.url("indicators", section_type, path_segment(value), "general"),
                       headers={"X-OTX-API-KEY": self.settings.api_key or ""})

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        info = payload["pulse_info"]
        if not isinstance(info, dict):
            raise TypeError("pulse_info is not an object")
        pulses = [p for p in info.get("pulses") or [] if isinstance(p, dict)]
        count = info.get("count")
        count = count if isinstance(count, int) and not isinstance(count, bool) else len(pulses)
        tags: Counter[str] = Counter(str(t) for p in pulses for t in p.get("tags") or [] if t)
        validation = payload.get("validation") or []
        if not isinstance(validation, list):
            raise TypeError("validation is not a list")
        checks = [str(v.get("name") or v.get("source")) for v in validation
                  if isinstance(v, dict) and (v.get("name") or v.get("source"))]
        modified = sorted(str(p["modified"]) for p in pulses if p.get("modified"))
        return {
            "pulse_count": count,
            "malware_families": _names(pulses, "malware_families"),
            "adversaries": _names(pulses, "adversary"),
            "attack_ids": _names(pulses, "attack_ids", prefer="id"),
            "tags": [t for t, _ in tags.most_common(MAX_TAGS)],
            "whitelisted": bool(checks),
            "validation": list(dict.fromkeys(checks)),
            "latest_pulse": modified[-1] if modified else None,
        }

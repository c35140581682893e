"""SecurityTrails API v1 `/domain/{hostname}` client (domains and hostnames); context only.

The free tier is 50 queries a month, so every call counts. An unknown domain is documented
neither way: a 404, or a 200 with no DNS record of any type and no subdomains, is `not_found`.
"""

from __future__ import annotations

from typing import Any

from cti_assets.providers import base
from cti_assets.providers.clients.values import json_int
from cti_assets.providers.http import ProviderClient, Request, path_segment


def _values(dns: dict[str, Any], record: str, key: str) -> list[str]:
    section = dns.get(record) or {}
    if not isinstance(section, dict):
        raise TypeError(f"current_dns.{record} is not an object")
    values = section.get("values") or []
    return sorted({str(v[key]) for v in values if isinstance(v, dict) and v.get(key)})


class SecurityTrailsClient(ProviderClient):
    provider = base.SECURITYTRAILS

    def build_request(self, entity_type: str, value: str) -> Request:
        return Request(
            self.url("domain", path_segment(value)),
            headers={"APIKEY": self.settings.api_key or ""},
        )

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        dns = payload["current_dns"] if isinstance(payload, dict) else None
        if not isinstance(dns, dict):
            raise TypeError("current_dns is not an object")
        a_records = _values(dns, "a", "ip")
        ns_records = _values(dns, "ns", "nameserver")
        mx_records = _values(dns, "mx", "hostname")
        seen = [s.get("first_seen") for s in dns.values() if isinstance(s, dict)]
        first_seen = min((str(s) for s in seen if s), default=None)
        has_records = any(isinstance(s, dict) and s.get("values") for s in dns.values())
        subdomains = json_int(payload.get("subdomain_count"))
        if not has_records and not subdomains:
            return None
        return {
            "apex_domain": payload.get("apex_domain"),
            "alexa_rank": json_int(payload.get("alexa_rank")),
            "a_records": a_records,
            "ns_records": ns_records,
            "mx_records": mx_records,
            "subdomain_count": subdomains,
            "first_seen": first_seen,
        }

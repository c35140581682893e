"""AbuseIPDB API v2 `/check` client (IPv4 and IPv6).

AbuseIPDB never answers 404: an address nobody reported comes back 200 with score 0 and zero
reports. That is an answer ("no reports in 90 days"), so it is `ok` with its fields, and
scoring decides how little it weighs; it is not `not_found`. The daily quota left is read
from X-RateLimit-Remaining; "Daily rate limit ... exceeded" (429) is quota_exhausted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from cti_assets.providers import base
from cti_assets.providers.clients.values import json_int
from cti_assets.providers.http import ProviderClient, Request

MAX_AGE_DAYS = 90


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def categories_by_frequency(reports: Any) -> list[int] | None:
    """Report category ids, most frequent first (ties: lower id first); None without reports."""
    if reports is None:
        return None
    if not isinstance(reports, list):
        raise TypeError("reports is not a list")
    counts: Counter[int] = Counter()
    for report in reports:
        for category in (report or {}).get("categories") or []:
            counts[int(category)] += 1
    return [cat for cat, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


class AbuseIPDBClient(ProviderClient):
    provider = base.ABUSEIPDB

    def build_request(self, entity_type: str, value: str) -> Request:
        if not value.strip():
            raise ValueError("empty IP address")
        return Request(
            self.url("check"),
            params={"ipAddress": value, "maxAgeInDays": str(MAX_AGE_DAYS), "verbose": "true"},
            headers={"Key": self.settings.api_key or ""},
        )

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        data = payload["data"]
        if not isinstance(data, dict) or "abuseConfidenceScore" not in data:
            raise KeyError("data.abuseConfidenceScore")
        return {
            "abuse_confidence_score": json_int(data.get("abuseConfidenceScore")),
            "total_reports": json_int(data.get("totalReports")),
            "num_distinct_users": json_int(data.get("numDistinctUsers")),
            "is_whitelisted": _bool(data.get("isWhitelisted")),
            "is_tor": _bool(data.get("isTor")),
            "usage_type": data.get("usageType"),
            "country_code": data.get("countryCode"),
            "isp": data.get("isp"),
            "categories": categories_by_frequency(data.get("reports")),
            "last_reported_at": data.get("lastReportedAt"),
        }

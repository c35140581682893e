"""VirusTotal API v3 client: IPs, domains (and hostnames), URLs and file hashes.

One GET per observable (the public API has no bulk lookup); the key travels in the
`x-apikey` header. URLs are addressed by VT's id: URL-safe base64 of the URL without padding.
"""

from __future__ import annotations

import base64
from typing import Any

from cti_assets.providers import base
from cti_assets.providers.clients.values import json_int
from cti_assets.providers.http import (
    HttpAnswer,
    Outcome,
    ProviderClient,
    Request,
    error_text,
    path_segment,
)

COLLECTIONS = {
    "IPv4-Addr": "ip_addresses",
    "IPv6-Addr": "ip_addresses",
    "Domain-Name": "domains",
    "Hostname": "domains",
    "Url": "urls",
    "StixFile": "files",
}


def url_id(url: str) -> str:
    """VT's identifier of a URL: unpadded URL-safe base64 of its UTF-8 bytes (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(url.encode("utf-8")).decode("ascii").rstrip("=")


def _strings(values: Any) -> list[str] | None:
    if values is None:
        return None
    if not isinstance(values, list):
        raise TypeError("expected a list")
    return [str(v) for v in values]


class VirusTotalClient(ProviderClient):
    provider = base.VIRUSTOTAL

    def build_request(self, entity_type: str, value: str) -> Request:
        collection = COLLECTIONS.get(entity_type)
        if collection is None:
            raise ValueError(f"VirusTotal does not look up {entity_type}")
        ident = url_id(value) if entity_type == "Url" else value
        return Request(
            self.url(collection, path_segment(ident)),
            headers={"x-apikey": self.settings.api_key or "", "Accept-Encoding": "gzip"},
        )

    def parse_not_found(self, answer: HttpAnswer) -> bool:
        try:
            payload = answer.json()
        except (ValueError, UnicodeDecodeError):
            return False
        error = payload.get("error") if isinstance(payload, dict) else None
        return isinstance(error, dict) and error.get("code", "NotFoundError") == "NotFoundError"

    def classify_429(self, answer: HttpAnswer) -> Outcome:
        """QuotaExceededError does not say which quota; with the local per-minute limit kept,
        it is the daily (or monthly) one, so the run stops. TooManyRequestsError is a throttle."""
        outcome = super().classify_429(answer)
        if outcome.reason == base.ERR_RATE and "QuotaExceededError" in (outcome.message or ""):
            outcome.reason, outcome.quota_window = base.ERR_QUOTA, "day"
            outcome.retry_after_s = None
            outcome.message = f"HTTP 429: quota exhausted (daily or monthly): {error_text(answer)}"
        return outcome

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        attributes = payload["data"]["attributes"]
        if not isinstance(attributes, dict):
            raise TypeError("data.attributes is not an object")
        stats = attributes.get("last_analysis_stats") or {}
        votes = attributes.get("total_votes") or {}
        categories = attributes.get("categories")
        return {
            "malicious": json_int(stats.get("malicious")),
            "suspicious": json_int(stats.get("suspicious")),
            "harmless": json_int(stats.get("harmless")),
            "undetected": json_int(stats.get("undetected")),
            "reputation": json_int(attributes.get("reputation")),
            "votes_malicious": json_int(votes.get("malicious")),
            "votes_harmless": json_int(votes.get("harmless")),
            "tags": _strings(attributes.get("tags")),
            "threat_names": _threat_names(attributes),
            "categories": sorted({str(c) for c in categories.values()})
            if isinstance(categories, dict) else None,
            "last_analysis_date": json_int(attributes.get("last_analysis_date")),
            "creation_date": json_int(attributes.get("creation_date")),
            "popularity_rank": _best_rank(attributes.get("popularity_ranks")),
            "first_submission_date": json_int(attributes.get("first_submission_date")),
        }


def _best_rank(ranks: Any) -> int | None:
    """The best (lowest) rank over the rankers of `popularity_ranks` ({ranker: {rank, ...}})."""
    if not isinstance(ranks, dict):
        return None
    values = [json_int(entry.get("rank")) for entry in ranks.values() if isinstance(entry, dict)]
    return min((v for v in values if v is not None and v > 0), default=None)


def _threat_names(attributes: dict[str, Any]) -> list[str] | None:
    """File family labels (popular_threat_classification) or a URL's threat_names."""
    names: list[str] = []
    classification = attributes.get("popular_threat_classification")
    if isinstance(classification, dict):
        label = classification.get("suggested_threat_label")
        if label:
            names.append(str(label))
        for entry in classification.get("popular_threat_name") or []:
            if isinstance(entry, dict) and entry.get("value"):
                names.append(str(entry["value"]))
    names.extend(_strings(attributes.get("threat_names")) or [])
    if not names and classification is None and "threat_names" not in attributes:
        return None
    return list(dict.fromkeys(names))

"""CrowdSec CTI client: `GET /smoke/{ip}` with the `x-api-key` header (IPv4 and IPv6).

CrowdSec answers from its network of agents: a reputation (malicious, suspicious, known, safe,
unknown), the behaviours and classifications behind it, known false positives (CDNs,
crawlers) and scores. An address no agent reported is a 404 (`not_found`). Its API gateway
answers 403 to a bad key, 429 "Too Many Requests" to a burst (retried) and 429 "Limit Exceeded"
once the key's daily quota (50 on the community plan) is spent (the run stops).
"""

from __future__ import annotations

import ipaddress
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


def _names(entries: Any) -> list[str] | None:
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise TypeError("expected a list")
    return list(dict.fromkeys(str(e.get("name")) for e in entries
                              if isinstance(e, dict) and e.get("name")))


class CrowdSecClient(ProviderClient):
    provider = base.CROWDSEC

    def build_request(self, entity_type: str, value: str) -> Request:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("CrowdSec CTI looks up IP addresses only") from None
        return Request(self.url("smoke", path_segment(value)),
                       headers={"x-api-key": self.settings.api_key or ""})

    def classify_429(self, answer: HttpAnswer) -> Outcome:
        """API Gateway's usage plan: "Limit Exceeded" is the daily quota, anything else a
        throttle."""
        outcome = super().classify_429(answer)
        if "limit exceeded" in error_text(answer).lower():
            outcome.reason, outcome.quota_window = base.ERR_QUOTA, "day"
            outcome.retry_after_s = None
            outcome.message = f"HTTP 429: daily quota exhausted: {error_text(answer)}"
        return outcome

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        if not isinstance(payload, dict) or "ip" not in payload:
            raise KeyError("ip")
        classifications = payload.get("classifications") or {}
        scores = payload.get("scores") or {}
        history = payload.get("history") or {}
        if not all(isinstance(x, dict) for x in (classifications, scores, history)):
            raise TypeError("classifications, scores and history must be objects")
        overall = scores.get("overall") or {}
        return {
            "reputation": payload.get("reputation"),
            "confidence": payload.get("confidence"),
            "behaviors": _names(payload.get("behaviors")),
            "classifications": _names(classifications.get("classifications")),
            "false_positives": _names(classifications.get("false_positives")),
            "score_threat": json_int(overall.get("threat")) if isinstance(overall, dict) else None,
            "score_total": json_int(overall.get("total")) if isinstance(overall, dict) else None,
            "background_noise_score": json_int(payload.get("background_noise_score")),
            "last_seen": history.get("last_seen"),
            "as_name": payload.get("as_name"),
        }

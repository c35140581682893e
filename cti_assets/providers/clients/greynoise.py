"""GreyNoise client: Community v3 (`/v3/community/{ip}`, key optional) or the paid v3 IP API.

Community answers an IP it never saw with a 404 carrying a full body (`noise: false, riot:
false`); that is `not_found`, never benign. A 429 whose body names a daily plan limit is
quota_exhausted, so the run stops instead of reporting success (the OpenCTI connector's bug).
"""

from __future__ import annotations

from typing import Any

from cti_assets.providers import base
from cti_assets.providers.http import ProviderClient, Request, path_segment


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _tag_names(tags: Any) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, dict):
        tags = [tags]
    if not isinstance(tags, list):
        raise TypeError("tags is not a list")
    names = [str(t.get("name") or t.get("slug")) if isinstance(t, dict) else str(t) for t in tags]
    return sorted(set(names))


class GreyNoiseClient(ProviderClient):
    provider = base.GREYNOISE

    def build_request(self, entity_type: str, value: str) -> Request:
        headers = {"key": self.settings.api_key} if self.settings.api_key else {}
        if self.settings.paid:
            return Request(self.url("v3", "ip", path_segment(value)), headers=headers)
        return Request(self.url("v3", "community", path_segment(value)), headers=headers)

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        if not isinstance(payload, dict):
            raise TypeError("body is not an object")
        if self.settings.paid:
            return self._parse_v3(payload)
        if "noise" not in payload and "riot" not in payload:
            raise KeyError("noise")
        return {
            "noise": _bool(payload.get("noise")),
            "riot": _bool(payload.get("riot")),
            "classification": payload.get("classification"),
            "name": payload.get("name"),
            "trust_level": None,
            "tags": None,
            "last_seen": payload.get("last_seen"),
        }

    def _parse_v3(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        scanner = payload.get("internet_scanner_intelligence") or {}
        business = payload.get("business_service_intelligence") or {}
        if not isinstance(scanner, dict) or not isinstance(business, dict):
            raise TypeError("intelligence sections are not objects")
        if "ip" not in payload and not scanner and not business:
            raise KeyError("ip")
        noise, riot = _bool(scanner.get("found")), _bool(business.get("found"))
        if noise is False and riot is False:
            return None
        trust = business.get("trust_level")
        return {
            "noise": noise,
            "riot": riot,
            "classification": scanner.get("classification"),
            "name": business.get("name") if riot else scanner.get("actor"),
            "trust_level": str(trust) if trust not in (None, "") else None,
            "tags": _tag_names(scanner.get("tags")),
            "last_seen": scanner.get("last_seen"),
        }

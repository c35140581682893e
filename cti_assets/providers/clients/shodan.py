"""Shodan clients: the host API (`/shodan/host/{ip}?key=`) and the keyless InternetDB.

Since 2023 a free Shodan key without a membership gets 403 on host lookups. When that happens
the shodan provider answers from InternetDB instead (ports, vulns, tags, hostnames; no org, ASN
or country), says so in the result's message, and stops trying the host API for this client.
Without a key the client also answers from InternetDB, but the runner skips a keyless shodan
provider (no_key) before the client is asked: the shodan_internetdb provider already covers that
case, and calling InternetDB twice would only spend its budget.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from cti_assets.providers import base
from cti_assets.providers.http import (
    Fetched,
    ProviderClient,
    Request,
    path_segment,
)

if TYPE_CHECKING:
    from cti_assets.providers.config import ProviderSettings
    from cti_assets.providers.ratelimit import SharedLimiter

FALLBACK_NOTE = "Shodan host API refused the key (403: no membership); answered from InternetDB"
NO_KEY_NOTE = "no Shodan API key; answered from InternetDB"


def _sorted_strings(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, dict):  # per-banner vulns are keyed by CVE
        values = list(values)
    if not isinstance(values, list):
        raise TypeError("expected a list")
    return sorted({str(v) for v in values})


def _ports(values: Any) -> list[int]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise TypeError("expected a list of ports")
    return sorted({int(v) for v in values})


class InternetDBClient(ProviderClient):
    provider = base.INTERNETDB
    needs_key = False

    def build_request(self, entity_type: str, value: str) -> Request:
        return Request(self.url(path_segment(value)))

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        if not isinstance(payload, dict) or "ports" not in payload:
            raise KeyError("ports")
        return {
            "ports": _ports(payload.get("ports")),
            "vulns": _sorted_strings(payload.get("vulns")),
            "tags": _sorted_strings(payload.get("tags")),
            "cpes": _sorted_strings(payload.get("cpes")),
            "hostnames": _sorted_strings(payload.get("hostnames")),
        }


class ShodanClient(ProviderClient):
    provider = base.SHODAN

    def __init__(self, settings: ProviderSettings, limiter: SharedLimiter | None = None, *,
                 internetdb: InternetDBClient | None = None, **kwargs: Any) -> None:
        super().__init__(settings, limiter, **kwargs)
        self.internetdb = internetdb
        self._membership_denied = threading.Event()

    def build_request(self, entity_type: str, value: str) -> Request:
        return Request(
            self.url("shodan", "host", path_segment(value)),
            params={"key": self.settings.api_key or ""},
        )

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        if not isinstance(payload, dict) or "ip_str" not in payload and "ports" not in payload:
            raise KeyError("ip_str")
        return {
            "ports": _ports(payload.get("ports")),
            "vulns": _sorted_strings(payload.get("vulns")),
            "tags": _sorted_strings(payload.get("tags")),
            "org": payload.get("org"),
            "asn": str(payload["asn"]) if payload.get("asn") else None,
            "country_code": payload.get("country_code"),
            "hostnames": _sorted_strings(payload.get("hostnames")),
        }

    def fetch(self, entity_type: str, value: str) -> Fetched:
        if not self.settings.api_key and self.internetdb is not None:
            return self._from_internetdb(entity_type, value, NO_KEY_NOTE)
        if not self._membership_denied.is_set():
            fetched = super().fetch(entity_type, value)
            refused = fetched.result.reason == base.ERR_AUTH and fetched.result.http_status == 403
            if not refused or self.internetdb is None:
                return fetched
            self._membership_denied.set()
        return self._from_internetdb(entity_type, value, FALLBACK_NOTE)

    def _from_internetdb(self, entity_type: str, value: str, note: str) -> Fetched:
        assert self.internetdb is not None
        fetched = self.internetdb.fetch(entity_type, value)
        result = fetched.result
        result.provider = self.provider
        if result.status == base.OK:
            result.fields = self.complete_fields(
                {k: v for k, v in result.fields.items() if k != "cpes"}
            )
        result.message = note + (f"; {result.message}" if result.message else "")
        return fetched

    def close(self) -> None:
        super().close()
        if self.internetdb is not None:
            self.internetdb.close()
            if self.internetdb.limiter is not None:
                self.internetdb.limiter.close()

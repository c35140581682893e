"""URLhaus (abuse.ch) client: malware URLs, the hosts that serve them and their payloads.

`POST /url/` (form `url=`), `POST /host/` (`host=`, a name or an IPv4 address) and
`POST /payload/` (`md5_hash=` or `sha256_hash=`); the Auth-Key header carries the key. URLhaus
only lists malware distribution, so "no_results" is the usual, innocent answer. A SHA-1 has no
payload lookup: it is skipped as out of scope without a call.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from cti_assets.providers import base
from cti_assets.providers.clients.abusech import AbuseChClient, iso_time, strings, to_int
from cti_assets.providers.http import Fetched, Request

HASH_FIELDS = {32: "md5_hash", 64: "sha256_hash"}


def _blacklisted(blacklists: Any) -> bool | None:
    if not isinstance(blacklists, dict):
        return None
    return any(isinstance(v, str) and v.strip().lower() not in ("not listed", "")
               for v in blacklists.values())


def _online(urls: list[Any]) -> int:
    return sum(1 for u in urls if isinstance(u, dict) and u.get("url_status") == "online")


class URLhausClient(AbuseChClient):
    provider = base.URLHAUS

    def build_request(self, entity_type: str, value: str) -> Request:
        if not value.strip():
            raise ValueError("empty observable")
        if entity_type == "Url":
            endpoint, form = "url", {"url": value}
        elif entity_type == "StixFile":
            field = HASH_FIELDS.get(len(value))
            if field is None or not all(c in "0123456789abcdefABCDEF" for c in value):
                raise ValueError("URLhaus payload lookups take an MD5 or SHA-256 hash")
            endpoint, form = "payload", {field: value.lower()}
        else:
            endpoint, form = "host", {"host": value}
        return Request(self.url(endpoint, ""), headers=self.auth_headers(), method="POST",
                       form=form)

    def fetch(self, entity_type: str, value: str) -> Fetched:
        if entity_type == "StixFile" and len(value) == 40:
            result = base.LookupResult(self.provider, entity_type, value, base.SKIPPED,
                                       base.SKIP_OUT_OF_SCOPE,
                                       message="URLhaus looks payloads up by MD5 or SHA-256 "
                                       "only")
            return Fetched(result, None, attempts=0)
        return super().fetch(entity_type, value)

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        if not isinstance(payload, dict):
            raise TypeError("body is not an object")
        if entity_type == "Url":
            return self._url(payload)
        if entity_type == "StixFile":
            return self._payload(payload)
        return self._host(payload)

    def _url(self, body: dict[str, Any]) -> dict[str, Any]:
        if "url_status" not in body:
            raise KeyError("url_status")
        payloads = body.get("payloads") or []
        if not isinstance(payloads, list):
            raise TypeError("payloads is not a list")
        signatures = strings([p.get("signature") for p in payloads if isinstance(p, dict)])
        file_types = [p.get("file_type") for p in payloads if isinstance(p, dict)]
        return {
            "url_status": body.get("url_status"),
            "threat": body.get("threat"),
            "tags": strings(body.get("tags")),
            "signatures": signatures,
            "url_count": 1,
            "online_url_count": int(body.get("url_status") == "online"),
            "file_type": next((str(t) for t in file_types if t), None),
            "first_seen": iso_time(body.get("date_added")),
            "blacklisted": _blacklisted(body.get("blacklists")),
            "reference": body.get("urlhaus_reference"),
        }

    def _host(self, body: dict[str, Any]) -> dict[str, Any]:
        urls = body.get("urls")
        if not isinstance(urls, list):
            raise KeyError("urls")
        tags = strings([t for u in urls if isinstance(u, dict) for t in (u.get("tags") or [])])
        threats = Counter(u.get("threat") for u in urls if isinstance(u, dict) and u.get("threat"))
        return {
            "url_status": None,
            "threat": threats.most_common(1)[0][0] if threats else None,
            "tags": tags,
            "signatures": None,
            "url_count": to_int(body.get("url_count")) or len(urls),
            "online_url_count": _online(urls),
            "file_type": None,
            "first_seen": iso_time(body.get("firstseen")),
            "blacklisted": _blacklisted(body.get("blacklists")),
            "reference": body.get("urlhaus_reference"),
        }

    def _payload(self, body: dict[str, Any]) -> dict[str, Any]:
        if "sha256_hash" not in body and "md5_hash" not in body:
            raise KeyError("sha256_hash")
        urls = body.get("urls") or []
        if not isinstance(urls, list):
            raise TypeError("urls is not a list")
        signature = body.get("signature")
        return {
            "url_status": None,
            "threat": "malware_download",
            "tags": None,
            "signatures": [str(signature)] if signature else [],
            "url_count": to_int(body.get("url_count")) or len(urls),
            "online_url_count": _online(urls),
            "file_type": body.get("file_type"),
            "first_seen": iso_time(body.get("firstseen")),
            "blacklisted": None,
            "reference": None,
        }

"""What URLhaus, ThreatFox and MalwareBazaar share: abuse.ch's Auth-Key header, POST bodies
(the observable travels in the body, never in the path), and answers that say what happened in
`query_status` on an HTTP 200 rather than through the status code.

`no_results` (URLhaus), `no_result` (ThreatFox) and `hash_not_found` (MalwareBazaar) are
`not_found`; `unknown_auth_key` is an auth error even on a 200; `illegal_...`, `invalid_...`
and `no_..._provided` mean the request was refused (bad_request); anything else is malformed.
"""

from __future__ import annotations

import re
from typing import Any

from cti_assets.providers import base
from cti_assets.providers.http import HttpAnswer, Outcome, ProviderClient, int_header

NOT_FOUND_STATUSES = frozenset({"no_results", "no_result", "hash_not_found"})
AUTH_STATUSES = frozenset({"unknown_auth_key", "unknown_auth", "auth_key_missing"})
_REFUSED = re.compile(r"^(illegal_|invalid_|no_.*_provided$|unknown_(query|selector))")
_ABUSECH_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?: ?UTC)?$")


def iso_time(value: Any) -> str | None:
    """abuse.ch's "2024-05-02 08:11:23 UTC" (or without "UTC": their times are UTC) as
    ISO-8601 with offset; a date alone stays a date; anything else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    match = _ABUSECH_TIME.match(text)
    if match:
        return f"{match.group(1)}T{match.group(2)}+00:00"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return text
    return None


def to_int(value: Any) -> int | None:
    """abuse.ch sends counts as strings ("42") or numbers; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def strings(values: Any) -> list[str] | None:
    """A list of non-empty strings, order kept, duplicates dropped; None when absent."""
    if values is None:
        return None
    if not isinstance(values, list):
        raise TypeError("expected a list")
    return list(dict.fromkeys(str(v) for v in values if v not in (None, "")))


class AbuseChClient(ProviderClient):
    """Base of the three abuse.ch clients: Auth-Key and query_status classification."""

    def auth_headers(self) -> dict[str, str]:
        return {"Auth-Key": self.settings.api_key or ""}

    def classify(self, entity_type: str, value: str, answer: HttpAnswer) -> Outcome:
        if answer.status == 200 and not answer.too_large and not answer.looks_html:
            try:
                payload = answer.json()
            except (ValueError, UnicodeDecodeError):
                payload = None
            query_status = payload.get("query_status") if isinstance(payload, dict) else None
            outcome = self._query_status_outcome(query_status, answer)
            if outcome is not None:
                return outcome
        return super().classify(entity_type, value, answer)

    def _query_status_outcome(self, query_status: Any, answer: HttpAnswer) -> Outcome | None:
        """The outcome a non-ok query_status means; None for ok (parse_ok reads the body)."""
        if query_status == "ok":
            return None
        remaining = int_header(answer.headers, "x-ratelimit-remaining")
        if query_status in NOT_FOUND_STATUSES:
            return Outcome(base.NOT_FOUND, http_status=200, quota_remaining=remaining,
                           message=f"query_status {query_status}")
        if query_status in AUTH_STATUSES:
            return Outcome(base.ERROR, base.ERR_AUTH, http_status=200,
                           message=f"HTTP 200: query_status {query_status}")
        if isinstance(query_status, str) and _REFUSED.match(query_status):
            return Outcome(base.ERROR, base.ERR_BAD_REQUEST, http_status=200,
                           message=f"HTTP 200: query_status {query_status}")
        shown = query_status if isinstance(query_status, str) else type(query_status).__name__
        return Outcome(base.ERROR, base.ERR_MALFORMED, http_status=200,
                       message=f"HTTP 200 without a known query_status ({shown[:40]})")

"""The failure side of the sandbox: injected faults, rate limits, daily quotas and every
provider's error answers in its own envelope (providers.md §1.3, §2.1, §3.3, §4.1, §4.3, §5.2).

Kept apart from the server so the contract of each error body is readable in one place.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

VIRUSTOTAL = "virustotal"
SHODAN = "shodan"
INTERNETDB = "shodan_internetdb"
ABUSEIPDB = "abuseipdb"
GREYNOISE = "greynoise"
SECURITYTRAILS = "securitytrails"
URLHAUS = "urlhaus"
THREATFOX = "threatfox"
MALWAREBAZAAR = "malwarebazaar"
OTX = "otx"
CROWDSEC = "crowdsec"
ABUSE_CH = (URLHAUS, THREATFOX, MALWAREBAZAAR)  # POST APIs answering in query_status
PROVIDERS = (VIRUSTOTAL, SHODAN, INTERNETDB, ABUSEIPDB, GREYNOISE, SECURITYTRAILS, URLHAUS,
             THREATFOX, MALWAREBAZAAR, OTX, CROWDSEC)
_ALIASES = {"internetdb": INTERNETDB, "vt": VIRUSTOTAL, "mb": MALWAREBAZAAR}
CROWDSEC_COMMUNITY_DAILY_LIMIT = 50
OTX_THROTTLE_TEXT = "Request was throttled. Expected available in {} seconds."

FAULTS = ("http_500", "http_502", "http_503", "hang", "malformed_json", "html_error",
          "http_401", "http_403", "http_429", "quota", "slow_drip", "connection_reset",
          "huge_body", "html_200")  # fmt: skip
# Faults in how an answer is delivered rather than in its status and body ("hang" aside).
DELIVERY_FAULTS = ("slow_drip", "connection_reset", "huge_body")
DRIP_INTERVAL_S = 0.25  # slow_drip: one byte of the real answer every interval
HUGE_BODY_BYTES = 20 * 1024 * 1024  # huge_body: a 200 JSON answer this long, sent chunked

ABUSEIPDB_DEFAULT_DAILY_LIMIT = 1000
GREYNOISE_COMMUNITY_DAILY_LIMIT = 100
SHODAN_RATE_TEXT = ("Request rate limit reached (1 request/ second). Please wait a second before "
                    "trying again and slow down your API calls.")  # fmt: skip
ABUSEIPDB_AUTH_TEXT = ("Authentication failed. Your API key is either missing, incorrect, or "
                       "revoked. Note: The APIv2 key differs from the APIv1 key.")  # fmt: skip
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def provider_name(name: str) -> str:
    """Canonical provider name (accepts 'internetdb' for shodan_internetdb)."""
    canonical = _ALIASES.get(name, name)
    if canonical not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}")
    return canonical


@dataclass
class Reply:
    """An HTTP answer the handler writes as-is."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # hold the connection instead of answering
    delivery: str | None = None  # slow_drip / connection_reset / huge_body (DELIVERY_FAULTS)


def json_reply(status: int, payload: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=dict(headers or {}))


# --- provider error envelopes -------------------------------------------------------------

CAPTIVE_PORTAL_200 = (
    b"<!DOCTYPE html>\n<html><head><title>Network Login</title></head><body>\n"
    b"<h1>Sign in to continue</h1><form method=\"post\" action=\"/login\">"
    b"<input name=\"user\"><input name=\"password\" type=\"password\"></form>\n"
    b"</body></html>\n"
)  # what a captive portal or filtering proxy answers with, status 200


def _vt(status: int, code: str, message: str, headers: dict | None = None) -> Reply:
    return json_reply(status, {"error": {"code": code, "message": message}}, headers)


def _abuse(status: int, detail: str, parameter: str | None = None, headers: dict | None = None,
           ) -> Reply:
    error: dict = {"detail": detail, "status": status}
    if parameter:
        error["source"] = {"parameter": parameter}
    return json_reply(status, {"errors": [error]}, headers)


def not_found(provider: str, what: str = "", ident: str = "") -> Reply:
    """The provider's 404. `what` names the VT object kind ("IP address", "Domain", ...)."""
    if provider == VIRUSTOTAL:
        message = f'{what} "{ident}" not found' if what else "Resource not found."
        return _vt(404, "NotFoundError", message)
    if provider == SHODAN:
        text = "No information available for that IP." if what else "Not Found"
        return json_reply(404, {"error": text})
    if provider == INTERNETDB:
        return json_reply(404, {"detail": "No information available" if what else "Not Found"})
    if provider == ABUSEIPDB:
        return _abuse(404, "The requested endpoint does not exist.")
    if provider == GREYNOISE:
        return json_reply(404, {"message": "IP not found" if what else "Not Found"})
    if provider in ABUSE_CH:
        return json_reply(404, {"query_status": "unknown_endpoint"})
    if provider == OTX:
        return json_reply(404, {"detail": "Not found."})
    if provider == CROWDSEC:
        return json_reply(404, {"message": "IP address information not found" if what
                                else "Not Found"})
    return json_reply(404, {"message": "Not Found"})


def unauthorized(provider: str, missing: bool) -> Reply:
    if provider == VIRUSTOTAL:
        if missing:
            return _vt(401, "AuthenticationRequiredError", "X-Apikey header is missing")
        return _vt(401, "WrongCredentialsError", "Wrong API key")
    if provider == SHODAN:
        return json_reply(401, {"error": "Please provide a valid API key"})
    if provider == INTERNETDB:
        return json_reply(401, {"detail": "Unauthorized"})
    if provider == ABUSEIPDB:
        return _abuse(401, ABUSEIPDB_AUTH_TEXT)
    if provider == GREYNOISE:
        return json_reply(401, {"message": "Unauthorized"})
    if provider in ABUSE_CH:
        return json_reply(401, {"query_status": "unknown_auth_key"})
    if provider == OTX:
        if missing:
            return json_reply(401, {"detail": "Authentication credentials were not provided."})
        return json_reply(403, {"detail": "Invalid API key."})
    if provider == CROWDSEC:  # API Gateway: a missing or unknown x-api-key is a 403
        return json_reply(403, {"message": "Forbidden"})
    return json_reply(401, {"message": "Invalid authentication credentials"})


def forbidden(provider: str) -> Reply:
    if provider == VIRUSTOTAL:
        return _vt(403, "ForbiddenError", "You are not allowed to perform the requested operation")
    if provider == SHODAN:
        return json_reply(403, {"error": "Access denied"})
    if provider == INTERNETDB:
        return json_reply(403, {"detail": "Forbidden"})
    if provider == ABUSEIPDB:
        return _abuse(403, "You do not have permission to access this endpoint.")
    if provider == GREYNOISE:
        return json_reply(403, {"message": "Forbidden"})
    if provider in ABUSE_CH:
        return json_reply(403, {"query_status": "unknown_auth_key"})
    if provider == OTX:
        return json_reply(403, {"detail": "You do not have permission to perform this action."})
    if provider == CROWDSEC:
        return json_reply(403, {"message": "Forbidden"})
    return json_reply(403, {"message": "You are not authorized to access this resource."})


def bad_input(provider: str, message: str = "", parameter: str | None = None) -> Reply:
    if provider == VIRUSTOTAL:
        return _vt(400, "InvalidArgumentError", message or "Invalid argument")
    if provider == SHODAN:
        return json_reply(400, {"error": message or "Invalid IP"})
    if provider == INTERNETDB:
        return json_reply(400, {"detail": message or "Invalid IP address"})
    if provider == ABUSEIPDB:
        return _abuse(422, message, parameter)
    if provider == GREYNOISE:
        return json_reply(400, {"message": message or "Invalid parameter"})
    if provider in ABUSE_CH:  # abuse.ch refuses input with a 200 and a query_status
        return json_reply(200, {"query_status": message or "illegal_search_term"})
    if provider == OTX:
        return json_reply(400, {"detail": message or "Invalid indicator"})
    if provider == CROWDSEC:
        return json_reply(400, {"message": message or "Invalid IP address"})
    return json_reply(400, {"message": message or "Invalid hostname"})


def rate_limited(provider: str, retry_after: int, extra_headers: dict | None = None,
                 community: bool = True) -> Reply:  # fmt: skip
    """The provider's per-second throttle answer, always with Retry-After."""
    headers = {"Retry-After": str(max(1, retry_after))} | dict(extra_headers or {})
    if provider == VIRUSTOTAL:
        return _vt(429, "TooManyRequestsError", "Too many requests", headers)
    if provider == SHODAN:
        return json_reply(429, {"error": SHODAN_RATE_TEXT}, headers)
    if provider == INTERNETDB:
        return json_reply(429, {"detail": "Too Many Requests"}, headers)
    if provider == ABUSEIPDB:
        return _abuse(429, "Too many requests. Please slow down.", headers=headers)
    if provider == GREYNOISE:
        if community:
            return json_reply(429, _greynoise_plan_body("You have hit the rate limit for this "
                                                        "endpoint."), headers)  # fmt: skip
        return json_reply(429, {"message": "You've hit the rate limit for this endpoint."}, headers)
    if provider in ABUSE_CH:
        return json_reply(429, {"query_status": "rate_limited",
                                "message": "Too many requests, slow down"}, headers)
    if provider == OTX:
        return json_reply(429, {"detail": OTX_THROTTLE_TEXT.format(max(1, retry_after))},
                          headers)
    if provider == CROWDSEC:
        return json_reply(429, {"message": "Too Many Requests"}, headers)
    return json_reply(429, {"message": "API rate limit exceeded"}, headers)


def quota_exhausted(provider: str, limit: int, seconds_to_reset: int,
                    reset_epoch: int, community: bool = True) -> Reply:  # fmt: skip
    """The provider's answer once its daily (or monthly) allowance is used up."""
    if provider == VIRUSTOTAL:
        return _vt(429, "QuotaExceededError", "Quota exceeded")
    if provider == SHODAN:
        text = ("Insufficient query credits, please upgrade your API plan or wait for the "
                "monthly limit to reset.")  # fmt: skip
        return json_reply(429, {"error": text})
    if provider == INTERNETDB:
        return json_reply(429, {"detail": "Too Many Requests"})
    if provider == ABUSEIPDB:
        detail = (f"Daily rate limit of {limit} requests exceeded for this endpoint. "
                  "See headers for additional details.")  # fmt: skip
        headers = {"Retry-After": str(seconds_to_reset)} | abuseipdb_headers(limit, 0, reset_epoch)
        return _abuse(429, detail, headers=headers)
    if provider == GREYNOISE:
        if community:
            message = (f"You have hit your daily rate limit of {limit} requests per day. Please "
                       "create a free account or upgrade your plan at "
                       "https://greynoise.io/pricing.")  # fmt: skip
            return json_reply(429, _greynoise_plan_body(message, limit))
        return json_reply(429, {"message": "You've hit the rate limit for this endpoint."})
    if provider == CROWDSEC:  # API Gateway usage plan: the key's daily quota is spent
        return json_reply(429, {"message": "Limit Exceeded"})
    if provider == OTX:
        return json_reply(429, {"detail": OTX_THROTTLE_TEXT.format(seconds_to_reset)},
                          {"Retry-After": str(seconds_to_reset)})
    if provider in ABUSE_CH:
        return json_reply(429, {"query_status": "rate_limited",
                                "message": "Too many requests, slow down"},
                          {"Retry-After": str(seconds_to_reset)})
    return json_reply(429, {"message": "You've exceeded the usage limits for your account."})


def _greynoise_plan_body(message: str, limit: int = GREYNOISE_COMMUNITY_DAILY_LIMIT) -> dict:
    return {"plan": "unauthenticated", "rate-limit": f"{limit}-lookups/day",
            "plan_url": "https://greynoise.io/pricing", "message": message}  # fmt: skip


def abuseipdb_html(reply: Reply) -> Reply:
    """AbuseIPDB without `Accept: application/json`: errors come back as an HTML page (§3)."""
    page = (f"<!DOCTYPE html><html><head><title>Error {reply.status}</title></head><body>"
            f"<h1>{reply.status}</h1><p>{reply.body.decode(errors='replace')}</p>"
            "</body></html>")  # fmt: skip
    return replace(reply, body=page.encode(), content_type="text/html; charset=UTF-8")


def abuseipdb_headers(limit: int, remaining: int, reset_epoch: int) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Reset": str(reset_epoch)}  # fmt: skip


def server_error(provider: str, status: int) -> Reply:
    """5xx answers: VT TransientError, GreyNoise's documented 500 text, JSON elsewhere."""
    if provider == VIRUSTOTAL:
        code = {503: "TransientError", 502: "TransientError"}.get(status, "InternalError")
        return _vt(status, code, "Transient error, please try again later")
    if provider == GREYNOISE:
        return json_reply(status, {"message": "Encountered error while performing request"})
    if provider == SHODAN:
        return json_reply(status, {"error": "Bad Gateway" if status == 502 else "Server Error"})
    if provider == ABUSEIPDB:
        return _abuse(status, "Server Error")
    if provider in (INTERNETDB, OTX):
        return json_reply(status, {"detail": "Internal Server Error"})
    return json_reply(status, {"message": "Internal Server Error"})


# --- limits and faults --------------------------------------------------------------------


class SlidingWindowLimiter:
    """Per-provider request-rate cap over a sliding window.

    A rate below 1/s widens the window to 1/rate seconds with room for one request, so
    VirusTotal's 4/min (0.0667/s) means one request per 15 s.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._rates: dict[str, float] = {}
        self._accepted: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def set_rate(self, provider: str, rps: float | None) -> None:
        with self._lock:
            if rps is None or rps <= 0:
                self._rates.pop(provider, None)
            else:
                self._rates[provider] = float(rps)
            self._accepted.pop(provider, None)

    def rates(self) -> dict[str, float]:
        with self._lock:
            return dict(self._rates)

    def reset(self) -> None:
        with self._lock:
            self._accepted.clear()

    def admit(self, provider: str, at: float | None = None) -> int | None:
        """None if the request may proceed (and is counted), else seconds to wait. `at` is when
        the request arrived (default now): requests answered in another order than they came
        are still counted in the window they arrived in."""
        with self._lock:
            rps = self._rates.get(provider)
            if rps is None:
                return None
            window = max(1.0, 1.0 / rps)
            capacity = max(1, int(rps * window + 1e-9))
            now = self._clock()
            arrived = now if at is None else min(at, now)
            accepted = self._accepted[provider]
            while accepted and accepted[0] <= now - 2 * window:
                accepted.popleft()
            # Admitted only if no window of the provider's length would then hold more than its
            # rate: the edge's guarantee, whatever order the handler threads reach this in.
            held = list(accepted)
            index = bisect.bisect_right(held, arrived)
            held.insert(index, arrived)
            for last in range(index, len(held)):
                if held[last] >= arrived + window:
                    break
                first = bisect.bisect_right(held, held[last] - window)
                if last - first + 1 > capacity:
                    return max(1, math.ceil(held[first] + window - now))
            accepted.insert(index, arrived)
            return None


class DailyQuota:
    """Accepted-request allowance per provider per UTC day."""

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self._wall_clock = wall_clock
        self._limits: dict[str, int] = {}
        self._used: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def set_limit(self, provider: str, limit: int | None) -> None:
        with self._lock:
            if limit is None:
                self._limits.pop(provider, None)
            else:
                self._limits[provider] = int(limit)

    def limits(self) -> dict[str, int]:
        with self._lock:
            return dict(self._limits)

    def reset(self) -> None:
        with self._lock:
            self._used.clear()

    def _day(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )

    def reset_epoch(self) -> int:
        return int((self._day() + timedelta(days=1)).timestamp())

    def seconds_to_reset(self) -> int:
        return max(1, math.ceil(self.reset_epoch() - self._wall_clock()))

    def limit(self, provider: str, default: int | None = None) -> int | None:
        with self._lock:
            return self._limits.get(provider, default)

    def used(self, provider: str) -> int:
        with self._lock:
            return self._used[(provider, self._day().date().isoformat())]

    def consume(self, provider: str) -> bool:
        """Count one accepted request; False (and not counted) once the limit is reached."""
        with self._lock:
            key = (provider, self._day().date().isoformat())
            limit = self._limits.get(provider)
            if limit is not None and self._used[key] >= limit:
                return False
            self._used[key] += 1
            return True


class FaultBook:
    """Faults queued per provider; each request to that provider takes the next one."""

    def __init__(self) -> None:
        self._queued: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()

    def inject(self, provider: str, fault: str, count: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._queued[provider].extend([fault] * count)

    def take(self, provider: str) -> str | None:
        with self._lock:
            queue = self._queued.get(provider)
            return queue.popleft() if queue else None

    def pending(self) -> dict[str, list[str]]:
        with self._lock:
            return {p: list(q) for p, q in self._queued.items() if q}

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()


_RESOLUTION = ('{"type": "resolution", "id": "%sh%d.example.com", "attributes": {"date": %d, '
               '"ip_address": "%s", "host_name": "h%d.example.com", "resolver": "VirusTotal"}}')


def huge_body_chunks(total: int = HUGE_BODY_BYTES, ip: str = "45.83.65.1",
                     ) -> Iterator[bytes]:
    """A VirusTotal-style relationship listing (`resolutions` of an IP), valid JSON just under
    `total` bytes, as ~64 KB pieces, so the sandbox never holds the whole answer."""
    head, tail = b'{"meta": {"count": 1000000}, "data": [', b"]}"
    piece, sent, index = bytearray(head), 0, 0
    while True:
        item = (_RESOLUTION % (ip, index, 1700000000 + index, ip, index)).encode()
        item = (b"," if index else b"") + item
        if sent + len(piece) + len(item) + len(tail) > total:
            yield bytes(piece + tail)
            return
        piece += item
        index += 1
        if len(piece) >= 64 * 1024:
            sent += len(piece)
            yield bytes(piece)
            piece = bytearray()

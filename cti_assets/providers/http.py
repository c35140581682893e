"""HTTP plumbing shared by every provider client: sessions, secret redaction, one attempt, retries.

The OpenCTI connectors this project replaces had no timeouts, no retry on 429 (or reported it as
success) and leaked keys into logs through URLs. Here every request has a (connect, read)
timeout, is counted against the shared rate limiter before it leaves, is classified into the
statuses of `providers.base`, and is retried with tenacity (Retry-After first, else exponential
backoff with full jitter). `redact()` is the one place secrets are scrubbed from any text.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
import tenacity
import urllib3
from requests.adapters import HTTPAdapter

from cti_assets.providers import base
from cti_assets.providers.breaker import CircuitBreaker

if TYPE_CHECKING:
    from cti_assets.providers.config import ProviderSettings
    from cti_assets.providers.ratelimit import SharedLimiter

log = logging.getLogger(__name__)

USER_AGENT = "cti-assets/0.1 (+https://github.com/cti-assets)"
REDACTED = "REDACTED"
_SECRET_QUERY = re.compile(
    r"(?i)((?:[?&;]|%3F|%26|\b)(?:key|apikey|api_key|api-key|token|access_token|x-apikey)"
    r"(?:=|%3D|:\s*|'\s*:\s*'|\"\s*:\s*\"))[^&\s'\";,)]+"
)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Remember an API key so `redact` removes it wherever it appears, not only after `key=`."""
    if secret and len(secret) >= 4:
        with _secrets_lock:
            _secrets.add(secret)
            _secrets.add(quote(secret, safe=""))


def redact(text: object) -> str:
    """`text` with key/apikey/token values and every registered API key replaced by REDACTED."""
    cleaned = _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, str(text))
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        cleaned = cleaned.replace(secret, REDACTED)
    return cleaned


def scrub_body(body: bytes) -> bytes:
    """`body` with any registered API key replaced, so a provider echoing it cannot leak it."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        body = body.replace(secret.encode("utf-8"), REDACTED.encode())
    return body


class _RedactingFilter(logging.Filter):
    """urllib3 logs request lines with their query string at DEBUG; scrub them before handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


for _name in ("urllib3.connectionpool", "urllib3.util.retry", "requests"):
    logging.getLogger(_name).addFilter(_RedactingFilter())


def make_session(pool_size: int) -> requests.Session:
    """A Session whose connection pool holds one connection per worker thread; no auto retries."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(1, pool_size), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept"] = "application/json"
    return session


def path_segment(value: str) -> str:
    """`value` as exactly one URL path segment; ValueError when it cannot be one."""
    if value.strip() in ("", ".", ".."):
        raise ValueError(f"{value!r} cannot be looked up: empty or a dot segment")
    return quote(value, safe="")


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass
class Request:
    """One request a client wants to make; `params` and `headers` may carry the key (never
    logged). A GET by default; abuse.ch's APIs take a POST with a form (`form`) or a JSON
    (`json_body`) body, where the observable travels instead of in the path or query."""

    url: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    form: dict[str, str] | None = None
    json_body: dict[str, Any] | None = None


@dataclass
class HttpAnswer:
    """What came back from one attempt (or why nothing did)."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    latency_ms: float
    transport_error: str | None = None  # timeout / connection error text, redacted
    too_large: bool = False  # the body passed max_body_bytes; `body` holds only its start

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    @property
    def looks_html(self) -> bool:
        content_type = self.headers.get("content-type", "").lower()
        return "html" in content_type or self.body[:200].lstrip().startswith(b"<")


@dataclass
class Outcome:
    """One attempt, classified: the LookupResult ingredients plus retry hints."""

    status: str
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    http_status: int | None = None
    body: bytes | None = None
    latency_ms: float | None = None
    retry_after_s: float | None = None
    quota_window: str | None = None  # "day" / "month" when the provider said its quota is spent
    quota_until: datetime | None = None  # when the provider says the spent quota resets
    quota_remaining: int | None = None
    sent: bool = True  # False when no request left (breaker open, limiter refused)

    @property
    def retryable(self) -> bool:
        return self.status == base.ERROR and self.reason in (base.ERR_TRANSIENT, base.ERR_RATE)


@dataclass
class Fetched:
    """A client's answer: the normalised result and the raw body the cache keeps for lineage."""

    result: base.LookupResult
    raw_body: bytes | None
    attempts: int = 1
    quota_window: str | None = None


def retry_after_seconds(headers: dict[str, str], now: float | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unparsable."""
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def int_header(headers: dict[str, str], name: str) -> int | None:
    raw = headers.get(name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def error_text(answer: HttpAnswer, limit: int = 300) -> str:
    """The provider's own error message from its envelope, else the body's start; redacted."""
    try:
        payload = answer.json()
    except (ValueError, UnicodeDecodeError):
        payload = None
    text = None
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict):
            text = " ".join(str(err.get(k, "")) for k in ("code", "message")).strip()
        elif err:
            text = str(err)
        elif isinstance(payload.get("errors"), list) and payload["errors"]:
            first = payload["errors"][0]
            text = str(first.get("detail") if isinstance(first, dict) else first)
        else:
            text = payload.get("message") or payload.get("detail")
            text = str(text) if text else None
    if text is None:
        text = answer.body[:limit].decode("utf-8", "replace")
    return redact(" ".join(text.split())[:limit])


ADJECTIVE = {"day": "daily", "month": "monthly"}
_MONTH = re.compile(r"(?i)month|usage limits? for your account")
_DAY = re.compile(r"(?i)\bdaily\b|per day|a day|/day|lookups/day|\bday\b")


def quota_window_of(text: str) -> str | None:
    """'month' or 'day' when a 429 message says a calendar quota is spent; None for throttles."""
    if _MONTH.search(text):
        return "month"
    if _DAY.search(text):
        return "day"
    return None


def send(session: requests.Session, request: Request, settings: ProviderSettings,
         ) -> HttpAnswer:
    """One request under `settings`' connect timeout, read timeout, total deadline and body cap; no
    redirects (a redirect could carry the key). The body is streamed: the read stops at the cap
    (answer.too_large) or at the deadline, whichever comes first, so a 20 MB answer is never held
    and a provider dripping bytes cannot keep a worker past the deadline."""
    started = time.perf_counter()
    deadline = started + settings.deadline_s
    try:
        response = session.request(
            request.method,
            request.url,
            params=request.params or None,
            data=request.form,
            json=request.json_body,
            headers=request.headers,
            timeout=(min(settings.connect_timeout_s, settings.deadline_s),
                     min(settings.timeout_s, settings.deadline_s)),
            allow_redirects=False,
            stream=True,
        )
    except requests.Timeout as exc:
        return HttpAnswer(None, {}, b"", _ms(started), f"timeout: {redact(type(exc).__name__)}")
    except requests.RequestException as exc:
        return HttpAnswer(None, {}, b"", _ms(started), f"connection error: {redact(exc)}")
    headers = {k.lower(): v for k, v in response.headers.items()}
    try:
        body, too_large = _read_capped(response, deadline, settings)
    except _DeadlineError:
        return HttpAnswer(None, {}, b"", _ms(started),
                          f"timeout: answer not complete within the {settings.deadline_s:g} s "
                          "deadline")
    except (requests.RequestException, OSError, urllib3.exceptions.HTTPError) as exc:
        return HttpAnswer(None, {}, b"", _ms(started),
                          f"connection error while reading: {redact(type(exc).__name__)}")
    finally:
        response.close()
    return HttpAnswer(response.status_code, headers, body, _ms(started), too_large=too_large)


class _DeadlineError(Exception):
    pass


_CHUNK = 64 * 1024


def _read_capped(response: requests.Response, deadline: float, settings: ProviderSettings,
                 ) -> tuple[bytes, bool]:
    """The body, or (first bytes, True) once it passes max_body_bytes. Each socket read waits
    at most until the deadline; read1 returns what one read got, so a drip is checked often."""
    cap = settings.max_body_bytes
    declared = int_header({k.lower(): v for k, v in response.headers.items()}, "content-length")
    if declared is not None and declared > cap:
        return b"", True
    raw = response.raw
    sock = getattr(raw.connection, "sock", None) if raw.connection is not None else None
    parts: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise _DeadlineError
        if sock is not None:
            sock.settimeout(min(remaining, settings.timeout_s))
        try:
            chunk = raw.read1(_CHUNK, decode_content=True)
        except (TimeoutError, urllib3.exceptions.ReadTimeoutError):
            if time.perf_counter() >= deadline:
                raise _DeadlineError from None
            raise
        if not chunk:
            return b"".join(parts), False
        size += len(chunk)
        if size > cap:
            return b"", True
        parts.append(chunk)


def _reset_time(answer: HttpAnswer, retry_after: float | None) -> datetime | None:
    """When a spent quota resets: X-RateLimit-Reset (epoch) or now + Retry-After, if given."""
    reset = int_header(answer.headers, "x-ratelimit-reset")
    now = time.time()
    if reset is not None and now < reset < now + 32 * 86_400:
        return datetime.fromtimestamp(reset, UTC)
    if retry_after is not None and 0 < retry_after < 32 * 86_400:
        return datetime.fromtimestamp(now + retry_after, UTC)
    return None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def _outcome(state: tenacity.RetryCallState) -> Outcome:
    """The Outcome of the attempt `state` follows (set before tenacity calls back)."""
    if state.outcome is None:
        raise RuntimeError("tenacity called back before any attempt finished")
    return state.outcome.result()


class ProviderClient:
    """Base of every provider client: build a request, send it under the limiter, classify.

    Subclasses set `provider`, implement `build_request` and `parse_ok`, and may override
    `parse_not_found` or `classify`.
    """

    provider: str = ""
    needs_key: bool = True

    def __init__(self, settings: ProviderSettings, limiter: SharedLimiter | None = None, *,
                 sleep: Callable[[float], None] = time.sleep,
                 breaker: CircuitBreaker | None = None) -> None:
        self.settings = settings
        self.limiter = limiter
        self.breaker = breaker or CircuitBreaker(
            settings.breaker_failures, settings.breaker_cooldown_s,
            settle_s=settings.connect_timeout_s + settings.deadline_s)
        self.session = make_session(settings.max_workers)
        self._sleep = sleep
        register_secret(settings.api_key)

    # --- to implement ---------------------------------------------------------------------
    def build_request(self, entity_type: str, value: str) -> Request:
        raise NotImplementedError

    def parse_ok(self, entity_type: str, value: str, payload: Any) -> dict[str, Any] | None:
        """Fields from a 2xx JSON body; None means the body says "not found"."""
        raise NotImplementedError

    def parse_not_found(self, answer: HttpAnswer) -> bool:
        """Whether a 404 is this provider's "unknown observable" answer (JSON from the API)."""
        try:
            return isinstance(answer.json(), dict)
        except (ValueError, UnicodeDecodeError):
            return False

    # --- the common path ------------------------------------------------------------------
    def url(self, *segments: str) -> str:
        return self.settings.base_url.rstrip("/") + "/" + "/".join(segments)

    def lookup(self, entity_type: str, value: str) -> base.LookupResult:
        return self.fetch(entity_type, value).result

    def fetch(self, entity_type: str, value: str) -> Fetched:
        """Look `value` up with retries; never raises for provider or network trouble."""
        try:
            request = self.build_request(entity_type, value)
        except ValueError as exc:
            outcome = Outcome(base.ERROR, base.ERR_BAD_REQUEST, message=redact(exc))
            return self._fetched(entity_type, value, outcome, attempts=0)
        attempts = 0

        def attempt() -> Outcome:
            nonlocal attempts
            outcome = self.attempt(entity_type, value, request)
            attempts += outcome.sent
            return outcome

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.settings.max_retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_result(self._should_retry),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            retry_error_callback=_outcome,
        )
        outcome = retrying(attempt)
        if outcome.retryable and attempts > 1:
            outcome.message = f"{outcome.message} (after {attempts} attempts)"
        return self._fetched(entity_type, value, outcome, attempts)

    def _should_retry(self, outcome: Outcome) -> bool:
        if not outcome.retryable:
            return False
        wait = outcome.retry_after_s
        return wait is None or wait <= self.settings.max_retry_after_s

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = _outcome(state)
        wait = state.next_action.sleep if state.next_action else 0.0
        log.info("%s: attempt %d failed (%s: %s); retrying in %.2f s", self.provider,
                 state.attempt_number, outcome.reason, redact(outcome.message), wait)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        outcome = _outcome(state)
        if outcome.retry_after_s is not None:
            return outcome.retry_after_s
        jitter = tenacity.wait_random_exponential(
            multiplier=self.settings.backoff_base_s, max=self.settings.backoff_max_s
        )
        return jitter(state)

    def attempt(self, entity_type: str, value: str, request: Request) -> Outcome:
        """One request: circuit breaker, limiter slot, send, classify, tell the breaker."""
        if not self.breaker.allow():
            return Outcome(base.DEFERRED, base.DEFER_UNAVAILABLE, sent=False,
                           message=f"{self.provider} unavailable: circuit breaker open after "
                           f"{self.breaker.consecutive_failures} consecutive transient failures;"
                           " not called, looked up in a later run")
        if self.limiter is not None:
            blocked = self.limiter.acquire()
            if blocked is not None:
                self.breaker.cancel()
                return Outcome(base.ERROR, blocked.error_class, message=blocked.message,
                               quota_window=blocked.window, sent=False)
        try:
            answer = send(self.session, request, self.settings)
            outcome = self.classify(entity_type, value, answer)
        except BaseException:
            self.breaker.cancel()
            raise
        if outcome.reason == base.ERR_TRANSIENT:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()
        outcome.latency_ms = answer.latency_ms
        if outcome.body is None and answer.status is not None:
            outcome.body = answer.body
        if self.limiter is not None and outcome.quota_remaining is not None:
            self.limiter.record_reported("day", outcome.quota_remaining)
        if self.limiter is not None and outcome.reason == base.ERR_QUOTA:
            self.limiter.mark_exhausted(outcome.quota_window or "day", outcome.message or "",
                                        until=outcome.quota_until)
        return outcome

    def classify(self, entity_type: str, value: str, answer: HttpAnswer) -> Outcome:
        """Map one HTTP answer to a status; the order matters (auth beats HTML beats 5xx...)."""
        status = answer.status
        if status is None:
            return Outcome(base.ERROR, base.ERR_TRANSIENT, message=answer.transport_error)
        remaining = int_header(answer.headers, "x-ratelimit-remaining")
        if status in (401, 403):
            return Outcome(base.ERROR, base.ERR_AUTH, http_status=status,
                           message=f"HTTP {status}: {error_text(answer)}")
        if status == 429:
            return self.classify_429(answer)
        if answer.too_large:
            return Outcome(base.ERROR, base.ERR_TOO_LARGE, http_status=status,
                           message=f"HTTP {status}: answer larger than "
                           f"{self.settings.max_body_bytes} bytes; reading stopped at the cap")
        if answer.looks_html:
            return Outcome(base.ERROR, base.ERR_TRANSIENT, http_status=status,
                           message=f"HTTP {status}: an HTML page instead of the API's JSON "
                           "(proxy or provider error page)")
        if status >= 500 or status == 408:
            return Outcome(base.ERROR, base.ERR_TRANSIENT, http_status=status,
                           message=f"HTTP {status}: {error_text(answer)}",
                           retry_after_s=retry_after_seconds(answer.headers))
        if status == 404:
            if self.parse_not_found(answer):
                return Outcome(base.NOT_FOUND, http_status=status, quota_remaining=remaining,
                               message=error_text(answer))
            return Outcome(base.ERROR, base.ERR_MALFORMED, http_status=status,
                           message=f"HTTP 404 without the provider's JSON: {error_text(answer)}")
        if 300 <= status < 400:
            return Outcome(base.ERROR, base.ERR_MALFORMED, http_status=status,
                           message=f"HTTP {status}: redirect not followed (it could carry the key)")
        if 400 <= status < 500:
            return Outcome(base.ERROR, base.ERR_BAD_REQUEST, http_status=status,
                           message=f"HTTP {status}: {error_text(answer)}")
        try:
            payload = answer.json()
            fields = self.parse_ok(entity_type, value, payload)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            return Outcome(base.ERROR, base.ERR_MALFORMED, http_status=status,
                           message=f"HTTP {status} with a body that is not the expected JSON "
                           f"({type(exc).__name__})")
        if fields is None:
            return Outcome(base.NOT_FOUND, http_status=status, quota_remaining=remaining)
        return Outcome(base.OK, fields=fields, http_status=status, quota_remaining=remaining)

    def classify_429(self, answer: HttpAnswer) -> Outcome:
        """Calendar quota spent (stop for the window) or a throttle (retry after a while)."""
        text = error_text(answer)
        window = quota_window_of(text)
        remaining = int_header(answer.headers, "x-ratelimit-remaining")
        retry_after = retry_after_seconds(answer.headers)
        if window is not None:
            return Outcome(base.ERROR, base.ERR_QUOTA, http_status=429, quota_window=window,
                           quota_remaining=remaining, quota_until=_reset_time(answer, retry_after),
                           message=f"HTTP 429: {ADJECTIVE[window]} quota exhausted: {text}")
        too_long = retry_after is not None and retry_after > self.settings.max_retry_after_s
        note = f" (Retry-After {retry_after:.0f} s: longer than a run waits)" if too_long else ""
        return Outcome(base.ERROR, base.ERR_RATE, http_status=429, quota_remaining=remaining,
                       retry_after_s=retry_after, message=f"HTTP 429: rate limited: {text}{note}")

    def _fetched(self, entity_type: str, value: str, outcome: Outcome, attempts: int) -> Fetched:
        body = outcome.body if outcome.status in (base.OK, base.NOT_FOUND) else None
        body = scrub_body(body) if body is not None else None
        result = base.LookupResult(
            provider=self.provider,
            entity_type=entity_type,
            value=value,
            status=outcome.status,
            reason=outcome.reason,
            fields=self.complete_fields(outcome.fields) if outcome.status == base.OK else {},
            fetched_at=datetime.now(UTC),
            raw_digest=sha256_hex(body) if body is not None else None,
            latency_ms=outcome.latency_ms,
            http_status=outcome.http_status,
            message=redact(outcome.message) if outcome.message else None,
            quota_remaining=outcome.quota_remaining,
        )
        return Fetched(result, body, attempts, outcome.quota_window)

    def complete_fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Exactly the provider's PROVIDER_FIELDS keys; a field not reported is None."""
        from cti_assets.providers.fields import PROVIDER_FIELDS

        return {name: fields.get(name) for name in PROVIDER_FIELDS[self.provider]}

    def close(self) -> None:
        self.session.close()

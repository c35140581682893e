"""A local HTTP simulator of the enrichment providers' APIs, so the real clients, the demo,
the tests and the benchmarks run offline against the documented contracts.

One ThreadingHTTPServer serves every provider under its own prefix; `base_urls` gives the
values that replace the real base URLs. State (keys, limits, quotas, faults, profiles, the
request log) is controlled from Python or, for another process, over `/_sandbox/*`. As a
provider's edge does, a request is judged (rate limit, quota, faults) when it arrives, the
kernel's receive time, and only then waits the simulated latency.
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from cti_assets.sandbox import data, routes
from cti_assets.sandbox.faults import (
    ABUSE_CH,
    ABUSEIPDB,
    ABUSEIPDB_DEFAULT_DAILY_LIMIT,
    CAPTIVE_PORTAL_200,
    CROWDSEC,
    CROWDSEC_COMMUNITY_DAILY_LIMIT,
    DELIVERY_FAULTS,
    DRIP_INTERVAL_S,
    GREYNOISE,
    GREYNOISE_COMMUNITY_DAILY_LIMIT,
    NGINX_502,
    DailyQuota,
    FaultBook,
    Reply,
    SlidingWindowLimiter,
    abuseipdb_headers,
    abuseipdb_html,
    forbidden,
    huge_body_chunks,
    json_reply,
    provider_name,
    quota_exhausted,
    rate_limited,
    server_error,
    unauthorized,
)

HANG_SECONDS = 30.0
SECURITYTRAILS_MONTHLY_ALLOWANCE = 50
_SECRET_HEADERS = frozenset({"x-apikey", "key", "apikey", "authorization", "auth-key",
                             "x-otx-api-key", "x-api-key"})
_SECRET_PARAMS = frozenset({"key", "apikey"})
BASE_URL_PATHS = {
    "VIRUSTOTAL_BASE_URL": "/virustotal/api/v3",
    "SHODAN_BASE_URL": "/shodan",
    "SHODAN_INTERNETDB_URL": "/internetdb",
    "ABUSEIPDB_BASE_URL": "/abuseipdb/api/v2",
    "GREYNOISE_BASE_URL": "/greynoise",
    "SECURITYTRAILS_BASE_URL": "/securitytrails/v1",
    "URLHAUS_BASE_URL": "/urlhaus/v1",
    "THREATFOX_BASE_URL": "/threatfox/api/v1",
    "MALWAREBAZAAR_BASE_URL": "/malwarebazaar/api/v1",
    "OTX_BASE_URL": "/otx/api/v1",
    "CROWDSEC_BASE_URL": "/crowdsec/v2",
}


@dataclass
class RequestRecord:
    """One provider request as the sandbox saw it (admin requests are not recorded)."""

    provider: str
    method: str
    path: str  # raw path as received, before unquoting, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lowercase names
    status: int | None  # None while the request is still being answered
    started: float  # time.monotonic()
    ended: float | None  # when the reply was ready to send
    observable: str | None
    arrived: float | None = None  # the sandbox clock's reading on arrival, for the rate limit

    def redacted(self) -> dict[str, Any]:
        """JSON-ready copy with API keys masked (for the admin endpoint)."""
        record = asdict(self)
        record["headers"] = {k: ("***" if k in _SECRET_HEADERS else v)
                             for k, v in self.headers.items()}  # fmt: skip
        record["query"] = {k: (["***"] * len(v) if k in _SECRET_PARAMS else v)
                           for k, v in self.query.items()}  # fmt: skip
        return record


class ProviderSandbox:
    """Local stand-in for VirusTotal, Shodan, InternetDB, AbuseIPDB, GreyNoise, SecurityTrails,
    URLhaus, ThreatFox, MalwareBazaar, OTX and CrowdSec. Use as `with ProviderSandbox() as sb:`
    or start()/stop().

    Dates in answers are days before `anchor` (default: the start of the UTC hour the sandbox
    was made in), so reports look as old to a run today as they would from the real provider,
    and stay the same for the sandbox's whole life."""

    def __init__(
        self,
        port: int = 0,
        latency_ms: int = 0,
        rate_limits: dict[str, float] | None = None,
        daily_quota: dict[str, int] | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        anchor: int | None = None,
    ) -> None:
        self.host = host
        self.anchor = data.anchor_for(wall_clock()) if anchor is None else int(anchor)
        self.port = port
        self.seed = seed
        self._latency_s: dict[str | None, float] = {None: latency_ms / 1000.0}
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._keys: dict[str, str] = {}
        self._profiles: dict[str, str] = {}
        self._known_urls: dict[str, str] = {}  # sha256(url) -> url, for VT's second id form
        self._clock = clock
        # On the real clock a request's arrival is the kernel's receive time (ArrivalReader).
        self._kernel_arrival = clock is time.monotonic
        self._limiter = SlidingWindowLimiter(clock)
        self._quota = DailyQuota(wall_clock)
        self._faults = FaultBook()
        self._release = threading.Event()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        for provider, rps in (rate_limits or {}).items():
            self.set_rate_limit(provider, rps)
        for provider, limit in (daily_quota or {}).items():
            self.set_daily_quota(provider, limit)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> ProviderSandbox:
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.sandbox = self
        self._server = server
        self.port = server.server_address[1]
        self._release.clear()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"provider-sandbox-{self.port}", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; releases hung requests and closes kept-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._release.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ProviderSandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_urls(self) -> dict[str, str]:
        return {name: f"{self.url}{path}" for name, path in BASE_URL_PATHS.items()}

    # --- configuration ------------------------------------------------------------------

    @property
    def valid_keys(self) -> dict[str, str]:
        """Keys set with set_key; a provider without one accepts any key except 'invalid'
        and keys starting with 'bad-'."""
        with self._lock:
            return dict(self._keys)

    def set_key(self, provider: str, key: str | None) -> None:
        """Make `key` the only valid key of `provider` (None: back to accepting any key)."""
        provider = provider_name(provider)
        with self._lock:
            if key is None:
                self._keys.pop(provider, None)
            else:
                self._keys[provider] = key

    def set_profile(self, value: str, profile: str | None) -> None:
        """Force the answer for an observable (None removes the override)."""
        if profile is not None and profile not in data.PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {data.PROFILES}")
        normalised = data.normalise(value)
        with self._lock:
            if profile is None:
                self._profiles.pop(normalised, None)
            else:
                self._profiles[normalised] = profile
            if "://" in value:
                self._known_urls[hashlib.sha256(value.encode()).hexdigest()] = value

    def profile(self, value: str) -> str:
        """The profile the sandbox answers with for `value` (override or hash-derived)."""
        with self._lock:
            forced = self._profiles.get(data.normalise(value))
        return forced or data.profile_of(value, self.seed)

    def set_latency(self, ms: float, provider: str | None = None) -> None:
        """Delay before answering, for every provider or (with `provider`) for one."""
        self._latency_s[provider_name(provider) if provider else None] = max(0.0, ms / 1000.0)

    def set_rate_limit(self, provider: str, rps: float | None) -> None:
        self._limiter.set_rate(provider_name(provider), rps)

    def set_daily_quota(self, provider: str, n: int | None) -> None:
        self._quota.set_limit(provider_name(provider), n)

    def inject(self, provider: str, fault: str, count: int = 1) -> None:
        """The next `count` requests to `provider` get `fault` (see faults.FAULTS)."""
        self._faults.inject(provider_name(provider), fault, count)

    def release_hangs(self) -> None:
        """Let requests held by the 'hang' fault finish (their connection is closed)."""
        self._release.set()

    def configure(self, config: dict[str, Any]) -> None:
        """Apply the JSON accepted by POST /_sandbox/config."""
        latency = config.get("latency_ms")
        if isinstance(latency, dict):
            for provider, ms in latency.items():
                self.set_latency(float(ms or 0), provider)
        elif latency is not None:
            self.set_latency(float(latency))
        for provider, rps in (config.get("rate_limits") or {}).items():
            self.set_rate_limit(provider, rps)
        for provider, limit in (config.get("daily_quota") or {}).items():
            self.set_daily_quota(provider, limit)
        for fault in config.get("faults") or []:
            self.inject(fault["provider"], fault["fault"], int(fault.get("count", 1)))
        for value, profile in (config.get("profiles") or {}).items():
            self.set_profile(value, profile)
        for provider, key in (config.get("keys") or {}).items():
            self.set_key(provider, key)

    # --- request log --------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def request_count(self, provider: str | None = None) -> int:
        wanted = provider_name(provider) if provider else None
        with self._lock:
            return sum(1 for r in self._records if wanted is None or r.provider == wanted)

    def reset_log(self) -> None:
        with self._lock:
            self._records.clear()

    def reset(self) -> None:
        """Clear the log, pending faults, rate windows and quota usage; keep configuration."""
        self.reset_log()
        self._faults.clear()
        self._limiter.reset()
        self._quota.reset()

    def stats(self) -> dict[str, Any]:
        """Request counts per provider and status."""
        with self._lock:
            records = list(self._records)
        per_provider: dict[str, Counter] = {}
        for record in records:
            per_provider.setdefault(record.provider, Counter())[str(record.status)] += 1
        return {
            "total": len(records),
            "providers": {p: {"total": sum(c.values()), "by_status": dict(c)}
                          for p, c in per_provider.items()},
            "pending_faults": self._faults.pending(),
        }  # fmt: skip

    # --- request handling (called from handler threads) --------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _key_ok(self, provider: str, key: str) -> bool:
        with self._lock:
            expected = self._keys.get(provider)
        if expected is not None:
            return key == expected
        return key != "invalid" and not key.startswith("bad-")

    def _facts(self, value: str) -> data.Facts:
        with self._lock:
            forced = self._profiles.get(data.normalise(value))
        return data.facts_for(value, self.seed, forced, self.anchor)

    def _wait_latency(self, provider: str) -> None:
        delay = self._latency_s.get(provider, self._latency_s[None])
        if delay > 0:
            self._stopping.wait(delay)

    def _fault_reply(self, fault: str, call: routes.Call | None, provider: str) -> Reply:
        community = call.community if call else True
        if fault.startswith("http_5"):
            return server_error(provider, int(fault[5:]))
        if fault == "hang":
            return Reply(504, b"", hang=True)
        if fault == "malformed_json":
            return Reply(200, b'{"data": {"id": "x", "attributes": {"last_analysis_stats": {')
        if fault == "html_error":
            return Reply(502, NGINX_502, content_type="text/html")
        if fault == "html_200":
            return Reply(200, CAPTIVE_PORTAL_200, content_type="text/html")
        if fault == "http_401":
            return unauthorized(provider, missing=False)
        if fault == "http_403":
            return forbidden(provider)
        if fault == "http_429":
            return rate_limited(provider, 1, self._abuse_headers(provider), community)
        return self._quota_reply(provider, community)

    def _quota_limit(self, provider: str, community: bool) -> int:
        default = {ABUSEIPDB: ABUSEIPDB_DEFAULT_DAILY_LIMIT,
                   CROWDSEC: CROWDSEC_COMMUNITY_DAILY_LIMIT}.get(provider, 0)
        if provider == GREYNOISE and community:
            default = GREYNOISE_COMMUNITY_DAILY_LIMIT
        return self._quota.limit(provider, default) or default

    def _quota_reply(self, provider: str, community: bool) -> Reply:
        return quota_exhausted(provider, self._quota_limit(provider, community),
                               self._quota.seconds_to_reset(), self._quota.reset_epoch(),
                               community)  # fmt: skip

    def _abuse_headers(self, provider: str) -> dict[str, str]:
        if provider != ABUSEIPDB:
            return {}
        limit = self._quota_limit(ABUSEIPDB, False)
        remaining = limit - self._quota.used(ABUSEIPDB)
        return abuseipdb_headers(limit, remaining, self._quota.reset_epoch())

    def _respond(self, provider: str, segments: list[str], query: dict[str, list[str]],
                 headers: dict[str, str], record: RequestRecord,
                 take_fault: bool = True) -> Reply:  # fmt: skip
        """Faults, then path, auth, input, rate limit, quota, lookup (providers.md §7)."""
        call = routes.parse(provider, segments, query, headers)
        if isinstance(call, routes.Call) and call.kind == "vt_url":
            miss = routes.resolve_vt_url(call, self._known_urls)
            if miss is None and "://" in (call.observable or ""):
                url_sha = hashlib.sha256((call.observable or "").encode()).hexdigest()
                with self._lock:
                    self._known_urls.setdefault(url_sha, call.observable or "")
            record.observable = call.observable
            if miss is not None:
                call = miss
        elif isinstance(call, routes.Call):
            record.observable = call.observable
        fault = self._faults.take(provider) if take_fault else None
        if fault == "slow_drip":  # the real answer, judged now like any request, sent slowly
            answer = self._respond(provider, segments, query, headers, record, take_fault=False)
            return replace(answer, delivery=fault)
        if fault in DELIVERY_FAULTS:
            return Reply(200, b"", delivery=fault)
        if fault is not None:
            return self._fault_reply(fault, call if isinstance(call, routes.Call) else None,
                                     provider)  # fmt: skip
        if isinstance(call, Reply):
            return call
        if call.key_required or call.key is not None:
            if not call.key or not self._key_ok(provider, call.key):
                return unauthorized(provider, missing=not call.key)
        invalid = routes.validate(call)
        if invalid is not None:
            return invalid
        # counted at arrival, as a provider's edge counts them
        retry_after = self._limiter.admit(provider, at=record.arrived)
        if retry_after is not None:
            return rate_limited(provider, retry_after, self._abuse_headers(provider),
                                call.community)  # fmt: skip
        if not self._quota.consume(provider):
            return self._quota_reply(provider, call.community)
        facts = self._facts(call.observable) if call.observable is not None else None
        usage = (self._quota.used(provider),
                 self._quota.limit(provider) or SECURITYTRAILS_MONTHLY_ALLOWANCE)  # fmt: skip
        reply = routes.answer(call, facts, usage)
        reply.headers.update(self._abuse_headers(provider))
        return reply

    def _admin(self, method: str, action: str, query: dict[str, list[str]],
               body: bytes) -> Reply:  # fmt: skip
        if method == "GET" and action == "requests":
            since = int((query.get("since") or ["0"])[0] or 0)
            return json_reply(200, [r.redacted() for r in self.requests[since:]])
        if method == "GET" and action == "stats":
            return json_reply(200, self.stats())
        if method == "POST" and action == "reset":
            self.reset()
            return json_reply(200, {"ok": True})
        if method == "POST" and action == "config":
            try:
                config = json.loads(body or b"{}")
                if not isinstance(config, dict):
                    raise ValueError("config must be a JSON object")
                self.configure(config)
            except (ValueError, KeyError, TypeError) as exc:
                return json_reply(400, {"error": f"bad config: {exc}"})
            return json_reply(200, {"ok": True})
        return json_reply(404, {"error": f"no admin endpoint {method} /_sandbox/{action}"})


def _body_fields(body: bytes, headers: dict[str, str]) -> dict[str, list[str]]:
    """A POST body's fields as parse_qs gives a query: a form, or a JSON object (abuse.ch)."""
    if "json" in headers.get("content-type", ""):
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return {}
        if not isinstance(payload, dict):
            return {}
        return {str(k): [str(v).lower() if isinstance(v, bool) else str(v)]
                for k, v in payload.items()}
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    sandbox: ProviderSandbox

    def server_bind(self) -> None:
        super().server_bind()
        # Set on the listening socket, so connections inherit it and the kernel stamps their
        # first request too (data that arrives before a socket asks for stamps has none).
        enable_receive_stamps(self.socket)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, closed session) is normal here, not a server bug.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


# Linux's SO_TIMESTAMPNS (asm-generic), which Python's socket module does not name.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_TIMESPEC = struct.Struct("qq")


def enable_receive_stamps(connection: socket.socket) -> bool:
    """Ask the kernel for each read's receive time; False where the platform has none."""
    if _SO_TIMESTAMPNS is None:
        return False
    try:
        connection.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


class ArrivalReader(io.RawIOBase):
    """A connection's bytes, with the kernel's receive time (CLOCK_REALTIME) of the latest
    read. A provider's edge counts a request when it reaches the host; the sandbox's handler
    thread may only run tens of milliseconds later on a loaded machine, and stamping the
    request then would bunch evenly spaced arrivals into a burst no provider would see."""

    def __init__(self, connection: socket.socket) -> None:
        super().__init__()
        self.connection = connection
        self.received_at: float | None = None
        self.stamped = enable_receive_stamps(connection)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.stamped:
            return self.connection.recv_into(buffer)
        size, ancillary, _, _ = self.connection.recvmsg_into([buffer], 64)
        for level, kind, stamp in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack_from(stamp)
                self.received_at = seconds + nanoseconds / 1e9
        return size


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: _Server
    server_version = "ProviderSandbox/1.0"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket's own reader, replaced by one that keeps arrival times
        self.arrivals = ArrivalReader(self.connection)
        self.rfile = io.BufferedReader(self.arrivals)
        sandbox = self.server.sandbox
        with sandbox._lock:
            sandbox._connections.add(self.connection)

    def finish(self) -> None:
        sandbox = self.server.sandbox
        with sandbox._lock:
            sandbox._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        return  # the request log lives in ProviderSandbox.requests

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _arrived(self) -> float:
        """When the request in hand reached this host, on the sandbox's clock."""
        sandbox = self.server.sandbox
        now = sandbox._clock()
        received_at = self.arrivals.received_at
        if not sandbox._kernel_arrival or received_at is None:
            return now
        return now - max(0.0, time.time() - received_at)

    def _handle(self, method: str) -> None:
        arrived = self._arrived()  # before the body: the headers' packet is the arrival
        sandbox = self.server.sandbox
        length_header = self.headers.get("Content-Length") or "0"
        length = int(length_header) if length_header.isdigit() else 0
        body = self.rfile.read(length) if length > 0 else b""
        raw_path, _, query_string = self.path.partition("?")
        raw_path = raw_path.partition("#")[0]
        query = parse_qs(query_string, keep_blank_values=True)
        raw_segments = raw_path.split("/")[1:]
        prefix = raw_segments[0] if raw_segments else ""
        if prefix == "_sandbox":
            action = raw_segments[1] if len(raw_segments) == 2 else ""
            self._write(sandbox._admin(method, action, query, body), method)
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        provider = routes.PREFIXES.get(prefix, "unknown")
        record = RequestRecord(provider, method, raw_path, query, headers, None,
                               time.monotonic(), None, None, arrived)  # fmt: skip
        sandbox._record(record)
        if provider == "unknown":
            reply = json_reply(404, {"error": f"no provider at /{prefix}"})
        elif method != ("POST" if provider in ABUSE_CH else "GET"):
            reply = routes.not_found(provider)
        else:
            segments = [unquote(s) for s in raw_segments[1:]]
            fields = query | _body_fields(body, headers) if method == "POST" else query
            reply = sandbox._respond(provider, segments, fields, headers, record)
            wants_json = "application/json" in headers.get("accept", "")
            if provider == ABUSEIPDB and reply.status >= 400 and not wants_json:
                if reply.content_type == "application/json" and not reply.hang:
                    reply = abuseipdb_html(reply)
        # The request is judged (rate limit, quota, faults) as it arrives, in arrival order, as a
        # provider's edge judges it; the latency is the time its answer then takes.
        sandbox._wait_latency(provider)
        if reply.hang:
            sandbox._release.wait(HANG_SECONDS)
            self.close_connection = True
            record.ended = time.monotonic()
            return
        if reply.delivery == "connection_reset":
            record.ended = time.monotonic()
            self._reset()
            return
        if reply.delivery == "huge_body":
            record.status = 200
            record.ended = time.monotonic()
            self._write_chunked(huge_body_chunks(ip=record.observable or "45.83.65.1"))
            return
        if reply.delivery == "slow_drip":
            record.status = reply.status
            self._drip(reply)
            record.ended = time.monotonic()
            return
        # Recorded before the reply goes out: a client that has its answer sees it in the log.
        record.status = reply.status
        record.ended = time.monotonic()
        self._write(reply, method)

    def _reset(self) -> None:
        """Close with an RST (SO_LINGER 0) before any answer: `connection reset by peer`."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))  # fmt: skip
        self.close_connection = True
        self.connection.close()

    def _write_chunked(self, chunks: Iterable[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the client stopped reading at its cap

    def _drip(self, reply: Reply) -> None:
        """The real answer, one byte every DRIP_INTERVAL_S, until stopped or released."""
        sandbox = self.server.sandbox
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        try:
            for byte in reply.body:
                if sandbox._release.wait(DRIP_INTERVAL_S):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            return

    def _write(self, reply: Reply, method: str) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(reply.body)


def serve_forever(
    port: int = 8080,
    host: str = "127.0.0.1",
    latency_ms: int = 0,
    rate_limits: dict[str, float] | None = None,
) -> None:
    """Run a sandbox in the foreground until SIGINT/SIGTERM, printing `export VAR=...` lines."""
    try:
        sandbox = ProviderSandbox(port=port, host=host, latency_ms=latency_ms,
                                  rate_limits=rate_limits)  # fmt: skip
        sandbox.start()
    except OSError as exc:
        raise SystemExit(f"provider sandbox: cannot listen on {host}:{port}: "
                         f"{exc.strerror or exc}") from None  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"provider sandbox: {exc}") from None
    done = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        done.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name, url in sandbox.base_urls.items():
            print(f"export {name}={url}", flush=True)
        print(f"# provider sandbox on {sandbox.url} (admin: {sandbox.url}/_sandbox/stats); "
              "Ctrl-C to stop", flush=True)  # fmt: skip
        while not done.wait(0.5):
            pass
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""Look up a frame of observables with one provider: gate, cache, call in parallel, account.

Every input row gets exactly one output row (tables.LOOKUP_COLUMNS), in input order:
rejected, out of scope, above the TLP ceiling, special-use and keyless rows are skipped with a
reason and never sent; cached answers are reused; triage-deferred rows are marked deferred; the
rest go out on a bounded thread pool, so the provider runs at its rate limit, not its latency.
Each TLP decision is made from that row alone (no state carried between observables).
A quota exhausted (or a key refused) mid-run stops further calls, and every observable not yet
sent is marked error/quota_exhausted (or error/auth): nothing cached, picked up next run. A
provider that keeps timing out or failing opens the client's circuit breaker (providers.breaker):
its remaining rows are deferred/provider_unavailable without a request, so a dead provider costs
about one timeout per run, not one per row. Each answer is cached by the worker that received it,
so a killed run loses at most the requests in flight; a lookup another run or worker is already
fetching (its lease in the cache) is waited for and read from the cache, not fetched again.

Decision order per row: rejected, out_of_scope, tlp, special_use, cache, no_key, deferred.
A cache hit wins over a missing key and over a triage deferral: it sends nothing, costs no
budget and carries the answer (so a day re-run after a key was removed keeps its answers).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from cti_assets import tables
from cti_assets.intake.observable import tlp_allows
from cti_assets.providers import base
from cti_assets.providers.cache import AnswerStore
from cti_assets.providers.config import ProviderSettings
from cti_assets.providers.fields import PROVIDER_SCOPE
from cti_assets.providers.http import Fetched, ProviderClient, redact
from cti_assets.providers.network_context import special_use_reason as special_use

if TYPE_CHECKING:
    from cti_assets.providers.ratelimit import SharedLimiter

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("stix_id", "entity_type", "normalized_value", "tlp", "status")
STOPPING_ERRORS = (base.ERR_QUOTA, base.ERR_AUTH)


@dataclass
class LookupStats:
    """What one lookup_frame run did, for asset metadata and the run summary."""

    provider: str = ""
    rows: int = 0
    calls: int = 0  # distinct observables sent to the provider
    http_requests: int = 0  # including retries
    cache_hits: int = 0
    by_status: Counter = field(default_factory=Counter)
    errors_by_class: Counter = field(default_factory=Counter)
    skipped_by_reason: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    quota_remaining: int | None = None  # last value the provider reported

    def _percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
        return round(ordered[index], 3)

    @property
    def latency_p50_ms(self) -> float | None:
        return self._percentile(0.50)

    @property
    def latency_p95_ms(self) -> float | None:
        return self._percentile(0.95)

    def count(self, row: dict[str, Any]) -> None:
        self.rows += 1
        self.by_status[row["status"]] += 1
        if row["status"] == base.ERROR:
            self.errors_by_class[row["reason"]] += 1
        elif row["status"] == base.SKIPPED:
            self.skipped_by_reason[row["reason"]] += 1
        if row["from_cache"]:
            self.cache_hits += 1

    def combine(self, other: LookupStats) -> LookupStats:
        return LookupStats(
            provider=self.provider or other.provider,
            rows=self.rows + other.rows,
            calls=self.calls + other.calls,
            http_requests=self.http_requests + other.http_requests,
            cache_hits=self.cache_hits + other.cache_hits,
            by_status=self.by_status + other.by_status,
            errors_by_class=self.errors_by_class + other.errors_by_class,
            skipped_by_reason=self.skipped_by_reason + other.skipped_by_reason,
            latencies_ms=self.latencies_ms + other.latencies_ms,
            quota_remaining=other.quota_remaining
            if other.quota_remaining is not None else self.quota_remaining,
        )

    def as_metadata(self) -> dict[str, int | float | str]:
        """Flat plain values (ints, floats, str) for Dagster metadata."""
        meta: dict[str, int | float | str] = {
            "provider": self.provider,
            "rows": self.rows,
            "calls": self.calls,
            "http_requests": self.http_requests,
            "cache_hits": self.cache_hits,
        }
        for prefix, counter in (("status", self.by_status), ("error", self.errors_by_class),
                                ("skipped", self.skipped_by_reason)):
            for key, value in sorted(counter.items()):
                meta[f"{prefix}_{key}"] = int(value)
        for name, reading in (("latency_p50_ms", self.latency_p50_ms),
                              ("latency_p95_ms", self.latency_p95_ms),
                              ("quota_remaining", self.quota_remaining)):
            if reading is not None:
                meta[name] = reading
        return meta


def _row(obs: dict[str, Any], provider: str, status: str, reason: str | None = None,
         message: str | None = None) -> dict[str, Any]:
    return {
        "stix_id": obs.get("stix_id"),
        "entity_type": obs.get("entity_type"),
        "normalized_value": obs.get("normalized_value"),
        "provider": provider,
        "status": status,
        "reason": reason,
        "fields": "{}",
        "fetched_at": None,
        "raw_digest": None,
        "from_cache": False,
        "latency_ms": None,
        "http_status": None,
        "message": message,
    }


def _result_row(obs: dict[str, Any], result: base.LookupResult) -> dict[str, Any]:
    row = _row(obs, result.provider, result.status, result.reason, result.message)
    row.update(
        fields=json.dumps(result.fields, sort_keys=True, default=str),
        fetched_at=result.fetched_at,
        raw_digest=result.raw_digest,
        from_cache=result.from_cache,
        latency_ms=result.latency_ms,
        http_status=result.http_status,
    )
    return row


def _gate(provider: str, obs: dict[str, Any], settings: ProviderSettings) -> dict | None:
    """The skip row for an observable that must not be sent; None when it may be."""
    value = obs.get("normalized_value")
    why = obs.get("reason") if isinstance(obs.get("reason"), str) else "no normalised value"
    if obs.get("status") == tables.OBSERVABLE_SKIPPED:
        return _row(obs, provider, base.SKIPPED, base.SKIP_OUT_OF_SCOPE,
                    f"observable skipped: {why}")
    if obs.get("status") != tables.OBSERVABLE_OK or not isinstance(value, str) or not value:
        return _row(obs, provider, base.SKIPPED, base.SKIP_REJECTED, f"rejected: {why}")
    entity_type = obs.get("entity_type")
    if entity_type not in PROVIDER_SCOPE.get(provider, ()):
        return _row(obs, provider, base.SKIPPED, base.SKIP_OUT_OF_SCOPE,
                    f"{provider} does not look up {entity_type}")
    tlp = obs.get("tlp")
    if not isinstance(tlp, str) or not tlp_allows(tlp, settings.max_tlp):
        why = obs.get("tlp_reason")
        because = f" ({why})" if isinstance(why, str) and why.startswith("tlp_unresolved") else ""
        return _row(obs, provider, base.SKIPPED, base.SKIP_TLP,
                    f"{tlp if isinstance(tlp, str) else 'no TLP'}{because} is above "
                    f"{provider}'s maximum {settings.max_tlp}")
    reason = special_use(entity_type, value)
    if reason:
        return _row(obs, provider, base.SKIPPED, base.SKIP_SPECIAL_USE, reason)
    return None


def _no_key(provider: str, obs: dict[str, Any], settings: ProviderSettings) -> dict | None:
    """The skip row for an observable that would be sent without the key its provider needs."""
    if settings.needs_key and not settings.api_key:
        return _row(obs, provider, base.SKIPPED, base.SKIP_NO_KEY,
                    f"no API key configured for {provider}")
    return None


def _check_columns(observables: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in observables.columns]
    if missing:
        raise ValueError(f"observables frame lacks column(s) {', '.join(missing)}; "
                         f"expected tables.OBSERVABLE_COLUMNS")


def to_lookup_frame(rows: list[dict[str, Any]], index: pd.Index | None = None) -> pd.DataFrame:
    """Rows as a frame with exactly tables.LOOKUP_COLUMNS and their dtypes."""
    frame = pd.DataFrame(rows, columns=list(tables.LOOKUP_COLUMNS), index=index)
    frame["fetched_at"] = pd.to_datetime(frame["fetched_at"], utc=True)
    return frame.astype(tables.LOOKUP_COLUMNS)


def lookup_frame(
    provider: str,
    observables: pd.DataFrame,
    settings: ProviderSettings,
    *,
    cache: AnswerStore,
    limiter: SharedLimiter | None = None,
    force_refresh: bool | Collection[str] = False,
    deferred: dict[str, str] | None = None,
    client: ProviderClient | None = None,
    retry_first: Collection[str] = (),
) -> tuple[pd.DataFrame, LookupStats]:
    """One LOOKUP_COLUMNS row per observable row, same order and index; and what it cost.

    `force_refresh` bypasses the cache for every row (True) or for the rows whose STIX id, raw
    value or normalised value is in the given collection (on-demand enrichment); the other rows
    still come from the cache at no cost. Rows whose STIX id is in `retry_first` (deferred by an
    earlier run, e.g. while the provider was unavailable) are sent before the others."""
    _check_columns(observables)
    since = time.time()  # answers stored after this are this run's (or a concurrent run's)
    deferred = deferred or {}
    stats = LookupStats(provider=provider)
    records = observables.to_dict("records")
    rows: list[dict[str, Any] | None] = [None] * len(records)
    pending: dict[tuple[str, str], list[int]] = {}
    forced: set[tuple[str, str]] = set()  # looked up anew: only an answer newer than `since`
    for i, obs in enumerate(records):
        obs = {k: (None if _is_missing(v) else v) for k, v in obs.items()}
        records[i] = obs
        rows[i] = _gate(provider, obs, settings)
        if rows[i] is not None:
            continue
        key = (obs["entity_type"], obs["normalized_value"])
        if refreshes(force_refresh, obs):
            forced.add(key)
        cached = None if key in forced else cache.get(provider, *key, origin=settings.origin)
        if cached is not None:  # an answer already paid for serves without the key too
            rows[i] = _result_row(obs, cached)
        elif (no_key := _no_key(provider, obs, settings)) is not None:
            rows[i] = no_key
        elif obs.get("stix_id") in deferred:
            rows[i] = _row(obs, provider, base.DEFERRED, deferred[obs["stix_id"]],
                           "deferred by triage; looked up in a later run")
        else:
            pending.setdefault(key, []).append(i)

    if pending:
        first = set(retry_first)
        keys = sorted(pending, key=lambda k: not any(records[i].get("stix_id") in first
                                                     for i in pending[k]))
        results = _call_all(provider, keys, settings, cache, limiter, client, stats, since,
                            frozenset(forced))
        for key, indexes in pending.items():
            for i in indexes:
                rows[i] = _result_row(records[i], results[key])

    filled = [row for row in rows if row is not None]
    if len(filled) != len(rows):  # each row is gated, cached, deferred or looked up above
        raise RuntimeError(f"{provider}: {len(rows) - len(filled)} observables without a row")
    for row in filled:
        stats.count(row)
    return to_lookup_frame(filled, observables.index), stats


def refreshes(force_refresh: bool | Collection[str], obs: dict[str, Any]) -> bool:
    """Whether this observable row is looked up anew rather than taken from the cache."""
    if isinstance(force_refresh, bool):
        return force_refresh
    if isinstance(force_refresh, str):  # one value, not a collection of its characters
        force_refresh = (force_refresh,)
    return any(obs.get(name) in force_refresh for name in ("stix_id", "value", "normalized_value"))


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value)) if not isinstance(value, (list, dict, tuple)) else False
    except (TypeError, ValueError):
        return False


def _not_called(provider: str, key: tuple[str, str], reason: str, message: str,
                ) -> base.LookupResult:
    return base.LookupResult(provider=provider, entity_type=key[0], value=key[1],
                             status=base.ERROR, reason=reason, message=message)


def _call_all(
    provider: str, keys: list[tuple[str, str]], settings: ProviderSettings,
    cache: AnswerStore, limiter: SharedLimiter | None, client: ProviderClient | None,
    stats: LookupStats, since: float, forced: frozenset[tuple[str, str]] = frozenset(),
) -> dict[tuple[str, str], base.LookupResult]:
    """Each distinct observable sent once on a bounded pool; stop on quota or refused key."""
    results: dict[tuple[str, str], base.LookupResult] = {}
    stop_lock = threading.Lock()
    stop: dict[str, str] = {}
    until = limiter.exhausted_until() if limiter is not None else None
    if until is not None:
        message = f"{provider} quota exhausted until {until.isoformat()}; not called"
        return {key: _not_called(provider, key, base.ERR_QUOTA, message) for key in keys}

    own_client = client is None
    if client is None:
        from cti_assets.providers.registry import make_client

        client = make_client(provider, settings, limiter=limiter)

    def work(key: tuple[str, str]) -> Fetched | None:
        if stop:
            return None
        answered_elsewhere = _wait_for_lease(provider, key, settings, cache,
                                             since if key in forced else None)
        if answered_elsewhere is not None:
            return Fetched(answered_elsewhere, None, 0)
        try:
            fetched = client.fetch(*key)
        except Exception as exc:  # a client bug must not lose the row
            log.error("%s client failed on a %s: %s", provider, key[0], redact(exc))
            cache.release(provider, *key)
            return Fetched(_not_called(provider, key, base.ERR_TRANSIENT,
                                       f"client error: {redact(exc)}"), None, 1)
        result = fetched.result
        try:
            if result.status in (base.OK, base.NOT_FOUND):  # kept the moment it arrives
                cache.put(result, fetched.raw_body,
                          settings.ttl_for(key[0], result.status == base.OK),
                          origin=settings.origin)
        finally:  # a retry of the step must not wait out this worker's lease
            cache.release(provider, *key)
        if result.reason in STOPPING_ERRORS:
            with stop_lock:
                stop.setdefault(result.reason, result.message or "")
        return fetched

    try:
        with ThreadPoolExecutor(max_workers=max(1, settings.max_workers),
                                thread_name_prefix=f"lookup-{provider}") as pool:
            futures = {key: pool.submit(work, key) for key in keys}
            for key, future in futures.items():
                fetched = future.result()
                if fetched is None:
                    continue
                results[key] = fetched.result
                _account(stats, fetched)
    finally:
        if own_client:
            client.close()
    for key in keys:
        if key not in results:
            reason, why = next(iter(stop.items()))
            results[key] = _not_called(provider, key, reason,
                                       f"not called: the run stopped earlier ({why})")
    return results


def lease_s(settings: ProviderSettings) -> float:
    """How long one fetch may hold its lease: every attempt's connect and deadline, the
    backoffs between them and the longest wait for a rate-limit slot."""
    attempts = settings.max_retries + 1
    return (attempts * (settings.connect_timeout_s + settings.deadline_s)
            + settings.max_retries * max(settings.backoff_max_s, settings.max_retry_after_s)
            + settings.max_wait_s)


def _wait_for_lease(provider: str, key: tuple[str, str], settings: ProviderSettings,
                    cache: AnswerStore, since: float | None) -> base.LookupResult | None:
    """Claim the fetch of `key`; while another run or worker holds it, wait for its answer.
    None: this worker holds the lease and fetches. A result: an answer another fetch stored in
    the meantime, read from the cache; for a refreshed key (`since` set, epoch seconds) only one
    fetched since this run began. An answer received just before this run started but stored
    just after its cache look (another host's body upload, say) is used, not paid again."""
    def fresh() -> base.LookupResult | None:
        answered = cache.get(provider, *key, origin=settings.origin)
        if answered is None or since is None:  # not refreshed: any unexpired answer will do
            return answered
        if answered.fetched_at is None:
            return None
        return answered if answered.fetched_at.timestamp() >= since else None

    poll_s = 0.05
    while not cache.claim(provider, *key, lease_s(settings)):
        answered = fresh()
        if answered is not None:
            return answered
        time.sleep(poll_s)  # the holder is fetching; its lease ends at the latest on expiry
        poll_s = min(0.5, poll_s * 1.5)
    answered = fresh()  # fetched and released by another since this run looked at the cache
    if answered is not None:
        cache.release(provider, *key)
    return answered


def _account(stats: LookupStats, fetched: Fetched) -> None:
    result = fetched.result
    if fetched.attempts:
        stats.calls += 1
        stats.http_requests += fetched.attempts
    if result.latency_ms is not None:
        stats.latencies_ms.append(result.latency_ms)
    if result.quota_remaining is not None:
        stats.quota_remaining = result.quota_remaining

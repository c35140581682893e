"""Rate limits and quotas shared by every process on the machine, per provider.

Parallel steps and concurrent backfill runs must spend one budget, so the buckets live in a
file-locked SQLite file (pyrate-limiter's SQLiteBucket) in the data directory, or in Redis when
given a Redis URL (which one is configuration's business: cti_assets.state.config). The buckets
count the per-minute/day/month budgets; the per-second pace is kept by spacing the requests
evenly on the same backend (cti_assets.providers.spacing), since a sliding window alone lets a
window's worth through at once. Next to the
buckets, a quota ledger records "exhausted until <end of the UTC day/month>" when a provider says
its quota is spent, so every process stops calling it for the rest of the window, and keeps the
last quota the provider reported.

The ledger is a `QuotaLedger`: the SQLite one here (next to the buckets, the embedded default)
or, for several hosts, one in Redis or PostgreSQL (cti_assets.state.quota), so a quota one host
saw exhausted stops the others too.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pyrate_limiter import (
    AbstractBucket,
    BucketFactory,
    Limiter,
    Rate,
    RateItem,
    RedisBucket,
    SQLiteBucket,
    TimeClock,
)
from pyrate_limiter.exceptions import BucketFullException, LimiterDelayException

from cti_assets import settings as data_settings
from cti_assets.providers import base, spacing
from cti_assets.state.sqlite_wal import connect_wal

if TYPE_CHECKING:
    import redis

    from cti_assets.providers.config import ProviderSettings

DEFAULT_KEY_PREFIX = "cti_assets"
LEAK_EVERY_S = 30.0
WINDOW_MS: dict[str, int] = {
    "second": 1_000,
    "minute": 60_000,
    "day": 86_400_000,
    "month": 30 * 86_400_000,  # sliding 30 days locally; the ledger uses the calendar month
}
_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_ledger (
    provider TEXT NOT NULL, window TEXT NOT NULL, exhausted_until REAL NOT NULL,
    reason TEXT, recorded_at REAL NOT NULL, PRIMARY KEY (provider, window));
CREATE TABLE IF NOT EXISTS quota_reported (
    provider TEXT NOT NULL, window TEXT NOT NULL, remaining INTEGER NOT NULL,
    reported_at REAL NOT NULL, PRIMARY KEY (provider, window));
"""


class QuotaLedger(Protocol):
    """Where one provider's quota records live: exhaustions (epoch seconds) and reports."""

    def mark(self, window: str, until_ts: float, reason: str) -> None: ...

    def exhausted_until(self, now_ts: float) -> float | None: ...

    def clear(self) -> None: ...

    def record_reported(self, window: str, remaining: int, at_ts: float) -> None: ...

    def reported(self, window: str) -> tuple[int, float] | None: ...

    def close(self) -> None: ...


class SqliteQuotaLedger:
    """The embedded quota ledger: two tables in the provider's rate-limit SQLite file."""

    def __init__(self, path: Path, provider: str) -> None:
        self.provider = provider
        self.conn = connect_wal(path, 30.0, check_same_thread=False)
        self.lock = threading.Lock()
        with self.lock:
            self.conn.executescript(_LEDGER_SCHEMA)

    def mark(self, window: str, until_ts: float, reason: str) -> None:
        with self.lock, self.conn:
            self.conn.execute(
                "INSERT INTO quota_ledger VALUES (?, ?, ?, ?, ?) ON CONFLICT(provider, window) "
                "DO UPDATE SET exhausted_until=excluded.exhausted_until, reason=excluded.reason, "
                "recorded_at=excluded.recorded_at",
                (self.provider, window, until_ts, reason, time.time()),
            )

    def exhausted_until(self, now_ts: float) -> float | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT MAX(exhausted_until) FROM quota_ledger WHERE provider = ? "
                "AND exhausted_until > ?", (self.provider, now_ts),
            ).fetchone()
        return float(row[0]) if row and row[0] else None

    def clear(self) -> None:
        with self.lock, self.conn:
            self.conn.execute("DELETE FROM quota_ledger WHERE provider = ?", (self.provider,))

    def record_reported(self, window: str, remaining: int, at_ts: float) -> None:
        with self.lock, self.conn:
            self.conn.execute(
                "INSERT INTO quota_reported VALUES (?, ?, ?, ?) ON CONFLICT(provider, window) "
                "DO UPDATE SET remaining=excluded.remaining, reported_at=excluded.reported_at",
                (self.provider, window, int(remaining), at_ts),
            )

    def reported(self, window: str) -> tuple[int, float] | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT remaining, reported_at FROM quota_reported WHERE provider = ? "
                "AND window = ?", (self.provider, window),
            ).fetchone()
        return (int(row[0]), float(row[1])) if row else None

    def count_bucket(self, provider: str, since_ms: int) -> int:
        """Items of the SQLite bucket of `provider` (same file) since `since_ms`."""
        with self.lock:
            row = self.conn.execute(
                f'SELECT COUNT(*) FROM "bucket_{provider}" WHERE item_timestamp >= ?',
                (since_ms,),
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self.lock:
            self.conn.close()


QuotaFactory = Callable[[str], QuotaLedger]


@dataclass
class Blocked:
    """Why a request may not leave now: an error class for the result and a message."""

    error_class: str
    message: str
    window: str | None = None


def end_of_window(window: str, now: datetime) -> datetime:
    """Start of the next UTC day or calendar month after `now`."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "month":
        first = day.replace(day=1)
        return (first + timedelta(days=32)).replace(day=1)
    return day + timedelta(days=1)


def rates_for(limits: dict[str, float | int | None]) -> list[Rate]:
    """pyrate-limiter rates, shortest window first; a window whose limit a longer window
    already enforces (limit not smaller) is dropped, as pyrate-limiter requires."""
    rates: list[Rate] = []
    for window in ("second", "minute", "day", "month"):
        value = limits.get(window)
        if not value or value <= 0:
            continue
        if window == "second" and value < 1:
            rates.append(Rate(1, int(round(1000 / value))))
        else:
            rates.append(Rate(int(value), WINDOW_MS[window]))
    rates.sort(key=lambda r: r.interval)
    return [r for i, r in enumerate(rates) if all(r.limit < later.limit for later in rates[i + 1:])]


class _OneBucket(BucketFactory):
    """A single-bucket factory without pyrate-limiter's background Leaker thread (which dies
    with an AssertionError once its bucket is disposed); SharedLimiter leaks on acquire."""

    def __init__(self, bucket: AbstractBucket) -> None:
        self.bucket = bucket
        self.clock = TimeClock()

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        return RateItem(name, self.clock.now(), weight=weight)

    def get(self, _item: RateItem) -> AbstractBucket:
        return self.bucket


class SharedLimiter:
    """One provider's machine-wide limiter: blocking acquire, quota ledger, remaining budget."""

    def __init__(
        self,
        provider: str,
        limits: dict[str, float | int | None],
        *,
        path: str | Path | None = None,
        redis_url: str | None = None,
        max_wait_s: float = 120.0,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        quota: QuotaFactory | None = None,
        account: str | None = None,
    ) -> None:
        account = account or provider
        for name in (provider, account):
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"provider name {name!r} is not a plain identifier")
        self.provider = provider
        # what the buckets, spacing and quota records are kept under (ProviderSettings.state_name)
        self.account = account
        self.limits = {w: limits.get(w) for w in WINDOW_MS}
        self.path = Path(path) if path is not None else data_settings.ratelimit_path(account)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the per-second pace is the spacing's (one request every interval); the buckets count
        # the minute/day/month budgets
        self.interval = spacing.interval_for(self.limits["second"])
        self.rates = rates_for({**self.limits, "second": None})
        self.max_wait_s = max_wait_s
        self.key_prefix = key_prefix
        self._quota_factory = quota
        self._file = SqliteQuotaLedger(self.path, account)  # the embedded ledger, and counts
        self.quota: QuotaLedger = quota(account) if quota is not None else self._file
        self._redis_url = redis_url
        self._bucket: AbstractBucket | None = None
        self._redis: redis.Redis | None = None
        self._limiter: Limiter | None = None
        self._next_leak = 0.0
        self.spacer: spacing.Spacer | None = None
        if self._redis_url and (self.rates or self.interval is not None):
            import redis

            self._redis = redis.Redis.from_url(self._redis_url)
        if self.rates:
            self._bucket = self._make_bucket()
            # each put counts and inserts atomically under the bucket's file lock (or a Redis
            # script); retry_until_max_delay re-checks after every wait, as multi-process needs
            self._limiter = Limiter(
                _OneBucket(self._bucket),
                raise_when_fail=True,
                max_delay=int(max_wait_s * 1000),
                retry_until_max_delay=True,
            )
        if self.interval is not None:
            self.spacer = self._make_spacer(self.interval)

    @classmethod
    def for_settings(cls, settings: ProviderSettings, *, path: str | Path | None = None,
                     redis_url: str | None = None, key_prefix: str = DEFAULT_KEY_PREFIX,
                     quota: QuotaFactory | None = None) -> SharedLimiter:
        """The limiter of `settings.name` with its per-second/minute/day/month limits."""
        limits = {
            "second": settings.per_second,
            "minute": settings.per_minute,
            "day": settings.per_day,
            "month": settings.per_month,
        }
        return cls(settings.name, limits, path=path, redis_url=redis_url,
                   max_wait_s=settings.max_wait_s, key_prefix=key_prefix, quota=quota,
                   account=settings.state_name)

    def sibling(self, settings: ProviderSettings) -> SharedLimiter:
        """Another provider's limiter on the same backends (Shodan's InternetDB fallback)."""
        return SharedLimiter.for_settings(settings, path=self.path, redis_url=self._redis_url,
                                          key_prefix=self.key_prefix, quota=self._quota_factory)

    @property
    def backend(self) -> str:
        """Where the buckets and the quota records live, for metadata (no address)."""
        buckets = "redis" if self._redis is not None else "sqlite"
        if self._bucket is None and self.spacer is None:
            buckets = "none"
        quota = getattr(self.quota, "backend", "sqlite")
        return f"buckets={buckets}, quota={quota}"

    def _make_bucket(self) -> AbstractBucket:
        if self._redis is not None:
            key = f"{self.key_prefix}:ratelimit:{self.account}"
            return RedisBucket.init(self.rates, self._redis, key)
        return SQLiteBucket.init_from_file(
            self.rates, table=f"bucket_{self.account}", db_path=str(self.path),
            create_new_table=True, use_file_lock=True,
        )

    def _make_spacer(self, interval: float) -> spacing.Spacer:
        if self._redis is not None:
            key = f"{self.key_prefix}:spacing:{self.account}"
            return spacing.RedisSpacer(self._redis, key, interval)
        return spacing.SqliteSpacer(self.path, self.account, interval)

    # --- acquiring -------------------------------------------------------------------------
    def acquire(self) -> Blocked | None:
        """Wait for a slot (up to max_wait_s); None when the request may go, else why not.

        The buckets first (they may hold a request back for a minute/day window), then the
        evenly spaced slot, so requests a bucket held back together still leave one by one. A
        request the spacing then refuses (its slot beyond max_wait_s) stays counted in the
        buckets: they err on the side of fewer requests."""
        until = self.exhausted_until()
        if until is not None:
            return Blocked(base.ERR_QUOTA, f"{self.provider} quota exhausted until "
                           f"{until.isoformat()} (reported by the provider)", None)
        blocked = self._acquire_bucket()
        if blocked is not None:
            return blocked
        if self.spacer is not None and not spacing.wait_for_slot(self.spacer, self.max_wait_s):
            return Blocked(base.ERR_RATE, f"no {self.provider} request slot within the allowed "
                           f"wait ({self.max_wait_s:g} s at one request every "
                           f"{self.spacer.interval:.3f} s)", "second")
        return None

    def _acquire_bucket(self) -> Blocked | None:
        if self._limiter is None:
            return None
        self._leak()
        try:
            self._limiter.try_acquire(self.provider)
        except (LimiterDelayException, BucketFullException) as exc:
            window = next((w for w, ms in WINDOW_MS.items() if ms == exc.rate.interval), None)
            if exc.rate.interval >= WINDOW_MS["day"]:
                return Blocked(base.ERR_QUOTA, f"local {window or 'long-window'} budget of "
                               f"{exc.rate.limit} requests for {self.provider} is used up", window)
            return Blocked(base.ERR_RATE, f"no {self.provider} rate-limit slot within the "
                           f"allowed wait ({exc.rate})", window)
        return None

    def _leak(self) -> None:
        """Drop bucket items older than the longest window, at most every LEAK_EVERY_S."""
        now = time.time()
        if now < self._next_leak or self._bucket is None:
            return
        self._next_leak = now + LEAK_EVERY_S
        self._bucket.leak(int(now * 1000))

    # --- quota ledger ------------------------------------------------------------------------
    def mark_exhausted(self, window: str, reason: str, until: datetime | None = None) -> datetime:
        """Record that the provider's `window` quota is spent until the window ends (or `until`)."""
        until = until or end_of_window(window, datetime.now(UTC))
        self.quota.mark(window, until.timestamp(), reason[:500])
        return until

    def exhausted_until(self) -> datetime | None:
        """When the latest still-active exhaustion ends; None when the provider may be called."""
        until = self.quota.exhausted_until(time.time())
        return datetime.fromtimestamp(until, UTC) if until else None

    def clear_exhausted(self) -> None:
        self.quota.clear()

    def record_reported(self, window: str, remaining: int) -> None:
        """Keep the provider's own count of what is left (X-RateLimit-Remaining)."""
        self.quota.record_reported(window, int(remaining), time.time())

    def _reported(self, window: str) -> int | None:
        row = self.quota.reported(window)
        if row is None:
            return None
        reported_at = datetime.fromtimestamp(row[1], UTC)
        if end_of_window(window, reported_at) <= datetime.now(UTC):
            return None  # reported in an earlier window: it has been reset since
        return int(row[0])

    def used(self, window: str) -> int:
        """Requests counted in the last `window` by every process sharing this limiter."""
        if self._bucket is None:
            return 0
        now_ms = int(time.time() * 1000)
        since = now_ms - WINDOW_MS[window]
        if self._redis is not None and isinstance(self._bucket, RedisBucket):
            return int(self._redis.zcount(self._bucket.bucket_key, since, now_ms))
        return self._file.count_bucket(self.account, since)

    def remaining(self, window: str) -> int | None:
        """Requests left in `window` ("second", "minute", "day", "month"); None = no limit known.

        The smaller of the local count against the configured limit and the provider's last
        reported remaining; 0 while the ledger says the quota is exhausted.
        """
        if window not in WINDOW_MS:
            raise ValueError(f"window must be one of {', '.join(WINDOW_MS)}, not {window!r}")
        if self.exhausted_until() is not None:
            return 0
        candidates = []
        limit = self.limits.get(window)
        if limit:
            candidates.append(max(0, int(limit) - self.used(window)))
        reported = self._reported(window) if window in ("day", "month") else None
        if reported is not None:
            candidates.append(max(0, reported))
        return min(candidates) if candidates else None

    def __enter__(self) -> SharedLimiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.spacer is not None:
            self.spacer.close()
        if isinstance(self._bucket, SQLiteBucket):
            self._bucket.conn.close()
        if self._redis is not None:
            self._redis.close()
        if self.quota is not self._file:
            self.quota.close()
        self._file.close()


def remaining(provider: str, window: str, settings: ProviderSettings | None = None, *,
              path: str | Path | None = None) -> int | None:
    """Requests `provider` has left in `window` on this machine (see SharedLimiter.remaining);
    the limits come from `settings`, else from the environment (config.settings_from_env)."""
    if settings is None:
        from cti_assets.providers.config import settings_from_env

        settings = settings_from_env(provider)
    with SharedLimiter.for_settings(settings, path=path) as limiter:
        return limiter.remaining(window)

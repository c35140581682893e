"""Even spacing of one provider's requests across every process on the machine (GCRA).

The sliding-window buckets (cti_assets.providers.ratelimit) admit a whole window's worth at
once; a provider whose own window is aligned differently, or that sees the requests a few
milliseconds later than they were counted, then finds more than its rate in one of its windows
and answers 429. The generic cell rate algorithm spaces requests instead: one shared
"theoretical arrival time" (TAT) per provider; each request reserves the slot max(now, TAT) and
pushes TAT on by one interval, 1 / (HEADROOM x rate). Any window of length W then holds at most
floor(W x HEADROOM x rate) + 1 reserved slots, never more than the provider's rate, and the
HEADROOM share absorbs the jitter between a reserved slot and the request reaching the provider.

The TAT lives where the buckets live: a row of the provider's rate-limit SQLite file updated in
a BEGIN IMMEDIATE transaction, or a Redis key updated by a Lua script (whose clock is Redis's
own, so hosts sharing it agree). A caller cancelled while it waits for its slot gives the slot
back (`release`): the TAT steps back when it was the last one reserved, otherwise the slot is
kept aside and handed to the next request that can still use it on time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cti_assets.state.sqlite_wal import connect_wal

if TYPE_CHECKING:
    import redis

# Share of the provider's documented rate the spacing aims at (the one owner of this margin).
HEADROOM = 0.9
# How late after its slot a request may still leave. A window of 1 s then holds the requests of
# slots at most 1 + LATE_S apart: below the rate while (1 + LATE_S) x HEADROOM < 1, i.e. LATE_S
# under 0.11 s; half of that is left for the send itself to reach the provider.
LATE_S = 0.05
_EPS = 1e-6  # slots are compared after a float round trip through SQLite or Redis


def interval_for(per_second: float | None) -> float | None:
    """Seconds between two requests at HEADROOM of the per-second rate; None without one (the
    per-minute and longer budgets stay with the buckets, which may release a whole window's
    worth: such providers are slow enough that a window's worth is what they document)."""
    if not per_second or per_second <= 0:
        return None
    return 1.0 / (HEADROOM * per_second)


class Spacer(Protocol):
    """A shared schedule of one provider's request slots."""

    interval: float

    def reserve(self, max_wait_s: float) -> tuple[float, float] | None:
        """Reserve the next slot: (slot, wait in seconds from now), or None when the slot would
        be more than `max_wait_s` away (nothing reserved then)."""
        ...

    def release(self, slot: float) -> None:
        """Give back a reserved slot that will not be used."""
        ...

    def close(self) -> None: ...


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS spacing_tat (provider TEXT PRIMARY KEY, tat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spacing_returned (
    provider TEXT NOT NULL, slot REAL NOT NULL, PRIMARY KEY (provider, slot));
"""


class SqliteSpacer:
    """The schedule in the provider's rate-limit SQLite file (one host)."""

    def __init__(self, path: Path, provider: str, interval: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self.interval = interval
        self.clock = clock
        self.conn = connect_wal(path, 60.0, isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()
        with self.lock:
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SQLITE_SCHEMA)

    def _transaction(self, body: Callable[[sqlite3.Connection], tuple[float, float] | None]
                     ) -> tuple[float, float] | None:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            return result

    def reserve(self, max_wait_s: float) -> tuple[float, float] | None:
        def body(conn: sqlite3.Connection) -> tuple[float, float] | None:
            now = self.clock()
            conn.execute("DELETE FROM spacing_returned WHERE provider = ? AND slot < ?",
                         (self.provider, now))
            row = conn.execute("SELECT MIN(slot) FROM spacing_returned WHERE provider = ?",
                               (self.provider,)).fetchone()
            if row[0] is not None and row[0] - now <= max_wait_s:
                conn.execute("DELETE FROM spacing_returned WHERE provider = ? AND slot = ?",
                             (self.provider, row[0]))
                return float(row[0]), float(row[0]) - now
            row = conn.execute("SELECT tat FROM spacing_tat WHERE provider = ?",
                               (self.provider,)).fetchone()
            slot = max(now, float(row[0]) if row else now)
            if slot - now > max_wait_s:
                return None
            conn.execute("INSERT INTO spacing_tat VALUES (?, ?) ON CONFLICT(provider) "
                         "DO UPDATE SET tat = excluded.tat", (self.provider, slot + self.interval))
            return slot, slot - now

        return self._transaction(body)

    def release(self, slot: float) -> None:
        def body(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT tat FROM spacing_tat WHERE provider = ?",
                               (self.provider,)).fetchone()
            if row is not None and abs(float(row[0]) - (slot + self.interval)) < _EPS:
                conn.execute("UPDATE spacing_tat SET tat = ? WHERE provider = ?",
                             (slot, self.provider))
            elif slot >= self.clock():
                conn.execute("INSERT OR IGNORE INTO spacing_returned VALUES (?, ?)",
                             (self.provider, slot))
            return None

        self._transaction(body)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


# KEYS: TAT key, returned-slots sorted set. ARGV: interval, max wait (seconds).
# Returns {slot, now} as strings (Redis's clock), or false when the slot is too far away.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.6f', now))
local back = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #back > 0 and tonumber(back[2]) - now <= max_wait then
  redis.call('ZREM', KEYS[2], back[1])
  return {back[1], string.format('%.6f', now)}
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, tat)
if slot - now > max_wait then return false end
local ttl = math.ceil((slot + interval - now) * 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.6f', slot + interval), 'PX', ttl)
return {string.format('%.6f', slot), string.format('%.6f', now)}
"""

# KEYS: TAT key, returned-slots sorted set. ARGV: interval, slot.
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval, slot = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if math.abs(tat - (slot + interval)) < 1e-5 then
  redis.call('SET', KEYS[1], string.format('%.6f', slot), 'KEEPTTL')
elseif slot >= now then
  redis.call('ZADD', KEYS[2], slot, string.format('%.6f', slot))
  redis.call('PEXPIRE', KEYS[2], math.ceil((slot - now) * 1000) + 60000)
end
return 1
"""


class RedisSpacer:
    """The schedule in Redis, one key per provider (hosts sharing the Redis share it)."""

    def __init__(self, client: redis.Redis, key: str, interval: float) -> None:
        self.client = client
        self.interval = interval
        self.keys = [f"{key}:tat", f"{key}:returned"]
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    def reserve(self, max_wait_s: float) -> tuple[float, float] | None:
        answer = self._reserve(keys=self.keys, args=[repr(self.interval), repr(max_wait_s)])
        if not answer:
            return None
        slot, now = (float(v) for v in answer)
        return slot, slot - now

    def release(self, slot: float) -> None:
        self._release(keys=self.keys, args=[repr(self.interval), f"{slot:.6f}"])

    def close(self) -> None:
        return None  # the Redis client belongs to the limiter


def wait_for_slot(spacer: Spacer, max_wait_s: float,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> bool:
    """Reserve a slot and sleep until it; False when none is within `max_wait_s`. A caller
    interrupted while sleeping (KeyboardInterrupt, a run's termination) gives the slot back.

    A caller that wakes more than LATE_S after its slot (a thread starved of CPU or of the
    interpreter lock) does not use it: requests of slots that lay a second apart would otherwise
    leave together, a burst above the rate. The late slot is spent (it lies in the past, no one
    else can use it) and the caller reserves the next free one."""
    gave_up_at = clock() + max_wait_s
    while True:
        reserved = spacer.reserve(max(0.0, gave_up_at - clock()))
        if reserved is None:
            return False
        slot, wait = reserved
        due = clock() + wait
        if wait > 0:
            try:
                sleep(wait)
            except BaseException:
                spacer.release(slot)
                raise
        if clock() - due <= LATE_S:
            return True

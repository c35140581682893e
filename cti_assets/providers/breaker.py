"""Fail fast: a per-provider circuit breaker shared by the workers of one lookup run.

A dead provider used to cost every row its own timeouts and retries (a 60-observable day with a
hanging provider took 557 s). Here consecutive transient failures (timeouts, refused or reset
connections, deadlines, 5xx and proxy error pages) open the breaker; while it is open no request
leaves and the row is deferred (deferred/provider_unavailable) for a later run. After
`cooldown_s` one probe goes out (half-open): an answer closes the breaker, a failure reopens it.
After a failure, while other requests are still in flight, a worker waits for their verdict
before sending (at most `settle_s`): otherwise the first workers to fail would retry before the
others' failures open the breaker, and a dead provider would cost several timeouts in a row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Thread-safe closed -> open -> half-open -> closed state machine."""

    def __init__(self, failure_threshold: int, cooldown_s: float, *, settle_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = max(1, int(failure_threshold))
        self.cooldown_s = float(cooldown_s)
        self.settle_s = float(settle_s)
        self._clock = clock
        self._lock = threading.Condition()
        self._in_flight = 0
        self._state = CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_out = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._consecutive_failures

    def allow(self) -> bool:
        """Whether a request may leave now; in half-open only the one probe may. Each allowed
        request must end with record_success, record_failure or cancel."""
        settle_until = time.monotonic() + self.settle_s
        with self._lock:
            while (self._state == CLOSED and self._consecutive_failures and self._in_flight
                   and self._lock.wait(max(0.0, settle_until - time.monotonic()))):
                pass
            if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                self._state = HALF_OPEN
                self._probe_out = False
            if self._state == HALF_OPEN and not self._probe_out:
                self._probe_out = True
            elif self._state != CLOSED:
                return False
            self._in_flight += 1
            return True

    def _ended(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        self._lock.notify_all()

    def cancel(self) -> None:
        """The request `allow` let through never left (no limiter slot): no verdict."""
        with self._lock:
            self._ended()
            if self._state == HALF_OPEN:
                self._probe_out = False

    def record_success(self) -> None:
        """The provider answered (any answer that is not a transient failure)."""
        with self._lock:
            self._ended()
            self._state = CLOSED
            self._consecutive_failures = 0
            self._probe_out = False

    def record_failure(self) -> None:
        """A transient failure: counts towards opening; a failed probe reopens at once."""
        with self._lock:
            self._ended()
            self._consecutive_failures += 1
            if self._state == HALF_OPEN or (
                self._state == CLOSED and self._consecutive_failures >= self.failure_threshold
            ):
                self._state = OPEN
                self._opened_at = self._clock()
                self._probe_out = False

"""A token bucket shared by every thread of a process that calls one service (Stripe or ARM).

Threads take a token before each request; when the bucket is empty they wait for the refill, so
the process as a whole stays under `rate` requests a second with bursts of at most `burst`.
A 429 from the service empties the bucket until its Retry-After has passed (`pause`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"the rate must be above 0 requests a second, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        if self.burst < 1:
            raise ValueError(f"the burst must allow at least one request, got {burst}")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()
        self._paused_until = 0.0
        self.taken = 0  # requests admitted, for summaries and benchmarks

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def acquire(self) -> None:
        """Block until one request may be made."""
        while True:
            with self._lock:
                now = self._clock()
                if now < self._paused_until:
                    wait = self._paused_until - now
                else:
                    self._refill(now)
                    if self._tokens >= 1:
                        self._tokens -= 1
                        self.taken += 1
                        return
                    wait = (1 - self._tokens) / self.rate
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """The service said to wait (429 Retry-After): nobody in this process sends until then."""
        with self._lock:
            now = self._clock()
            self._paused_until = max(self._paused_until, now + max(0.0, seconds))
            self._tokens = 0.0
            self._updated = now

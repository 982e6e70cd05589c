"""Retrying calls to a rate-limited service: 429 honours Retry-After, 5xx and network errors back off.

The adapters translate their SDK's errors into `Throttled` / `Transient`; everything else is final.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from billing.usage.ratelimit import TokenBucket

T = TypeVar("T")

MAX_ATTEMPTS = 6
BASE_DELAY = 0.5  # seconds; doubled per attempt, with jitter
MAX_DELAY = 30.0


class Throttled(Exception):
    """The service answered 429; `retry_after` is its Retry-After in seconds (None if absent)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transient(Exception):
    """A 5xx answer or a network error: worth another try."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def backoff_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter for attempt 1, 2, ..."""
    ceiling: float = min(MAX_DELAY, BASE_DELAY * 2 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def call_with_retry(
    call: Callable[[], T],
    bucket: TokenBucket,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call` under the bucket's budget, retrying throttling and transient failures."""
    attempt = 0
    while True:
        attempt += 1
        bucket.acquire()
        try:
            return call()
        except Throttled as exc:
            if attempt >= max_attempts:
                raise
            wait = exc.retry_after if exc.retry_after is not None else backoff_delay(attempt)
            bucket.pause(wait)  # every thread of the process waits, not only this one
        except Transient:
            if attempt >= max_attempts:
                raise
            sleep(backoff_delay(attempt))

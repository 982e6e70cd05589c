"""A time budget for work done while Stripe waits for the webhook's answer (pure)."""

from __future__ import annotations

import time
from collections.abc import Callable


class DeadlineExceeded(Exception):
    """The remaining budget is too small for the next step: defer the rest to the work queue."""


class Deadline:
    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    @classmethod
    def unbounded(cls) -> Deadline:
        return cls(None)

    def step_timeout(self, at_most: float, at_least: float = 0.5) -> float:
        """The timeout for the next call: `at_most`, cut to what is left; DeadlineExceeded if too little."""
        if self._end is None:
            return at_most
        left = self._end - self._clock()
        if left < at_least:
            raise DeadlineExceeded(f"{max(left, 0):.1f} s left of the budget")
        return min(at_most, left)

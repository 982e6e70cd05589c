"""The Query API's documented limits, and the request-rate throttle that enforces one of them.

Defaults are the real service's (README.md, [LIM], [THR], [TMO]); tests pass small ones.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    max_records: int = 500_000  # "Maximum records returned in a single query | 500,000"
    max_bytes: int = 64_000_000  # the real answer names "internal data size limit 64000000"
    requests_per_window: int = 200  # "200 requests per 30 seconds per Microsoft Entra user or client IP address"
    window_seconds: float = 30.0
    default_timeout_seconds: float = 180.0  # "The default timeout is 3 minutes."
    max_timeout_seconds: float = 600.0  # "The maximum timeout is 10 minutes."

    def __post_init__(self) -> None:
        for name in ("max_records", "max_bytes", "requests_per_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of 1 or more, not {value!r}")
        for name in ("window_seconds", "default_timeout_seconds", "max_timeout_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a number of seconds above 0, not {value!r}")
        if self.default_timeout_seconds > self.max_timeout_seconds:
            raise ValueError("default_timeout_seconds must not exceed max_timeout_seconds")


@dataclass
class Throttle:
    """A sliding window of admitted requests per caller, on the emulator's clock (so tests need no sleep)."""

    limit: int
    window_seconds: float
    _seen: dict[str, deque[float]] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def admit(self, caller: str, now: float) -> int | None:
        """None when the request may run (and is counted); else the whole seconds until one may."""
        with self._lock:
            times = self._seen.setdefault(caller, deque())
            while times and times[0] <= now - self.window_seconds:
                times.popleft()
            if len(times) >= self.limit:
                return max(1, math.ceil(times[0] + self.window_seconds - now))
            times.append(now)
            return None

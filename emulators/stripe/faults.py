"""Fault injection set per run: latency, random 429/500 answers, a per-second rate limit."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

from emulators.stripe.wire import StripeError


@dataclass
class FaultSettings:
    latency_ms: int = 0  # added to every API request
    error_rate_429: float = 0.0  # fraction of API requests answered 429 rate_limit
    error_rate_500: float = 0.0  # fraction answered 500 api_error
    duplicate_webhooks: float = 0.0  # fraction of webhook deliveries sent twice
    reorder_webhooks: bool = False  # deliver each batch of due webhooks in shuffled order
    rate_limit: int = 0  # API requests per second before 429 (live Stripe: 100); 0 = none
    seed: int | None = None

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON patch of settings, refusing unknown names and bad values."""
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}; known: {', '.join(sorted(known))}")
            current = getattr(self, name)
            if isinstance(current, bool) or name == "reorder_webhooks":
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
            elif name in ("latency_ms", "rate_limit"):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{name} must be a whole number >= 0")
            elif name == "seed":
                if value is not None and not isinstance(value, int):
                    raise ValueError("seed must be an integer or null")
            elif not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a fraction between 0 and 1")
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    """Decides, per API request, whether to delay it or answer it with an injected error."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._lock = threading.Lock()
        self._recent: deque[float] = deque()

    def reseed(self) -> None:
        self._rng = random.Random(self.settings.seed)

    def chance(self, fraction: float) -> bool:
        with self._lock:
            return fraction > 0 and self._rng.random() < fraction

    def shuffle(self, items: list[Any]) -> None:
        with self._lock:
            self._rng.shuffle(items)

    def before_request(self) -> None:
        """Sleep for the configured latency, then raise the injected error if one is due."""
        cfg = self.settings
        if cfg.latency_ms:
            time.sleep(cfg.latency_ms / 1000)
        if cfg.rate_limit:
            now = time.monotonic()
            with self._lock:
                while self._recent and now - self._recent[0] >= 1.0:
                    self._recent.popleft()
                limited = len(self._recent) >= cfg.rate_limit
                if not limited:
                    self._recent.append(now)
            if limited:
                raise rate_limited()
        if self.chance(cfg.error_rate_429):
            raise rate_limited()
        if self.chance(cfg.error_rate_500):
            raise StripeError(
                "An unknown error occurred (injected by the emulator's faults).", status=500, type="api_error"
            )


def rate_limited() -> StripeError:
    return StripeError(
        "Request rate limit exceeded. You can make up to 100 read and 100 write operations per second "
        "in live mode. (injected by the emulator)",
        status=429,
        code="rate_limit",
    )

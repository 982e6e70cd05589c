"""Fault injection for the management API: added latency, ARM throttling (429), server errors (5xx)."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    latency_ms: int = 0
    error_rate_429: float = 0.0
    error_rate_500: float = 0.0
    retry_after_seconds: int = 1
    seed: int | None = None
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.validate()
        if self.seed is not None:
            self._rng.seed(self.seed)

    def validate(self) -> None:
        for name in ("error_rate_429", "error_rate_500"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, not {rate}")
        if self.error_rate_429 + self.error_rate_500 > 1.0:
            raise ValueError("error_rate_429 + error_rate_500 must not exceed 1")
        if self.latency_ms < 0 or self.retry_after_seconds < 0:
            raise ValueError("latency_ms and retry_after_seconds must be zero or more")

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON object of settings (as posted to /_emulator/faults); ValueError names bad fields."""
        allowed = {
            "latency_ms": int,
            "error_rate_429": float,
            "error_rate_500": float,
            "retry_after_seconds": int,
            "seed": int,
        }
        unknown = set(changes) - set(allowed)
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; known: {sorted(allowed)}")
        parsed: dict[str, Any] = {}
        for name, value in changes.items():
            kind = allowed[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
                raise ValueError(f"{name} must be a {'whole number' if kind is int else 'number'}, not {value!r}")
            parsed[name] = kind(value)
        with self._lock:
            old = {name: getattr(self, name) for name in parsed}
            for name, value in parsed.items():
                setattr(self, name, value)
            try:
                self.validate()
            except ValueError:
                for name, value in old.items():
                    setattr(self, name, value)
                raise
            if "seed" in parsed:
                self._rng.seed(parsed["seed"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate_429": self.error_rate_429,
            "error_rate_500": self.error_rate_500,
            "retry_after_seconds": self.retry_after_seconds,
        }

    def draw(self) -> int | None:
        """The status to fail this request with (429 or 500), or None to serve it."""
        with self._lock:
            roll = self._rng.random()
            if roll < self.error_rate_429:
                return 429
            if roll < self.error_rate_429 + self.error_rate_500:
                return 500
            return None

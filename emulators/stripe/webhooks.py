"""Signed webhook deliveries, in event order per endpoint, retried with exponential backoff."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from emulators.stripe.faults import Faults


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header value: t=<unix time>,v1=<HMAC-SHA256 of "t.payload">."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


@dataclass(order=True)
class Delivery:
    due: float
    seq: int
    endpoint_id: str = field(compare=False)
    url: str = field(compare=False)
    secret: str = field(compare=False)
    event_id: str = field(compare=False)
    payload: bytes = field(compare=False)
    attempts: int = field(default=0, compare=False)


@dataclass
class DeliveryRecord:
    event_id: str
    endpoint_id: str
    status: int | None
    attempt: int
    error: str | None = None


class Deliverer:
    """One background thread posts due deliveries; a failure is retried later without blocking others."""

    def __init__(self, faults: Faults, retry_base: float = 0.2, max_attempts: int = 6, timeout: float = 10.0):
        self._faults = faults
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self.timeout = timeout
        self._cond = threading.Condition()
        self._queue: list[Delivery] = []
        self._in_flight = 0
        self._seq = 0
        self._stop = False
        self.log: list[DeliveryRecord] = []
        self.given_up: list[DeliveryRecord] = []
        self._thread = threading.Thread(target=self._run, name="stripe-emulator-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout + 2)

    def enqueue(self, endpoint_id: str, url: str, secret: str, event_id: str, payload: bytes) -> None:
        with self._cond:
            copies = 2 if self._faults.chance(self._faults.settings.duplicate_webhooks) else 1
            for _ in range(copies):
                self._seq += 1
                self._queue.append(Delivery(time.monotonic(), self._seq, endpoint_id, url, secret, event_id, payload))
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _take_due(self) -> list[Delivery]:
        """Wait until something is due, then take all due deliveries in order (or shuffled)."""
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                due = sorted(d for d in self._queue if d.due <= now)
                if due:
                    for d in due:
                        self._queue.remove(d)
                    self._in_flight += len(due)
                    if self._faults.settings.reorder_webhooks:
                        self._faults.shuffle(due)
                    return due
                wait = min((d.due for d in self._queue), default=now + 1.0) - now
                self._cond.wait(max(0.01, min(wait, 1.0)))
            return []

    def _run(self) -> None:
        while True:
            batch = self._take_due()
            if not batch:
                return
            for delivery in batch:
                self._attempt(delivery)

    def _attempt(self, d: Delivery) -> None:
        d.attempts += 1
        status: int | None = None
        error: str | None = None
        request = urllib.request.Request(  # noqa: S310 - URL comes from the test's own configuration
            d.url,
            data=d.payload,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Stripe-Signature": sign(d.payload, d.secret),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        record = DeliveryRecord(d.event_id, d.endpoint_id, status, d.attempts, error)
        with self._cond:
            self._in_flight -= 1
            self.log.append(record)
            ok = status is not None and 200 <= status < 300
            if not ok and not self._stop:
                if d.attempts < self.max_attempts:
                    d.due = time.monotonic() + self.retry_base * (2 ** (d.attempts - 1))
                    self._queue.append(d)
                else:
                    self.given_up.append(record)
            self._cond.notify_all()

    def describe(self) -> dict[str, Any]:
        with self._cond:
            return {
                "pending": len(self._queue) + self._in_flight,
                "delivered": sum(1 for r in self.log if r.status is not None and 200 <= r.status < 300),
                "attempts": len(self.log),
                "given_up": [r.__dict__ for r in self.given_up],
            }

"""A per-instance limit on concurrent password hashing, so that sign-in floods cannot exhaust the host.

Each Argon2id check holds 19 MiB and a core for some 30 ms, and a password-strength check (zxcvbn)
up to about a second for long passwords of substituted characters. Without a limit, every anonymous
request that reaches a password check adds one, until the instance's memory and CPU are spent and
the webhook and health endpoints starve. Requests beyond the limit wait a moment for a slot and are
then refused (the caller answers 429 with Retry-After) instead of queueing without bound: a
Functions instance runs synchronous functions on a small thread pool, which a queue would fill.

The hashes run on the budget's own threads, one per slot: glibc keeps a malloc arena per thread
that has allocated, and an arena keeps the 19 MiB it once held, so hashing on every request
thread would leave that much behind in each (measured: 369 MiB after a flood; bench/README.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

WAIT_SECONDS = 0.25  # about eight checks' time: a short burst is served, a flood is refused
RETRY_AFTER_SECONDS = 2
_T = TypeVar("_T")


class HashingBusy(Exception):
    """Every hashing slot of this instance stayed taken; try again after `retry_after` seconds."""

    retry_after = RETRY_AFTER_SECONDS


def default_slots() -> int:
    # Leave one core to everything else (webhooks, health, page rendering) on multi-core hosts.
    return max(1, (os.cpu_count() or 1) - 1)


class HashBudget:
    def __init__(self, slots: int | None = None, wait_seconds: float = WAIT_SECONDS) -> None:
        self.slots = slots or default_slots()
        self._admitted = threading.BoundedSemaphore(self.slots)
        self._wait = wait_seconds
        self._pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="password-hash")

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Admission to the budget: HashingBusy if no slot came free in time; `compute` runs inside.

        Callers take the slot before they count anything against the consumer (a guess, a request),
        so an instance that is busy answers 429 without using up anyone's allowance.
        """
        if not self._admitted.acquire(timeout=self._wait):
            raise HashingBusy
        try:
            yield
        finally:
            self._admitted.release()

    def compute(self, work: Callable[[], _T]) -> _T:
        """The result of `work` (a hash or a password-strength check), on the budget's own threads."""
        return self._pool.submit(work).result()

    def run(self, work: Callable[[], _T]) -> _T:
        with self.slot():
            return self.compute(work)

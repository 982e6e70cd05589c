"""Readiness: does each dependency answer, within a short time? Names and outcomes only.

`GET /api/health?ready=1` is anonymous, so what it costs is bounded here, not by the caller: the
probes run at most once per `CACHE_SECONDS` per instance (concurrent callers share one run, later
ones get the cached answer), side by side, and the answer waits at most `TIMEOUT_SECONDS`. A probe
that has not answered by then is reported as "timeout" and left to finish on its own thread; the
next run starts only after the cache expires. An outcome names the exception type, never its
message (which may hold a URL, an account name or a key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

TIMEOUT_SECONDS = 3.0
CACHE_SECONDS = 30.0

Probe = Callable[[], None]


@dataclass(frozen=True)
class Readiness:
    checked_at: float
    outcomes: dict[str, str]  # dependency -> "ok", "timeout" or "failed (<exception type>)"

    @property
    def ready(self) -> bool:
        return all(outcome == "ok" for outcome in self.outcomes.values())


def run_probes(probes: Mapping[str, Probe], timeout: float, pool: ThreadPoolExecutor) -> dict[str, str]:
    futures = {name: pool.submit(probe) for name, probe in probes.items()}
    wait(futures.values(), timeout=timeout)
    outcomes = {}
    for name, future in futures.items():
        if not future.done():
            outcomes[name] = "timeout"
        elif (error := future.exception()) is not None:
            outcomes[name] = f"failed ({type(error).__name__})"
        else:
            outcomes[name] = "ok"
    return outcomes


class ReadinessCheck:
    """One per process: runs the probes when the cached answer is older than `cache_seconds`."""

    def __init__(
        self,
        probes: Callable[[], Mapping[str, Probe]],
        *,
        timeout: float = TIMEOUT_SECONDS,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = probes
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last: Readiness | None = None
        # A probe stuck past its timeout keeps a thread; the pool's size bounds how many can pile up.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readiness")
        self.runs = 0

    def current(self) -> Readiness:
        with self._lock:  # one run at a time; callers meanwhile wait for it and share its answer
            now = self._clock()
            if self._last is None or now - self._last.checked_at >= self._cache_seconds:
                self.runs += 1
                self._last = Readiness(now, run_probes(self._probes(), self._timeout, self._pool))
            return self._last

"""Time: the real clock and test clocks, each with a queue of timed billing actions."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REAL = ""  # the key of the wall clock's queue; test clocks use their id


@dataclass(order=True)
class Action:
    when: int
    seq: int
    name: str = field(compare=False)
    run: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Scheduler:
    """Timed actions (renewals, finalisation, payment retries) per clock, run in time order.

    Test clocks run theirs when advanced; the wall clock's run from a background ticker.
    The caller holds the store lock while scheduling and running.
    """

    def __init__(
        self, lock: threading.RLock, set_frozen: Callable[[str, int], None], wall: Callable[[], float] = time.time
    ) -> None:
        self._lock = lock
        self._set_frozen = set_frozen
        self._wall = wall  # the emulator's own clock (tests can move it forward, see Core.advance_wall_clock)
        self._queues: dict[str, list[Action]] = {}
        self._seq = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def at(self, clock: str, when: int, name: str, run: Callable[[], None]) -> Action:
        action = Action(when, next(self._seq), name, run)
        heapq.heappush(self._queues.setdefault(clock, []), action)
        return action

    def pending(self, clock: str) -> list[Action]:
        return sorted(a for a in self._queues.get(clock, []) if not a.cancelled)

    def run_until(self, clock: str, until: int) -> None:
        """Run every action due at or before `until`, including ones that earlier actions add."""
        queue = self._queues.setdefault(clock, [])
        while queue and queue[0].when <= until:
            action = heapq.heappop(queue)
            if action.cancelled:
                continue
            if clock != REAL:
                self._set_frozen(clock, action.when)
            try:
                action.run()
            except Exception as exc:  # keep the clock going; report through /_emulator/health
                self.errors.append(f"{action.name}: {type(exc).__name__}: {exc}")
        if clock != REAL:
            self._set_frozen(clock, until)

    def start_ticker(self, interval: float = 0.2) -> None:
        def tick() -> None:
            while not self._stop.wait(interval):
                with self._lock:
                    self.run_until(REAL, int(self._wall()))

        self._thread = threading.Thread(target=tick, name="stripe-emulator-ticker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

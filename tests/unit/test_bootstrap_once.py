"""The composition root builds each client once, and a slow build holds up only the uses of its own key."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from billing.bootstrap import Services


def test_two_first_uses_of_a_key_build_it_once() -> None:
    services, builds, started = Services({}), [], threading.Event()
    release = threading.Event()

    def build() -> object:
        builds.append(1)
        started.set()
        release.wait(10)
        return object()

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(services._once, "stripe", build)
        assert started.wait(10)
        second = pool.submit(services._once, "stripe", build)
        release.set()
        assert first.result(10) is second.result(10)
    assert len(builds) == 1


def test_a_slow_build_does_not_hold_up_another_keys_build() -> None:
    services, release = Services({}), threading.Event()
    slow_started = threading.Event()

    def slow() -> str:
        slow_started.set()
        release.wait(10)  # a table's creation over the network, say
        return "table"

    with ThreadPoolExecutor(2) as pool:
        table = pool.submit(services._once, "table:usage", slow)
        assert slow_started.wait(10)
        # Built while the table's build still waits: it is not queued behind it.
        assert pool.submit(services._once, "stripe", lambda: "stripe").result(5) == "stripe"
        assert not table.done()
        release.set()
        assert table.result(10) == "table"
    assert services._once("table:usage", lambda: "again") == "table"

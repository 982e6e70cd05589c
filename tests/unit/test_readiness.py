"""Readiness of the dependencies (billing.ops.readiness): outcomes by name, a bounded wait, and a cache
that keeps anonymous callers from multiplying the probes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from billing.ops.readiness import ReadinessCheck, run_probes

SECRET = "sk_live_do_not_show"


def test_each_dependency_is_named_with_its_outcome_and_no_error_text() -> None:
    release = threading.Event()

    def ok() -> None:
        return None

    def refused() -> None:
        raise PermissionError(f"key {SECRET} refused at https://vault.example/secrets/x")

    def stuck() -> None:
        release.wait()

    with ThreadPoolExecutor(4) as pool:
        outcomes = run_probes({"stripe": ok, "tableStorage": refused, "apiManagement": stuck}, 0.05, pool)
        release.set()
    assert outcomes == {"stripe": "ok", "tableStorage": "failed (PermissionError)", "apiManagement": "timeout"}
    assert SECRET not in repr(outcomes)


def test_answers_are_cached_so_callers_cannot_multiply_the_probes() -> None:
    now = [1000.0]
    calls: list[str] = []

    def stripe() -> None:
        calls.append("stripe")

    check = ReadinessCheck(lambda: {"stripe": stripe}, timeout=5, cache_seconds=30, clock=lambda: now[0])
    first = check.current()
    for _ in range(50):
        assert check.current() is first
    now[0] += 29.9
    assert check.current() is first
    now[0] += 0.1
    second = check.current()
    assert second is not first
    assert second.ready
    assert calls == ["stripe", "stripe"]


def test_concurrent_callers_share_one_run() -> None:
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def slow() -> None:
        runs.append(1)
        started.set()
        release.wait()

    check = ReadinessCheck(lambda: {"stripe": slow}, timeout=5, cache_seconds=30)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(check.current())) for _ in range(8)]
    threads[0].start()
    started.wait()
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join()
    assert len(runs) == 1
    assert check.runs == 1
    assert len({id(a) for a in answers}) == 1

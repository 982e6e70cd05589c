"""Benchmark (not a test): the usage push against the naive per-subscription approach, at scale.

    .venv/bin/python -m bench.usage_bench [--sizes 1000,10000,100000] [--latency-ms 50]
        [--stripe-rps 100] [--processes 2] [--workers 8] [--naive-sample 1000]

Per size it starts its own Azurite, Stripe emulator and APIM emulator on free loopback ports and
seeds, with no latency and no limits (setup is not measured), the state of a steady day: yesterday's
push ran, today's is due.
- N APIM subscriptions (`ApimEmulator.bulk_create_subscriptions`) on the three metered products
  (developer, payg, standard, in turn), each with synthetic usage beyond its included calls
  (`record_usage`, one row each) since yesterday's push, so every subscription has an event to send;
- N/3 Stripe customers (`StripeEmulator.bulk_create_customers`: the API's own handler without
  HTTP; a consumer holds one subscription of each metered product, so events of one customer go to
  three different meters);
- N subscription links in Azurite (one row per subscription, as the webhook area writes them, here
  in transactions: `SubscriptionLinks.bulk_insert`), each with its own billing anchor: period starts
  spread over the last 29 days, one second apart or more, as real subscriptions' anchors are;
- their watermarks as yesterday's push left them (cursor at yesterday's window end).

Then it sets both emulators to `--latency-ms` per request and Stripe to a rate limit of
`--stripe-rps` requests a second (Stripe's live-mode limit is 100; the emulator answers 429 beyond).
The APIM emulator has no rate limit, so ARM's documented read limit (a token bucket of 250
requests refilled at 25 a second, per subscription and principal) is enforced in the client for
both approaches. Measured:

- usage push: the app's own code with the app's adapters (`ApimUsageReports`, `StripeMeterSender`,
  `Watermarks`): `runner.fan_out` in a timer process, which puts each product's batches on a queue
  as soon as that product's report is read, and `runner.handle_message` in `--processes` worker
  processes taking messages as they come, at most `--workers` at a time each, as queue-triggered
  Functions instances would; each worker process has its share of the Stripe budget. (8 at a time:
  the work is CPU-bound Python, and more threads per process only add GIL contention here; 16, the
  host.json batchSize, took 44.7-47.8 s at 100,000 in three runs, 8 took 40.6 and 43.5 s.)
- naive (the Microsoft sample's `reportUsageToStripe`): per subscription one report call filtered on
  the subscription, one usage call (a v1 meter event, today's form of a usage record) and one update
  (`customers.update` metadata standing in for the sample's `subscriptions.update`: the bench makes
  no Stripe subscriptions; both are one Stripe write). Same budgets, same retries, `--workers`
  threads. Run on at most `--naive-sample` subscriptions; beyond that its wall time is
  extrapolated (marked ~) by keeping the wall/floor ratio measured on the sample.

Two floors, and the ratio of wall time to each:
- rate-limit floor: the least time the limits allow for the requests made: the larger of ARM's
  (reads beyond the 250 burst at 25/s) and Stripe's (requests / stripe-rps);
- latency floor: the chain of requests that must wait for one another, however parallel the rest:
  for the push, the first report page (it states the row count), the other pages side by side, then
  a meter send (3 x latency; 2 x with a single page); for the naive approach, per subscription a
  report, then a usage call, then an update (3 x latency).
The note under the push also gives the two rate limits one after the other, the floor of a push
that read one report for everyone (a subscription's row may be on any page, so no event could be
computed before the last page): reading product by product is what lets Stripe's requests overlap
ARM's reads and the wall time go below that. Neither floor counts CPU or the emulators' own speed:
`cpu s` is the CPU seconds of the timer and worker processes, and the note adds the CPU of the
emulators (the bench's main process) and of Azurite (Node): all share the machine's cores, and
when their sum nears cores x wall, the run is CPU-bound, not waiting on a limit.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import stripe  # noqa: E402
from azure.core.exceptions import HttpResponseError  # noqa: E402
from azure.data.tables import TableClient  # noqa: E402
from azure.mgmt.apimanagement.models import ProductContract  # noqa: E402

from billing.adapters.apim_client import ApimService, apim_service  # noqa: E402
from billing.adapters.storage import ensure_table, table  # noqa: E402
from billing.adapters.stripe_client import stripe_client  # noqa: E402
from billing.adapters.usage_meter import StripeMeterSender  # noqa: E402
from billing.adapters.usage_reports import ApimUsageReports, report_filter  # noqa: E402
from billing.catalog_names import CUSTOMER_META_APIM_USER, METER_CUSTOMER_KEY, METER_VALUE_KEY, meter_event_name  # noqa: E402
from billing.model_loader import load_models  # noqa: E402
from billing.models import MonetizationModels  # noqa: E402
from billing.store.groups import group_of  # noqa: E402
from billing.store.subscriptions import SubscriptionLink, SubscriptionLinks  # noqa: E402
from billing.store.tables import SUBSCRIPTIONS_TABLE, USAGE_WATERMARKS_TABLE  # noqa: E402
from billing.store.watermarks import Watermarks  # noqa: E402
from billing.usage.ports import Watermark, WatermarkWrite  # noqa: E402
from billing.usage.push import PushSummary, UsagePush  # noqa: E402
from billing.usage.ratelimit import TokenBucket  # noqa: E402
from billing.usage.retry import Throttled, Transient, call_with_retry, parse_retry_after  # noqa: E402
from billing.usage.runner import fan_out, handle_message  # noqa: E402
from billing.usage.windows import ReportWindow  # noqa: E402
from billing.usage.wiring import DEFAULT_BATCH_SIZE  # noqa: E402
from devstack.azurite import Azurite  # noqa: E402
from emulators.apim.server import ApimEmulator  # noqa: E402
from emulators.stripe.server import StripeEmulator  # noqa: E402

PRODUCTS = ("developer", "payg", "standard")  # the metered products of payment/monetizationModels.json
ARM_READ_BURST = 250  # ARM (2024 token bucket): subscription reads, bucket size
ARM_READ_RPS = 25.0  # ... refill per second
LAG_SECONDS = 1800
DAY = 86400
SETUP_THREADS = 16


@dataclass
class Result:
    approach: str
    subscriptions: int
    wall: float
    apim_requests: int
    stripe_requests: int
    floor: float  # rate-limit floor
    latency_floor: float = 0.0
    cpu: float | None = None  # process CPU seconds during the run (None: extrapolated)
    extrapolated: bool = False
    note: str = ""


def arm_floor(reads: int) -> float:
    return max(0, reads - ARM_READ_BURST) / ARM_READ_RPS


def floor_seconds(apim_requests: int, stripe_requests: int, stripe_rps: float) -> float:
    """The least time the rate limits allow: the slower of the two services (they run side by side)."""
    return max(arm_floor(apim_requests), stripe_requests / stripe_rps)


def push_latency_floor(report_pages: int, latency_ms: int) -> float:
    """First page, then the other pages side by side, then one meter send (see the module docstring)."""
    return (3 if report_pages > 1 else 2) * latency_ms / 1000


def calls_for(product: str, n: int, models: MonetizationModels) -> int:
    """Successful calls of subscription n: always beyond the included calls, so every one bills."""
    return models.product(product).included_calls + 1 + n % 997


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def stripe_budget(rps: float) -> TokenBucket:
    # The emulator counts requests in any sliding second: a 5% margin and a small burst never exceed it.
    return TokenBucket(rps * 0.95, burst=max(1, int(rps // 20)))


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of another process so far, from /proc (0.0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def arm_budget() -> TokenBucket:
    return TokenBucket(ARM_READ_RPS, burst=ARM_READ_BURST)


# Setup ------------------------------------------------------------------------------------------
@dataclass
class Seeded:
    links: list[SubscriptionLink]
    expected_overage: int  # sum over subscriptions of the calls beyond the included ones
    window: ReportWindow  # today's push window: yesterday's window end to now minus the lag
    setup_seconds: float


def seed(size: int, stripe_emu: StripeEmulator, apim_emu: ApimEmulator, *, env: dict[str, str],
         models: MonetizationModels, as_of: int) -> Seeded:  # fmt: skip
    started = time.monotonic()
    client = stripe_emu.client()
    for pid in PRODUCTS:
        client.v1.billing.meters.create(params={"display_name": f"{pid} calls", "event_name": meter_event_name(pid),
                                                "default_aggregation": {"formula": "sum"}})  # fmt: skip
    consumers = -(-size // len(PRODUCTS))
    customers = stripe_emu.bulk_create_customers(
        (f"bench{n}@example.com", {CUSTOMER_META_APIM_USER: f"bench{n}"}) for n in range(consumers))

    mgmt = apim_emu.management_client(retry_total=0)
    for pid in PRODUCTS:
        mgmt.product.create_or_update(apim_emu.resource_group, apim_emu.service_name, pid, ProductContract(
            display_name=pid, subscription_required=True, approval_required=False, state="published"))  # fmt: skip
    mgmt.close()
    window = ReportWindow(as_of - LAG_SECONDS - DAY, as_of - LAG_SECONDS)  # yesterday's end to today's
    spread = 29 * DAY // size or 1  # anchors one second apart or more over the last 29 days
    links, expected = [], 0
    by_product: dict[str, list[str]] = {pid: [] for pid in PRODUCTS}
    for n in range(size):
        pid = PRODUCTS[n % len(PRODUCTS)]
        sid = f"sub_bench{n:07d}"
        by_product[pid].append(sid)
        period_start = window.start - 1 - n * spread
        links.append(SubscriptionLink(
            apim_subscription_id=sid, apim_user_id=f"bench{n // len(PRODUCTS)}", product_id=pid,
            subscription_name=sid, stripe_customer_id=customers[n // len(PRODUCTS)], stripe_subscription_id=sid,
            stripe_usage_item_id=f"si_bench{n:07d}", stripe_status="active", apim_state="active",
            current_period_start=period_start, current_period_end=period_start + 30 * DAY, stripe_state_at=as_of,
        ))  # fmt: skip
    for pid, sids in by_product.items():
        apim_emu.bulk_create_subscriptions(sids, product_id=pid)
    usage_at = datetime.fromtimestamp(window.start + 3600, UTC)
    for n, link in enumerate(links):
        calls = calls_for(link.product_id, n, models)
        apim_emu.record_usage(link.apim_subscription_id, calls, at=usage_at)
        apim_emu.record_usage(link.apim_subscription_id, 3, at=usage_at, outcome="blocked")
        expected += calls - models.product(link.product_id).included_calls

    writer = SubscriptionLinks(ensure_table(SUBSCRIPTIONS_TABLE, env))
    ordered = sorted(links, key=lambda lk: group_of(lk.apim_subscription_id))  # a partition in one share
    step = -(-len(ordered) // SETUP_THREADS)
    shares = [ordered[n : n + step] for n in range(0, len(ordered), step)]
    with ThreadPoolExecutor(SETUP_THREADS) as pool:  # a transaction per partition and 100 links
        list(pool.map(writer.bulk_insert, shares))
    # Yesterday's push: every watermark's cursor at the end of its window, nothing reported yet.
    marks = Watermarks(ensure_table(USAGE_WATERMARKS_TABLE, env))
    marks.write(WatermarkWrite(Watermark(lk.apim_subscription_id, lk.product_id, lk.current_period_start), 0,
                               window.start)
                for lk in links)  # fmt: skip
    return Seeded(links, expected, window, time.monotonic() - started)


def set_latency(stripe_emu: StripeEmulator, apim_emu: ApimEmulator, latency_ms: int, stripe_rps: int) -> None:
    answer = requests.post(f"{stripe_emu.base_url}/_emulator/faults",
                           json={"latency_ms": latency_ms, "rate_limit": stripe_rps}, timeout=10)  # fmt: skip
    answer.raise_for_status()
    apim_emu.faults.update({"latency_ms": latency_ms})


class TimedWatermarks(Watermarks):
    """The app's watermark repository, adding up the time spent in its Table Storage transactions.

    The figure says how much of the workers' time goes to Table Storage writes.
    """

    def __init__(self, table: TableClient) -> None:
        super().__init__(table)
        self.seconds = 0.0
        self._lock = threading.Lock()

    def write(self, writes: Iterable[WatermarkWrite]) -> dict[str, Watermark]:
        started = time.monotonic()
        try:
            return super().write(writes)
        finally:
            with self._lock:
                self.seconds += time.monotonic() - started


# The usage push -----------------------------------------------------------------------------------
# As on Azure Functions, the timer and the queue workers run in their own processes (instances), not
# in the one that hosts the emulators; `--processes` worker processes take the batches, each with
# `--workers` threads and its share of the Stripe budget.
_PROCESS: dict[str, Any] = {}


def _init_process(env: dict[str, str], stripe_rps: float, barrier: Any, queue: Any) -> None:
    os.environ.update(env)
    service = apim_service(env)
    reports = ApimUsageReports(service, arm_budget())
    meter = StripeMeterSender(stripe_client(env), stripe_budget(stripe_rps))
    marks = TimedWatermarks(table(USAGE_WATERMARKS_TABLE, env))  # the app's clients (billing.adapters.storage)
    links = SubscriptionLinks(table(SUBSCRIPTIONS_TABLE, env))
    _PROCESS.update(push=UsagePush(load_models(), reports, meter, marks, links, lag_seconds=LAG_SECONDS,
                                   batch_size=DEFAULT_BATCH_SIZE), reports=reports, meter=meter, marks=marks,
                    barrier=barrier, queue=queue)  # fmt: skip


def _ready(_: int) -> int:
    _PROCESS["barrier"].wait(60)  # every process of the pool initialised, each holding one of these
    return os.getpid()


def _timer(as_of: int, consumers: int) -> dict[str, Any]:
    """The timer trigger: `fan_out`, each batch put on the queue as soon as its product's report is read."""
    push: UsagePush = _PROCESS["push"]
    queue = _PROCESS["queue"]
    started, cpu = time.monotonic(), time.process_time()
    plan = fan_out(push, queue.put, as_of)
    seconds = time.monotonic() - started
    for _ in range(consumers):
        queue.put(None)  # no more messages
    return {"batches": len(plan.batches), "reads": plan.report_reads, "phases": plan.phases,
            "apim": _PROCESS["reports"].requests, "azurite": _PROCESS["marks"].requests, "seconds": seconds,
            "cpu": time.process_time() - cpu}  # fmt: skip


def _worker(threads: int) -> dict[str, Any]:
    """A Functions instance's queue trigger: up to `threads` messages at once, taken as they come."""
    push: UsagePush = _PROCESS["push"]
    queue = _PROCESS["queue"]
    cpu = time.process_time()
    rest: list[bytes] = []
    total = PushSummary()
    errors: list[str] = []
    free = threading.BoundedSemaphore(threads)

    def one(body: bytes) -> PushSummary:
        try:
            return handle_message(push, body, rest.append)
        except Exception as exc:  # as the queue trigger would: the message fails and is retried later
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            return PushSummary()
        finally:
            free.release()

    with ThreadPoolExecutor(threads) as pool:
        futures = []
        while True:
            free.acquire()  # take a message only when a thread is free, as the queue trigger does
            body = queue.get()
            if body is None:
                break
            futures.append(pool.submit(one, body))
        for future in futures:
            total.add(future.result())
    marks: TimedWatermarks = _PROCESS["marks"]
    return {"summary": total, "rest": len(rest), "errors": errors, "stripe": dict(_PROCESS["meter"].requests),
            "azurite": marks.requests, "write_seconds": marks.seconds, "cpu": time.process_time() - cpu}  # fmt: skip


def _pool(env: dict[str, str], processes: int, stripe_rps: float, queue: Any) -> Any:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    pool = context.Pool(processes, initializer=_init_process, initargs=(env, stripe_rps, barrier, queue))
    pool.map(_ready, range(processes), chunksize=1)
    return pool


def run_push(env: dict[str, str], seeded: Seeded, *, as_of: int, processes: int, workers: int,
             stripe_rps: int, latency_ms: int, azurite_pid: int | None) -> Result:  # fmt: skip
    queue = multiprocessing.get_context("spawn").Queue()  # the Storage queue between timer and workers
    timer_pool = _pool(env, 1, stripe_rps, queue)
    worker_pool = _pool(env, processes, stripe_rps / processes, queue)
    try:
        started, main_cpu, azurite_cpu = time.monotonic(), time.process_time(), process_cpu(azurite_pid)
        timing = timer_pool.apply_async(_timer, (as_of, processes))
        done = worker_pool.map(_worker, [workers] * processes, chunksize=1)
        planned = timing.get()
        wall = time.monotonic() - started
        emulators_cpu = time.process_time() - main_cpu  # this process only serves the two emulators now
        azurite_cpu = process_cpu(azurite_pid) - azurite_cpu
    finally:
        timer_pool.terminate()
        worker_pool.terminate()
    total = PushSummary()
    meter_requests: dict[str, int] = {}
    for part in done:
        total.add(part["summary"])
        for kind, n in part["stripe"].items():
            meter_requests[kind] = meter_requests.get(kind, 0) + n
    stripe_requests = sum(meter_requests.values())
    # With one report read for everyone, no event could be computed before the whole report is read
    # (a subscription's row may be on any page): the two rate limits would apply one after the other.
    # Reading product by product lets them overlap; this says how much that bought.
    sequential = arm_floor(planned["apim"]) + stripe_requests / stripe_rps
    cpu = planned["cpu"] + sum(part["cpu"] for part in done)
    problems = []
    rest = sum(part["rest"] for part in done)
    errors = [e for part in done for e in part["errors"]]
    if total.failed or rest or errors:
        problems.append(f"{total.failed} failed, {rest} re-enqueued, {len(errors)} messages raised "
                        f"(first: {errors[0] if errors else '-'})")  # fmt: skip
    if total.events_sent != len(seeded.links) or total.calls_reported != seeded.expected_overage:
        problems.append(f"sent {total.events_sent} events / {total.calls_reported} calls, expected "
                        f"{len(seeded.links)} / {seeded.expected_overage}")  # fmt: skip
    note = (
        f"{planned['batches']} batches, {planned['reads']} report reads (a product each); timer "
        f"{planned['seconds']:.1f}s (links listed at {planned['phases']['links']:.1f}s, first product's batches "
        f"queued at {planned['phases'].get('first batches', 0):.1f}s, last at {planned['phases']['reports']:.1f}s); "
        f"{processes} worker processes x {workers} threads; meter {meter_requests}; "
        f"floors: ARM {arm_floor(planned['apim']):.1f}s, Stripe {stripe_requests / stripe_rps:.1f}s, one after the "
        f"other {sequential:.1f}s (wall/that {wall / sequential if sequential else 0:.2f}); Azurite "
        f"{planned['azurite'] + sum(p['azurite'] for p in done)} requests, watermark writes "
        f"{sum(p['write_seconds'] for p in done):.1f}s summed over threads; cpu s = timer + workers; "
        f"CPU of the {os.cpu_count()} cores' {wall * (os.cpu_count() or 1):.0f} core-s: push {cpu:.0f} (timer "
        f"{planned['cpu']:.0f}), "
        f"emulators {emulators_cpu:.0f}, Azurite {azurite_cpu:.0f}"
    )
    if problems:
        note += f"; PROBLEM: {'; '.join(problems)}"
    return Result("usage push", len(seeded.links), wall, planned["apim"], stripe_requests,
                  floor_seconds(planned["apim"], stripe_requests, stripe_rps),
                  push_latency_floor(planned["apim"], latency_ms), cpu, note=note)  # fmt: skip


# The naive approach (the Microsoft sample) ----------------------------------------------------------
def _stripe_call(call: Any) -> Any:
    try:
        return call()
    except stripe.RateLimitError as exc:
        raise Throttled("Stripe rate limit", parse_retry_after((exc.headers or {}).get("Retry-After"))) from None
    except stripe.APIConnectionError as exc:
        raise Transient(str(exc)) from None


def _arm_call(call: Any) -> Any:
    try:
        return call()
    except HttpResponseError as exc:
        if exc.status_code == 429:
            raise Throttled("ARM throttled", None) from None
        if (exc.status_code or 0) >= 500:
            raise Transient(str(exc)) from None
        raise


def run_naive(env: dict[str, str], seeded: Seeded, *, sample: int, as_of: int, workers: int, stripe_rps: int,
              latency_ms: int) -> Result:  # fmt: skip
    service: ApimService = apim_service(env)
    client = stripe_client(env)
    arm, stripe_bucket = arm_budget(), stripe_budget(stripe_rps)
    links = seeded.links[:sample]
    window = seeded.window
    counters = {"apim": 0, "stripe": 0}
    lock = threading.Lock()

    def count(name: str) -> None:
        with lock:
            counters[name] += 1

    stamp = datetime.fromtimestamp(as_of, UTC).isoformat()

    def one(link: SubscriptionLink) -> None:
        def report() -> int:
            count("apim")
            rows: Any = service.client.reports.list_by_subscription(
                service.resource_group, service.service_name,
                filter=report_filter(window, link.apim_subscription_id), retry_total=0)  # fmt: skip
            return sum(int(r.call_count_success or 0) for r in next(rows.by_page()))

        calls = call_with_retry(lambda: _arm_call(report), arm)

        def usage() -> None:
            count("stripe")
            client.v1.billing.meter_events.create(params={
                "event_name": meter_event_name(link.product_id),
                "payload": {METER_CUSTOMER_KEY: link.stripe_customer_id, METER_VALUE_KEY: str(calls)},
                "identifier": f"naive:{link.apim_subscription_id}:{as_of}", "timestamp": window.end - 1,
            }, options={"max_network_retries": 0})  # fmt: skip

        def update() -> None:
            count("stripe")
            client.v1.customers.update(link.stripe_customer_id,
                                       params={"metadata": {f"last_usage_update_{link.product_id}": stamp}},
                                       options={"max_network_retries": 0})  # fmt: skip

        call_with_retry(lambda: _stripe_call(usage), stripe_bucket)
        call_with_retry(lambda: _stripe_call(update), stripe_bucket)

    started, cpu_started = time.monotonic(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, links))
    wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
    service.client.close()
    chain = 3 * latency_ms / 1000  # report, then usage, then update
    measured = Result("naive (sample)", len(links), wall, counters["apim"], counters["stripe"],
                      floor_seconds(counters["apim"], counters["stripe"], stripe_rps), chain, cpu)  # fmt: skip
    size = len(seeded.links)
    if len(links) == size:
        return Result("naive", size, wall, counters["apim"], counters["stripe"], measured.floor, chain, cpu)
    apim_n, stripe_n = size, 2 * size  # per subscription: 1 report call; 1 usage + 1 update
    floor_n = floor_seconds(apim_n, stripe_n, stripe_rps)
    ratio = wall / measured.floor if measured.floor else 1.0
    return Result(
        "naive",
        size,
        ratio * floor_n,
        apim_n,
        stripe_n,
        floor_n,
        chain,
        extrapolated=True,
        note=f"extrapolated from {len(links)} measured in {wall:.1f}s (wall/floor {ratio:.2f} kept)",
    )


# Driver -----------------------------------------------------------------------------------------
def run_size(size: int, args: argparse.Namespace, models: MonetizationModels) -> list[Result]:
    with Azurite() as azurite, StripeEmulator(port=0) as stripe_emu, ApimEmulator() as apim_emu:
        env = {"AzureWebJobsStorage": azurite.connection_string, **stripe_emu.app_settings(),
               **apim_emu.app_settings()}  # fmt: skip
        with environment(env):
            as_of = int(time.time())
            seeded = seed(size, stripe_emu, apim_emu, env=env, models=models, as_of=as_of)
            print(f"  setup: {size:,} subscriptions, {len({lk.stripe_customer_id for lk in seeded.links}):,} "
                  f"customers, links in Azurite, in {seeded.setup_seconds:.0f}s", flush=True)  # fmt: skip
            set_latency(stripe_emu, apim_emu, args.latency_ms, args.stripe_rps)
            push = run_push(env, seeded, as_of=as_of, processes=args.processes, workers=args.workers,
                            azurite_pid=azurite.pid,
                            stripe_rps=args.stripe_rps, latency_ms=args.latency_ms)  # fmt: skip
            naive = run_naive(
                env,
                seeded,
                sample=min(size, args.naive_sample),
                as_of=as_of,
                workers=args.workers,
                stripe_rps=args.stripe_rps,
                latency_ms=args.latency_ms,
            )
    return [push, naive]


def results_table(rows: list[Result]) -> str:
    head = (f"{'approach':<12} {'subs':>8} {'wall s':>9} {'cpu s':>7} {'APIM req':>9} {'Stripe req':>10} "
            f"{'rate floor':>10} {'lat floor':>9} {'wall/rate':>9} {'wall/lat':>8}")  # fmt: skip
    out = [head, "-" * len(head)]
    for r in rows:
        mark = "~" if r.extrapolated else ""
        rate = f"{mark}{r.wall / r.floor:.2f}" if r.floor > 0 else "n/a"
        lat = f"{mark}{r.wall / r.latency_floor:.1f}" if r.latency_floor > 0 else "n/a"
        cpu = "" if r.cpu is None else f"{r.cpu:.1f}"
        out.append(f"{r.approach:<12} {r.subscriptions:>8,} {mark + format(r.wall, '.1f'):>9} {cpu:>7} "
                   f"{r.apim_requests:>9,} {r.stripe_requests:>10,} {r.floor:>10.2f} {r.latency_floor:>9.2f} "
                   f"{rate:>9} {lat:>8}")  # fmt: skip
        if r.note:
            out.append(f"    {r.note}")
    return "\n".join(out)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes whole numbers separated by commas, e.g. 1000,10000; "
                                         f"got '{text}'") from None  # fmt: skip
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--sizes must list numbers of subscriptions >= 1, got '{text}'")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.usage_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=_sizes("1000,10000,100000"))
    parser.add_argument("--latency-ms", type=int, default=50, help="added to every emulator API request")
    parser.add_argument("--stripe-rps", type=int, default=100, help="Stripe requests a second before 429")
    parser.add_argument("--processes", type=int, default=2, help="queue worker processes (Functions instances)")
    parser.add_argument("--workers", type=int, default=8, help="messages at once per worker process; naive threads")
    parser.add_argument("--naive-sample", type=int, default=1000, help="naive subscriptions measured per size")
    args = parser.parse_args(argv)
    if args.latency_ms < 0 or min(args.stripe_rps, args.processes, args.workers, args.naive_sample) < 1:
        parser.error("--latency-ms must be >= 0; --stripe-rps, --processes, --workers and --naive-sample >= 1")
    models = load_models()
    print(f"usage bench: latency {args.latency_ms} ms/request, Stripe {args.stripe_rps} req/s (emulator-enforced), "
          f"ARM reads {ARM_READ_BURST} burst + {ARM_READ_RPS:g}/s (client-enforced), {args.workers} workers, "
          f"batch size {DEFAULT_BATCH_SIZE}", flush=True)  # fmt: skip
    rows: list[Result] = []
    for size in args.sizes:
        print(f"size {size:,}:", flush=True)
        results = run_size(size, args, models)
        print(results_table(results), flush=True)
        rows.extend(results)
    print("\nsummary\n" + results_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

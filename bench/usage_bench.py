"""Benchmark (not a test): the usage push from each usage source, and the naive per-subscription approach, at scale.

    .venv/bin/python -m bench.usage_bench [--sizes 100000,1000000] [--source logs|reports|both]
        [--latency-ms 50] [--stripe-rps 100] [--processes 2] [--workers 8] [--naive-sample 1000]
        [--max-calls 97] [--products developer,payg,standard] [--profile DIR]

Per size it starts its own Azurite, Stripe emulator and APIM emulator (with its Log Analytics
workspace) on free loopback ports and seeds, with no latency and no limits (setup is not measured),
the state of a steady day: yesterday's push ran, today's is due.
- N APIM subscriptions (`ApimEmulator.bulk_create_subscriptions`) on the metered products
  (`--products`, in turn; by default developer, payg, standard), each with 1 to `--max-calls` new
  successful calls and 3 blocked ones since yesterday's push (`record_usage`: one event for the Reports
  API, and one bulk event in the workspace's DuckDB that queries expand into a row per call, the
  emulator's bulk path, flushed into DuckDB before the run);
- N/3 Stripe customers (`StripeEmulator.bulk_create_customers`: the API's own handler without
  HTTP; a consumer holds one subscription of each metered product, so events of one customer go to
  three different meters);
- N subscription links in Azurite (one row per subscription, as the webhook area writes them, here
  in transactions: `SubscriptionLinks.bulk_insert`), each with its own billing anchor: period starts
  spread over the last 29 days, one second apart or more, as real subscriptions' anchors are;
- their watermarks as yesterday's push left them: cursor at yesterday's window end, the product's
  included calls already reported, so every new call bills and every subscription has an event to send.

Then it sets both emulators to `--latency-ms` per request (the workspace has no injected latency:
its queries take the time DuckDB takes) and Stripe to a rate limit of `--stripe-rps` requests a second
(Stripe's live-mode limit is 100; the emulator answers 429 beyond; the meter event stream's 10,000
events a second are 100 requests of 100). The APIM emulator has no ARM rate limit, so the push's reads
are paced by the app's own ARM budget (`USAGE_ARM_REQUESTS_PER_SECOND`, set to ARM's documented refill of
25 a second) and the naive approach's by ARM's documented read limit (a token bucket of 250 requests
refilled at 25 a second, per subscription and principal), enforced in the client; the Log Analytics
adapter has the app's own budget (6 queries a second, `billing.usage.wiring`; the workspace allows 200
per 30 s). Measured:

- usage push, once per source (`--source`; `both`: logs, then reports, each from the same state: the
  watermarks written back to yesterday's and the Stripe emulator's meter events forgotten): the push as
  the Functions app builds it (`billing.bootstrap.services().usage_push()`, from the settings an instance
  would have: `USAGE_SOURCE`, its share of the Stripe budget, the lag, the batch size), so the app's
  adapters (`LogAnalyticsUsage` over the real `LogsQueryClient` and HTTPS, or `ApimUsageReports`;
  `StripeMeterSender`, `Watermarks`) with the app's budgets: `runner.fan_out` in a timer process, which
  puts each product's batches on a queue as soon as that product's usage is read, and
  `runner.handle_message` in `--processes` worker processes taking messages as they come, at most
  `--workers` at a time each, as queue-triggered Functions instances would; each worker process has
  its share of the Stripe budget. (8 at a time: the work is CPU-bound Python, and more threads per
  process only add GIL contention here; 16, the host.json batchSize, took 44.7-47.8 s at 100,000 in
  three runs, 8 took 40.6 and 43.5 s.) `src req` counts the source's requests: KQL queries (shards
  included: the note gives how many queries each product's read needed, 1 = the whole product in one
  query) or report pages.
- naive (the Microsoft sample's `reportUsageToStripe`, with the reports source only): per subscription
  one report call filtered on the subscription, one usage call (a v1 meter event, today's form of a
  usage record) and one update (`customers.update` metadata standing in for the sample's
  `subscriptions.update`: the bench makes no Stripe subscriptions; both are one Stripe write). Same
  budgets, same retries, `--workers` threads. Run on at most `--naive-sample` subscriptions (0: not
  run); beyond that its wall time is extrapolated (marked ~) by keeping the wall/floor ratio
  measured on the sample.

Floors, and the ratio of wall time to each:
- Stripe floor: the meter events due (one per subscription) in full meter event stream requests of
  100 at `--stripe-rps` (at 100 a second, the stream's 10,000 events a second): what no push can beat,
  whatever the source and however it batches. The issue's goal at 1,000,000 subscriptions is the logs
  source within 1.3 x this floor (`wall/Str`) and under 1 GiB of memory.
- rate-limit floor: the least time all the limits allow for the requests actually made: the larger of
  the source's (ARM: reads beyond the 250 burst at 25/s; Log Analytics: queries beyond 6 at 6/s) and
  Stripe's (every Stripe request made, sessions and part-filled stream requests included, at
  `--stripe-rps`); above the Stripe floor when the push sends more requests than the events need;
- latency floor: the chain of requests that must wait for one another, however parallel the rest:
  for the push from reports, the first report page (it states the row count), the other pages side by
  side, then a meter send (3 x latency; 2 x with a single page); from the logs, a meter send (1 x); for
  the naive approach, per subscription a report, then a usage call, then an update (3 x latency).
The note under the push also gives the two rate limits one after the other, the floor of a push
that read one report for everyone (a subscription's row may be on any page, so no event could be
computed before the last page): reading product by product is what lets Stripe's requests overlap
ARM's reads and the wall time go below that. Neither floor counts CPU or the emulators' own speed:
`cpu s` is the CPU seconds of the timer and worker processes, and the note adds the CPU of the
emulators (the bench's main process, DuckDB's queries included) and of Azurite (Node): all share the
machine's cores, and when their sum nears cores x wall, the run is CPU-bound, not waiting on a limit.
The note ends with the machine's load average before and after the run: other work on the machine
shows there (figures taken under load are slower than the code).

Memory: `peak MiB` is the highest RSS high-water mark (VmHWM) among the timer and worker processes,
each a Functions instance of its own; the note gives each process's, what it held idle (imports and
clients), and their sum. The emulators' process and Azurite are not the app's and only noted.

`--max-calls` (default 97, 1-97 calls a subscription, about 50) sets how many gateway-log rows the
workspace's queries expand and count: DuckDB does that in the bench's own process, on the cores the
push needs, where Log Analytics would do it on Azure's. The app's own work does not depend on it (a
row per subscription comes back either way): at 100,000 subscriptions, 1-997 calls (50 million rows)
took 24.0 s and 1-97 (5 million) 21.9 s, the three reads 10.0 s against 6.2 s, most of it while the
links were listed; at 1,000,000, 1-997 would be 500 million rows for DuckDB on the bench's 2 cores.

`--products payg` puts every subscription on one product, so that at 1,000,000 a product's result
passes Log Analytics' 500,000-row limit and is read in shards (with the three products, 333,334 rows
each, one query a product). `--profile DIR` writes a cProfile of the timer and of each worker process
(every thread of each, merged) for `python -m pstats`.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import stripe  # noqa: E402
from azure.core.exceptions import HttpResponseError  # noqa: E402
from azure.mgmt.apimanagement.models import ProductContract  # noqa: E402

from billing import bootstrap  # noqa: E402
from billing.adapters.apim_client import ApimService, apim_service  # noqa: E402
from billing.adapters.storage import ensure_table, table  # noqa: E402
from billing.adapters.stripe_client import stripe_client  # noqa: E402
from billing.adapters.usage_logs import LogAnalyticsUsage  # noqa: E402
from billing.adapters.usage_meter import STREAM_MAX_EVENTS  # noqa: E402
from billing.adapters.usage_reports import ApimUsageReports, report_filter  # noqa: E402
from billing.catalog_names import CUSTOMER_META_APIM_USER, METER_CUSTOMER_KEY, METER_VALUE_KEY, meter_event_name  # noqa: E402
from billing.model_loader import load_models  # noqa: E402
from billing.models import MonetizationModels  # noqa: E402
from billing.records import SubscriptionLink  # noqa: E402
from billing.store.groups import group_of  # noqa: E402
from billing.store.subscriptions import SubscriptionLinks  # noqa: E402
from billing.store.tables import SUBSCRIPTIONS_TABLE, USAGE_WATERMARKS_TABLE  # noqa: E402
from billing.store.watermarks import Watermarks  # noqa: E402
from billing.usage.ports import Watermark, WatermarkWrite  # noqa: E402
from billing.usage.push import PushSummary, UsagePush  # noqa: E402
from billing.usage.ratelimit import TokenBucket  # noqa: E402
from billing.usage.retry import Throttled, Transient, call_with_retry, parse_retry_after  # noqa: E402
from billing.usage.runner import fan_out, handle_message  # noqa: E402
from billing.usage.windows import ReportWindow  # noqa: E402
from billing.usage.wiring import DEFAULT_BATCH_SIZE, LOGS_REQUESTS_PER_SECOND  # noqa: E402
from devstack.azurite import Azurite  # noqa: E402
from emulators.apim.server import ApimEmulator  # noqa: E402
from emulators.stripe.server import StripeEmulator  # noqa: E402

PRODUCTS = ("developer", "payg", "standard")  # the metered products of payment/monetizationModels.json
SOURCES = ("logs", "reports")  # USAGE_SOURCE: Log Analytics (the default) or APIM's Reports API
ARM_READ_BURST = 250  # ARM (2024 token bucket): subscription reads, bucket size
ARM_READ_RPS = 25.0  # ... refill per second
LOGS_BURST = LOGS_REQUESTS_PER_SECOND  # the app's Log Analytics budget (billing.usage.wiring): TokenBucket(6)
LAG_SECONDS = 1800
DAY = 86400
SETUP_THREADS = 16
MIB = 1024 * 1024
AZURITE_HEAP_MIB = 12 * 1024

T = TypeVar("T")


@dataclass
class Result:
    approach: str
    subscriptions: int
    wall: float
    source_requests: int  # report pages (reports), KQL queries (logs), report calls (naive)
    stripe_requests: int
    floor: float  # rate-limit floor: the slower of the source's limit and Stripe's
    stripe_floor: float = 0.0  # the events due, 100 a request, at the Stripe budget
    latency_floor: float = 0.0
    cpu: float | None = None  # process CPU seconds during the run (None: extrapolated)
    peak_rss: int | None = None  # bytes: the highest RSS high-water mark of the timer and worker processes
    extrapolated: bool = False
    note: str = ""


def arm_floor(reads: int) -> float:
    return max(0, reads - ARM_READ_BURST) / ARM_READ_RPS


def logs_floor(queries: int) -> float:
    """The app's own Log Analytics budget (6/s, under the service's 200 per 30 s) for `queries` queries."""
    return max(0.0, queries - LOGS_BURST) / LOGS_REQUESTS_PER_SECOND


def source_floor(source: str, requests: int) -> float:
    return logs_floor(requests) if source == "logs" else arm_floor(requests)


def stripe_floor_seconds(events: int, stripe_rps: float) -> float:
    """The events in full meter event stream requests (100 each) at the Stripe budget: the issue's floor."""
    return -(-events // STREAM_MAX_EVENTS) / stripe_rps


def floor_seconds(apim_requests: int, stripe_requests: int, stripe_rps: float, source: str = "reports") -> float:
    """The least time the rate limits allow: the slower of the two services (they run side by side)."""
    return max(source_floor(source, apim_requests), stripe_requests / stripe_rps)


def push_latency_floor(source: str, report_pages: int, latency_ms: int) -> float:
    """Reports: first page, then the other pages side by side, then one meter send; logs: a meter send
    (the workspace has no injected latency; see the module docstring)."""
    if source == "logs":
        return latency_ms / 1000
    return (3 if report_pages > 1 else 2) * latency_ms / 1000


def calls_for(n: int, max_calls: int) -> int:
    """Subscription n's new successful calls in today's window: 1 to `max_calls`, all billable (its
    watermark already holds its product's included calls)."""
    return 1 + n % max_calls


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


def process_rss(pid: int | None) -> int:
    """Resident bytes of another process now, from /proc (0 where there is none)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """This process's RSS high-water mark in bytes: VmHWM of /proc/self/status.

    Not getrusage's ru_maxrss: Linux keeps that across fork and exec, so a spawned pool process would
    report at least the RSS the bench's own process (the emulators) had when it was started. VmHWM
    belongs to the address space, which exec replaces.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # elsewhere: Linux's KiB, an upper bound


def arm_budget() -> TokenBucket:
    return TokenBucket(ARM_READ_RPS, burst=ARM_READ_BURST)


# Setup ------------------------------------------------------------------------------------------
@dataclass
class Seeded:
    links: list[SubscriptionLink]
    expected_overage: int  # sum over subscriptions of the calls beyond the included ones
    window: ReportWindow  # today's push window: yesterday's window end to now minus the lag
    setup_seconds: float
    steps: dict[str, float]  # seconds per setup step
    log_rows: int  # rows of ApiManagementGatewayLogs the seeded usage stands for
    yesterday: list[WatermarkWrite]  # the watermarks as yesterday's push left them (from an empty table)


def seed(
    size: int,
    stripe_emu: StripeEmulator,
    apim_emu: ApimEmulator,
    *,
    env: dict[str, str],
    models: MonetizationModels,
    as_of: int,
    max_calls: int,
    products: tuple[str, ...],
) -> Seeded:
    started = time.monotonic()
    steps: dict[str, float] = {}

    def step(name: str) -> None:
        steps[name] = time.monotonic() - started - sum(steps.values())

    client = stripe_emu.client()
    for pid in products:
        client.v1.billing.meters.create(
            params={
                "display_name": f"{pid} calls",
                "event_name": meter_event_name(pid),
                "default_aggregation": {"formula": "sum"},
            }
        )
    consumers = -(-size // len(products))
    customers = stripe_emu.bulk_create_customers(
        (f"bench{n}@example.com", {CUSTOMER_META_APIM_USER: f"bench{n}"}) for n in range(consumers)
    )
    step("Stripe customers")

    mgmt = apim_emu.management_client(retry_total=0)
    for pid in products:
        mgmt.product.create_or_update(
            apim_emu.resource_group,
            apim_emu.service_name,
            pid,
            ProductContract(display_name=pid, subscription_required=True, approval_required=False, state="published"),
        )
    mgmt.close()
    window = ReportWindow(as_of - LAG_SECONDS - DAY, as_of - LAG_SECONDS)  # yesterday's end to today's
    spread = 29 * DAY // size or 1  # anchors one second apart or more over the last 29 days
    links, expected, rows = [], 0, 0
    by_product: dict[str, list[str]] = {pid: [] for pid in products}
    for n in range(size):
        pid = products[n % len(products)]
        sid = f"sub_bench{n:07d}"
        by_product[pid].append(sid)
        period_start = window.start - 1 - n * spread
        links.append(
            SubscriptionLink(
                apim_subscription_id=sid,
                apim_user_id=f"bench{n // len(products)}",
                product_id=pid,
                subscription_name=sid,
                stripe_customer_id=customers[n // len(products)],
                stripe_subscription_id=sid,
                stripe_usage_item_id=f"si_bench{n:07d}",
                stripe_status="active",
                apim_state="active",
                current_period_start=period_start,
                current_period_end=period_start + 30 * DAY,
                stripe_state_at=as_of,
            )
        )
    for pid, sids in by_product.items():
        apim_emu.bulk_create_subscriptions(sids, product_id=pid)
    step("APIM subscriptions")
    # One event per record_usage for the Reports API, and one bulk event for the workspace, expanded into
    # its rows by the query (emulators/loganalytics/store.py): the bulk path, not a row per call.
    usage_at = datetime.fromtimestamp(window.start + 3600, UTC)
    for n, link in enumerate(links):
        calls = calls_for(n, max_calls)
        apim_emu.record_usage(link.apim_subscription_id, calls, at=usage_at)
        apim_emu.record_usage(link.apim_subscription_id, 3, at=usage_at, outcome="blocked")
        expected += calls
        rows += calls + 3
    logs = apim_emu.emu.logs
    if logs is not None:
        logs.flush()  # into DuckDB now, in columns: otherwise the push's first query would pay for it
    step("usage (reports + logs)")

    writer = SubscriptionLinks(ensure_table(SUBSCRIPTIONS_TABLE, env))
    ordered = sorted(links, key=lambda lk: group_of(lk.apim_subscription_id))  # a partition in one share
    share = -(-len(ordered) // SETUP_THREADS)
    shares = [ordered[n : n + share] for n in range(0, len(ordered), share)]
    with ThreadPoolExecutor(SETUP_THREADS) as pool:  # a transaction per partition and 100 links
        list(pool.map(writer.bulk_insert, shares))
    step("links in Azurite")
    # Yesterday's push: every watermark's cursor at the end of its window, the product's included calls
    # reported already (so all of today's calls bill), nothing pending.
    yesterday = [
        WatermarkWrite(
            Watermark(lk.apim_subscription_id, lk.product_id, lk.current_period_start),
            models.product(lk.product_id).included_calls,
            window.start,
        )
        for lk in links
    ]
    reset_watermarks(env, links, yesterday, create=True)
    step("watermarks")
    return Seeded(links, expected, window, time.monotonic() - started, steps, rows, yesterday)


def reset_watermarks(
    env: dict[str, str], links: list[SubscriptionLink], yesterday: list[WatermarkWrite], *, create: bool = False
) -> None:
    """Write the watermarks as yesterday's push left them, over whatever a run made of them.

    One range read first (of every group row): `write` then needs no read per row, and replaces each
    row at the version just read.
    """
    marks = Watermarks(ensure_table(USAGE_WATERMARKS_TABLE, env) if create else table(USAGE_WATERMARKS_TABLE, env))
    now = marks.read([(lk.apim_subscription_id, lk.product_id, lk.current_period_start) for lk in links])
    marks.write(WatermarkWrite(now[w.previous.subscription_id], w.reported, w.counted_until) for w in yesterday)


def reset_stripe_meters(stripe_emu: StripeEmulator) -> None:
    """Forget the meter events (and their identifiers) a run sent: the next run starts from the same Stripe."""
    store = stripe_emu.core.store
    with store.lock:
        for meter in store.all("billing.meter"):
            meter.pop("_events", None)
            meter.pop("_identifiers", None)


def set_latency(stripe_emu: StripeEmulator, apim_emu: ApimEmulator, latency_ms: int, stripe_rps: int) -> None:
    answer = requests.post(
        f"{stripe_emu.base_url}/_emulator/faults", json={"latency_ms": latency_ms, "rate_limit": stripe_rps}, timeout=10
    )
    answer.raise_for_status()
    apim_emu.faults.update({"latency_ms": latency_ms})


# The usage push -----------------------------------------------------------------------------------
# As on Azure Functions, the timer and the queue workers run in their own processes (instances), not
# in the one that hosts the emulators; `--processes` worker processes take the batches, each with
# `--workers` threads and its share of the Stripe budget.
_PROCESS: dict[str, Any] = {}


def _timed(call: Callable[..., T], total: dict[str, float]) -> Callable[..., T]:
    """`call`, adding the seconds each call takes to `total["seconds"]` (from any thread)."""
    lock = threading.Lock()

    def timed(*args: Any, **kwargs: Any) -> T:
        started = time.monotonic()
        try:
            return call(*args, **kwargs)
        finally:
            with lock:
                total["seconds"] += time.monotonic() - started

    return timed


def _init_process(  # noqa: PLR0917
    env: dict[str, str],
    source: str,
    stripe_rps: float,
    barrier: Any,
    queue: Any,
    profile: str | None,
) -> None:
    """The process's push as the Functions app builds it: `billing.bootstrap`, from the app's settings.

    The settings an instance would have: the usage source, its share of the Stripe budget, the lag and the
    batch size; ARM's budget is the app's setting at ARM's documented refill rate (25/s)."""
    os.environ.update(env)
    os.environ.update(
        {
            "USAGE_SOURCE": source,
            "USAGE_STRIPE_REQUESTS_PER_SECOND": f"{stripe_rps * 0.95:g}",  # under the emulator's limit
            "USAGE_ARM_REQUESTS_PER_SECOND": f"{ARM_READ_RPS:g}",
            "USAGE_REPORT_LAG_MINUTES": f"{LAG_SECONDS / 60:g}",
            "USAGE_BATCH_SIZE": str(DEFAULT_BATCH_SIZE),
        }
    )
    push = bootstrap.services().usage_push()
    reports, marks = push.reports, push.watermarks
    assert isinstance(reports, (ApimUsageReports, LogAnalyticsUsage))
    assert isinstance(marks, Watermarks)
    reading = {"seconds": 0.0}  # the source's share of the timer
    writing = {"seconds": 0.0}  # Table Storage's share of the workers
    reports.read = _timed(reports.read, reading)  # type: ignore[method-assign]
    marks.write = _timed(marks.write, writing)  # type: ignore[method-assign]
    _PROCESS.update(
        push=push,
        reports=reports,
        meter=push.meter,
        marks=marks,
        barrier=barrier,
        queue=queue,
        reading=reading,
        writing=writing,
        profile=profile,
        source=source,
    )


@contextmanager
def _profiled(role: str) -> Iterator[None]:
    """cProfile of this process's part of the run, written to --profile's directory (nothing without it).

    A profiler per thread (cProfile sees only the thread that enabled it): this one, and every thread
    started meanwhile (the plan's lister and reader, the adapters' pools, the worker's message threads),
    merged into one file.
    """
    directory = _PROCESS["profile"]
    if not directory:
        yield
        return
    profilers: list[cProfile.Profile] = []

    def start_in_new_thread(*_: Any) -> None:
        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()  # replaces this hook for the thread

    threading.setprofile(start_in_new_thread)
    own = cProfile.Profile()
    profilers.append(own)
    own.enable()
    try:
        yield
    finally:
        own.disable()
        threading.setprofile(None)
        stats = pstats.Stats(own)
        for profiler in profilers[1:]:
            stats.add(profiler)
        stats.dump_stats(Path(directory) / f"{_PROCESS['source']}-{role}-{os.getpid()}.prof")


def _ready(_: int) -> tuple[int, int]:
    _PROCESS["barrier"].wait(60)  # every process of the pool initialised, each holding one of these
    return os.getpid(), peak_rss()


def _timer(as_of: int, consumers: int) -> dict[str, Any]:
    """The timer trigger: `fan_out`, each batch put on the queue as soon as its product's report is read."""
    push: UsagePush = _PROCESS["push"]
    queue = _PROCESS["queue"]
    started, cpu = time.monotonic(), time.process_time()
    with _profiled("timer"):
        plan = fan_out(push, queue.put, as_of)
    seconds = time.monotonic() - started
    for _ in range(consumers):
        queue.put(None)  # no more messages
    reports = _PROCESS["reports"]
    shards = reports.shards_by_product() if isinstance(reports, LogAnalyticsUsage) else {}
    return {
        "batches": plan.batch_count,
        "reads": plan.report_reads,
        "phases": plan.phases,
        "apim": reports.requests,
        "shards": shards,
        "read_seconds": _PROCESS["reading"]["seconds"],
        "azurite": _PROCESS["marks"].requests,
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
        "rss": peak_rss(),
    }


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

    with _profiled("worker"), ThreadPoolExecutor(threads) as pool:
        futures = []
        while True:
            free.acquire()  # take a message only when a thread is free, as the queue trigger does
            body = queue.get()
            if body is None:
                break
            futures.append(pool.submit(one, body))
        for future in futures:
            total.add(future.result())
    return {
        "summary": total,
        "rest": len(rest),
        "errors": errors,
        "stripe": dict(_PROCESS["meter"].requests),
        "azurite": _PROCESS["marks"].requests,
        "write_seconds": _PROCESS["writing"]["seconds"],
        "cpu": time.process_time() - cpu,
        "rss": peak_rss(),
    }


def _pool(  # noqa: PLR0917
    env: dict[str, str],
    source: str,
    processes: int,
    stripe_rps: float,
    queue: Any,
    profile: str | None,
) -> tuple[Any, list[int]]:
    """A pool of started processes, and each one's RSS once it has imported and built the app's objects."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    pool = context.Pool(
        processes, initializer=_init_process, initargs=(env, source, stripe_rps, barrier, queue, profile)
    )
    ready = pool.map(_ready, range(processes), chunksize=1)
    return pool, [rss for _pid, rss in ready]


def _mib(n: float) -> str:
    return f"{n / MIB:,.0f}"


def run_push(
    env: dict[str, str],
    seeded: Seeded,
    *,
    source: str,
    as_of: int,
    processes: int,
    workers: int,
    stripe_rps: int,
    latency_ms: int,
    azurite_pid: int | None,
    profile: str | None = None,
) -> Result:
    queue = multiprocessing.get_context("spawn").Queue()  # the Storage queue between timer and workers
    timer_pool, timer_idle = _pool(env, source, 1, stripe_rps, queue, profile)
    worker_pool, workers_idle = _pool(env, source, processes, stripe_rps / processes, queue, profile)
    load_before = os.getloadavg()[0]
    try:
        started, main_cpu, azurite_cpu = time.monotonic(), time.process_time(), process_cpu(azurite_pid)
        timing = timer_pool.apply_async(_timer, (as_of, processes))
        done = worker_pool.map(_worker, [workers] * processes, chunksize=1)
        planned = timing.get()
        wall = time.monotonic() - started
        emulators_cpu = time.process_time() - main_cpu  # this process only serves the emulators now
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
    made_floor = stripe_requests / stripe_rps
    stripe_floor = stripe_floor_seconds(len(seeded.links), stripe_rps)
    own_floor = source_floor(source, planned["apim"])
    # With one report read for everyone, no event could be computed before the whole report is read
    # (a subscription's row may be on any page): the two rate limits would apply one after the other.
    # Reading product by product lets them overlap; this says how much that bought.
    sequential = own_floor + made_floor
    cpu = planned["cpu"] + sum(part["cpu"] for part in done)
    problems = []
    rest = sum(part["rest"] for part in done)
    errors = [e for part in done for e in part["errors"]]
    if total.failed or rest or errors:
        problems.append(
            f"{total.failed} failed, {rest} re-enqueued, {len(errors)} messages raised "
            f"(first: {errors[0] if errors else '-'})"
        )
    # An event is delivered once: sent, or (after a watermark conflict on a group row that two batches
    # shared: the chunk is redone) found pending and resent under its identifier, which Stripe drops.
    delivered = total.events_sent + total.recovered
    if delivered != len(seeded.links) or total.calls_reported != seeded.expected_overage:
        problems.append(
            f"delivered {delivered} events / {total.calls_reported} calls, expected "
            f"{len(seeded.links)} / {seeded.expected_overage}"
        )
    rss = [planned["rss"], *(part["rss"] for part in done)]
    if source == "logs":
        shards = planned["shards"]
        reads = (
            f"{planned['apim']} KQL queries for {planned['reads']} report windows (a product each), shards "
            f"per product { ({pid: len(s) for pid, s in shards.items()}) } (1: the whole product at once); floor "
            f"of the app's Log Analytics budget ({LOGS_REQUESTS_PER_SECOND:g}/s) {own_floor:.1f}s"
        )
    else:
        reads = (
            f"{planned['apim']} report pages for {planned['reads']} report reads (a product each); "
            f"ARM floor {own_floor:.1f}s"
        )
    note = (
        f"{planned['batches']} batches, {total.recovered} events resent after a watermark conflict; {reads}; "
        f"timer {planned['seconds']:.1f}s (reads {planned['read_seconds']:.1f}s "
        f"in the reader thread; links listed at "
        f"{planned['phases']['links']:.1f}s, first product's batches queued at "
        f"{planned['phases'].get('first batches', 0):.1f}s, last at {planned['phases']['reports']:.1f}s); "
        f"{processes} worker processes x {workers} threads; meter {meter_requests}; "
        f"floors: Stripe requests made {made_floor:.1f}s (events alone {stripe_floor:.1f}s), ARM/Log Analytics and "
        f"Stripe one after the other {sequential:.1f}s (wall/that "
        f"{wall / sequential if sequential else 0:.2f}); Azurite "
        f"{planned['azurite'] + sum(p['azurite'] for p in done)} requests, watermark writes "
        f"{sum(p['write_seconds'] for p in done):.1f}s summed over threads; cpu s = timer + workers; "
        f"CPU of the {os.cpu_count()} cores' {wall * (os.cpu_count() or 1):.0f} core-s: push {cpu:.0f} (timer "
        f"{planned['cpu']:.0f}), emulators {emulators_cpu:.0f}, Azurite {azurite_cpu:.0f}; "
        f"peak RSS MiB: timer {_mib(planned['rss'])} (idle {_mib(timer_idle[0])}), workers "
        f"{'/'.join(_mib(p['rss']) for p in done)} (idle {'/'.join(_mib(r) for r in workers_idle)}), "
        f"all {_mib(sum(rss))}; Azurite now {_mib(process_rss(azurite_pid))}, emulators' process (high-water) "
        f"{_mib(peak_rss())}; load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    if problems:
        note += f"; PROBLEM: {'; '.join(problems)}"
    return Result(
        f"push/{source}",
        len(seeded.links),
        wall,
        planned["apim"],
        stripe_requests,
        max(own_floor, made_floor),
        stripe_floor,
        push_latency_floor(source, planned["apim"], latency_ms),
        cpu,
        max(rss),
        note=note,
    )


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


def run_naive(
    env: dict[str, str], seeded: Seeded, *, sample: int, as_of: int, workers: int, stripe_rps: int, latency_ms: int
) -> Result:
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
                service.resource_group,
                service.service_name,
                filter=report_filter(window, link.apim_subscription_id),
                retry_total=0,
            )
            return sum(int(r.call_count_success or 0) for r in next(rows.by_page()))

        calls = call_with_retry(lambda: _arm_call(report), arm)

        def usage() -> None:
            count("stripe")
            client.v1.billing.meter_events.create(
                params={
                    "event_name": meter_event_name(link.product_id),
                    "payload": {METER_CUSTOMER_KEY: link.stripe_customer_id, METER_VALUE_KEY: str(calls)},
                    "identifier": f"naive:{link.apim_subscription_id}:{as_of}",
                    "timestamp": window.end - 1,
                },
                options={"max_network_retries": 0},
            )

        def update() -> None:
            count("stripe")
            client.v1.customers.update(
                link.stripe_customer_id,
                params={"metadata": {f"last_usage_update_{link.product_id}": stamp}},
                options={"max_network_retries": 0},
            )

        call_with_retry(lambda: _stripe_call(usage), stripe_bucket)
        call_with_retry(lambda: _stripe_call(update), stripe_bucket)

    started, cpu_started = time.monotonic(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, links))
    wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
    service.client.close()
    chain = 3 * latency_ms / 1000  # report, then usage, then update
    floor = floor_seconds(counters["apim"], counters["stripe"], stripe_rps)
    size = len(seeded.links)
    if len(links) == size:
        return Result(
            "naive",
            size,
            wall,
            counters["apim"],
            counters["stripe"],
            floor,
            stripe_floor_seconds(size, stripe_rps),
            chain,
            cpu,
        )
    apim_n, stripe_n = size, 2 * size  # per subscription: 1 report call; 1 usage + 1 update
    floor_n = floor_seconds(apim_n, stripe_n, stripe_rps)
    ratio = wall / floor if floor else 1.0
    note = f"extrapolated from {len(links)} measured in {wall:.1f}s (wall/floor {ratio:.2f} kept)"
    return Result(
        "naive",
        size,
        ratio * floor_n,
        apim_n,
        stripe_n,
        floor_n,
        stripe_floor_seconds(size, stripe_rps),
        chain,
        extrapolated=True,
        note=note,
    )


# Driver -----------------------------------------------------------------------------------------
def run_size(size: int, args: argparse.Namespace, models: MonetizationModels) -> list[Result]:
    products = tuple(args.products)
    # Azurite keeps every row in memory: 2 GiB of RSS after a 1,000,000 run, half of Node's default heap
    # limit here (4 GB); a larger limit keeps bigger runs from failing on it.
    heap = {} if "NODE_OPTIONS" in os.environ else {"NODE_OPTIONS": f"--max-old-space-size={AZURITE_HEAP_MIB}"}
    with environment(heap), Azurite() as azurite, StripeEmulator(port=0) as stripe_emu, ApimEmulator() as apim_emu:
        env = {"AzureWebJobsStorage": azurite.connection_string, **stripe_emu.app_settings(), **apim_emu.app_settings()}
        with environment(env):
            as_of = int(time.time())
            seeded = seed(
                size,
                stripe_emu,
                apim_emu,
                env=env,
                models=models,
                as_of=as_of,
                max_calls=args.max_calls,
                products=products,
            )
            steps = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in seeded.steps.items())
            print(
                f"  setup: {size:,} subscriptions on {len(products)} products, "
                f"{len({lk.stripe_customer_id for lk in seeded.links}):,} customers, {seeded.log_rows:,} gateway-log "
                f"rows, links in Azurite, in {seeded.setup_seconds:.0f}s ({steps})",
                flush=True,
            )
            set_latency(stripe_emu, apim_emu, args.latency_ms, args.stripe_rps)
            results = []
            for n, source in enumerate(args.sources):
                if n:  # the same starting point for every source: yesterday's watermarks, no meter events
                    set_latency(stripe_emu, apim_emu, 0, 1_000_000)
                    reset_watermarks(env, seeded.links, seeded.yesterday)
                    reset_stripe_meters(stripe_emu)
                    set_latency(stripe_emu, apim_emu, args.latency_ms, args.stripe_rps)
                    time.sleep(1)  # the Stripe emulator's rate window starts empty
                result = run_push(
                    env,
                    seeded,
                    source=source,
                    as_of=as_of,
                    processes=args.processes,
                    workers=args.workers,
                    azurite_pid=azurite.pid,
                    stripe_rps=args.stripe_rps,
                    latency_ms=args.latency_ms,
                    profile=args.profile,
                )
                print(results_table([result]), flush=True)
                results.append(result)
            if "reports" in args.sources and args.naive_sample:
                naive = run_naive(
                    env,
                    seeded,
                    sample=min(size, args.naive_sample),
                    as_of=as_of,
                    workers=args.workers,
                    stripe_rps=args.stripe_rps,
                    latency_ms=args.latency_ms,
                )
                print(results_table([naive]), flush=True)
                results.append(naive)
    return results


def results_table(rows: list[Result]) -> str:
    head = (
        f"{'approach':<13} {'subs':>9} {'wall s':>8} {'cpu s':>6} {'src req':>7} {'Stripe req':>10} "
        f"{'Stripe fl':>9} {'wall/Str':>8} {'rate fl':>8} {'wall/rate':>9} {'lat fl':>6} "
        f"{'peak MiB':>8}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        mark = "~" if r.extrapolated else ""
        stripe = f"{mark}{r.wall / r.stripe_floor:.2f}" if r.stripe_floor > 0 else "n/a"
        rate = f"{mark}{r.wall / r.floor:.2f}" if r.floor > 0 else "n/a"
        cpu = "" if r.cpu is None else f"{r.cpu:.0f}"
        rss = "" if r.peak_rss is None else _mib(r.peak_rss)
        out.append(
            f"{r.approach:<13} {r.subscriptions:>9,} {mark + format(r.wall, '.1f'):>8} {cpu:>6} "
            f"{r.source_requests:>7,} {r.stripe_requests:>10,} {r.stripe_floor:>9.1f} {stripe:>8} "
            f"{r.floor:>8.1f} {rate:>9} {r.latency_floor:>6.2f} {rss:>8}"
        )
        if r.note:
            out.append(f"    {r.note}")
    return "\n".join(out)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes takes whole numbers separated by commas, e.g. 1000,10000; got '{text}'"
        ) from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--sizes must list numbers of subscriptions >= 1, got '{text}'")
    return sizes


def _products(text: str) -> list[str]:
    products = [part.strip() for part in text.split(",") if part.strip()]
    if not products or any(p not in PRODUCTS for p in products) or len(set(products)) != len(products):
        raise argparse.ArgumentTypeError(f"--products lists some of {','.join(PRODUCTS)} once each, got '{text}'")
    return products


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.usage_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=_sizes("100000,1000000"))
    parser.add_argument(
        "--source",
        choices=[*SOURCES, "both"],
        default="both",
        help="the usage source the push reads (USAGE_SOURCE); both: logs, then reports",
    )
    parser.add_argument("--latency-ms", type=int, default=50, help="added to every emulator API request")
    parser.add_argument("--stripe-rps", type=int, default=100, help="Stripe requests a second before 429")
    parser.add_argument("--processes", type=int, default=2, help="queue worker processes (Functions instances)")
    parser.add_argument("--workers", type=int, default=8, help="messages at once per worker process; naive threads")
    parser.add_argument(
        "--naive-sample",
        type=int,
        default=1000,
        help="naive subscriptions measured per size (with the reports source; 0: none)",
    )
    parser.add_argument(
        "--max-calls",
        type=int,
        default=97,
        help="new calls per subscription in the window: 1 to this many (gateway-log rows to scan)",
    )
    parser.add_argument(
        "--products",
        type=_products,
        default=list(PRODUCTS),
        help="the metered products the subscriptions are spread over, in turn",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="write a cProfile of the timer and of each worker process to DIR (slows the run)",
    )
    args = parser.parse_args(argv)
    if (
        args.latency_ms < 0
        or args.naive_sample < 0
        or min(args.stripe_rps, args.processes, args.workers, args.max_calls) < 1
    ):
        parser.error(
            "--latency-ms and --naive-sample must be >= 0; --stripe-rps, --processes, --workers and --max-calls >= 1"
        )
    args.sources = list(SOURCES) if args.source == "both" else [args.source]
    models = load_models()
    print(
        f"usage bench: sources {', '.join(args.sources)}; latency {args.latency_ms} ms/request, Stripe "
        f"{args.stripe_rps} req/s (emulator-enforced), ARM reads {ARM_READ_RPS:g}/s (the app's budget; the naive "
        f"approach: ARM's {ARM_READ_BURST} burst + {ARM_READ_RPS:g}/s), Log "
        f"Analytics {LOGS_REQUESTS_PER_SECOND:g} queries/s (client-enforced), {args.workers} workers, batch size "
        f"{DEFAULT_BATCH_SIZE}, 1-{args.max_calls} calls per subscription; {os.cpu_count()} cores",
        flush=True,
    )
    rows: list[Result] = []
    for size in args.sizes:
        print(f"size {size:,}:", flush=True)
        rows.extend(run_size(size, args, models))
    print("\nsummary\n" + results_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

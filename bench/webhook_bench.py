"""Benchmark (not a test): webhook throughput and latency on the development host, exactly-once checked.

    .venv/bin/python -m bench.webhook_bench [--events 1000] [--concurrency 1,10,50] [--duplicates 0.1]

Starts its own Azurite, Stripe emulator and APIM emulator on free loopback ports and the app
(`function_app.app`) on the development host. Subscriptions are created in Stripe directly; at
the start of each round every APIM subscription is knocked to `suspended`, then N signed
`customer.subscription.updated` events (plus a share of re-sent duplicates) are posted at the
given concurrency. Checks afterwards: every event has exactly one applied answer and a `done`
idempotency row, duplicates were never applied, and every APIM subscription is `active` again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from azure.data.tables import TableClient  # noqa: E402
from azure.mgmt.apimanagement.models import (  # noqa: E402
    ProductContract,
    SubscriptionUpdateParameters,
    UserCreateParameters,
)

from billing import bootstrap  # noqa: E402
from billing.catalog_names import SUB_META_APIM_USER, SUB_META_NAME, SUB_META_PRODUCT, stripe_product_id  # noqa: E402
from billing.store.tables import PROCESSED_EVENTS_TABLE  # noqa: E402
from devhost.server import DevHost  # noqa: E402
from devstack.azurite import Azurite  # noqa: E402
from devstack.ports import free_port  # noqa: E402
from emulators.apim.server import ApimEmulator  # noqa: E402
from emulators.stripe.server import StripeEmulator  # noqa: E402

SECRET = "whsec_bench_" + uuid.uuid4().hex
PRODUCT = "basic"


def sign(body: bytes) -> str:
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    ts = int(time.time())
    return f"t={ts},v1={hmac.new(SECRET.encode(), f'{ts}.'.encode() + body, hashlib.sha256).hexdigest()}"


@dataclass
class Result:
    event_id: str
    status: int
    seconds: float
    applied: bool  # a 200 that was not a duplicate (the event's work ran)


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return 0.0
    rank = max(1, int(-(-p * len(sorted_values) // 100)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def setup(stripe_emu: StripeEmulator, apim_emu: ApimEmulator, count: int) -> list[str]:
    client = stripe_emu.client()
    apim = apim_emu.management_client(retry_total=0)
    rg, svc = apim_emu.resource_group, apim_emu.service_name
    apim.product.create_or_update(
        rg,
        svc,
        PRODUCT,
        ProductContract(
            display_name="Basic",
            subscription_required=True,
            approval_required=False,
            subscriptions_limit=1,
            state="published",
        ),
    )
    client.v1.products.create(params={"id": stripe_product_id(PRODUCT), "name": "Basic"})
    price = client.v1.prices.create(
        params={
            "product": stripe_product_id(PRODUCT),
            "currency": "usd",
            "unit_amount": 1495,
            "recurring": {"interval": "month"},
        }
    )
    subs = []
    for n in range(count):
        uid = f"user{n}"
        apim.user.create_or_update(
            rg, svc, uid, UserCreateParameters(email=f"{uid}@example.com", first_name="U", last_name=str(n))
        )
        customer = client.v1.customers.create(params={"email": f"{uid}@example.com"})
        card = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
        sub = client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": price.id, "quantity": 1}],
                "default_payment_method": card.id,
                "metadata": {SUB_META_APIM_USER: uid, SUB_META_PRODUCT: PRODUCT, SUB_META_NAME: f"key {n}"},
            }
        )
        subs.append(sub.id)
    apim.close()
    return subs


def run_round(
    url: str, subs: list[str], events: int, *, concurrency: int, duplicates: float, rng: random.Random
) -> tuple[list[Result], float, list[str]]:
    payloads = []
    for n in range(events):
        event = {
            "id": f"evt_bench_{uuid.uuid4().hex}",
            "object": "event",
            "created": int(time.time()),
            "type": "customer.subscription.updated",
            "data": {"object": {"id": subs[n % len(subs)], "object": "subscription"}},
        }
        payloads.append((event["id"], json.dumps(event).encode()))
    order = list(payloads) + [p for p in payloads if rng.random() < duplicates]
    rng.shuffle(order)
    local = threading.local()

    def post(item: tuple[str, bytes]) -> Result:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        event_id, body = item
        started = time.perf_counter()
        answer = session.post(url, data=body, headers={"Stripe-Signature": sign(body)}, timeout=60)
        elapsed = time.perf_counter() - started
        applied = answer.status_code == 200 and not answer.json().get("duplicate")
        return Result(event_id, answer.status_code, elapsed, applied)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(post, order))
    wall = time.perf_counter() - started
    # Stripe retries what was answered 409 (another instance busy): do the same until none is left.
    retry = [p for p in payloads if p[0] in {r.event_id for r in results if r.status == 409}]
    while retry:
        again = [post(p) for p in retry]
        results.extend(again)
        retry = [p for p in retry if p[0] in {r.event_id for r in again if r.status == 409}]
    return results, wall, [p[0] for p in payloads]


def check(
    results: list[Result], event_ids: list[str], table: TableClient, apim_emu: ApimEmulator, subs: list[str]
) -> list[str]:
    problems = []
    applied = Counter(r.event_id for r in results if r.applied)
    bad = [r for r in results if r.status not in (200, 409)]
    if bad:
        problems.append(f"{len(bad)} answers were neither 200 nor 409: {Counter(r.status for r in bad)}")
    not_once = [e for e in event_ids if applied[e] != 1]
    if not_once:
        problems.append(f"{len(not_once)} events not applied exactly once, e.g. {not_once[0]}: {applied[not_once[0]]}")
    for event_id in event_ids:
        row = table.get_entity(event_id, "event")
        if row["status"] != "done":
            problems.append(f"{event_id} is {row['status']}, not done")
            break
    states = Counter(apim_emu.emu.store.subscriptions[s].state for s in subs)
    if states != Counter({"active": len(subs)}):
        problems.append(f"APIM states after the round: {dict(states)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--subscriptions", type=int, default=20)
    parser.add_argument("--duplicates", type=float, default=0.1, help="share of events re-sent (0..1)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    rng = random.Random(args.seed)
    writes: list[str] = []
    with Azurite() as azurite, StripeEmulator(port=0) as stripe_emu, ApimEmulator() as apim_emu:
        env = {
            "AzureWebJobsStorage": azurite.connection_string,
            **stripe_emu.app_settings(),
            **apim_emu.app_settings(),
            "STRIPE_WEBHOOK_SECRET": SECRET,
        }
        os.environ.update(env)
        bootstrap.forget()
        subs = setup(stripe_emu, apim_emu, args.subscriptions)
        inner = apim_emu.management.handle

        def counting(req: Any) -> Any:
            if req.method in ("PUT", "PATCH") and "/subscriptions/" in req.path.split("/service/")[-1]:
                writes.append(req.method)
            return inner(req)

        apim_emu.management.handle = counting  # type: ignore[method-assign]
        import function_app  # noqa: PLC0415

        with DevHost(function_app.app, port=free_port()) as host:
            url = f"{host.base_url}/api/webhooks/stripe"
            # Warm up: create the APIM subscriptions, tables and client tokens outside the measurement.
            run_round(url, subs, len(subs), concurrency=1, duplicates=0.0, rng=rng)
            table = TableClient.from_connection_string(azurite.connection_string, PROCESSED_EVENTS_TABLE)
            apim = apim_emu.management_client(retry_total=0)
            print(
                f"{args.events} events (+~{args.duplicates:.0%} duplicates) over {len(subs)} subscriptions; "
                f"each round starts with every APIM subscription suspended\n"
            )
            print(
                f"{'concurrency':>11} {'requests':>9} {'wall s':>8} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
                f"{'409s':>5} {'APIM writes':>11}  exactly-once"
            )
            failed = False
            for level in levels:
                for sid in subs:
                    apim.subscription.update(
                        apim_emu.resource_group,
                        apim_emu.service_name,
                        sid,
                        "*",
                        SubscriptionUpdateParameters(state="suspended"),
                    )
                writes.clear()
                results, wall, ids = run_round(
                    url, subs, args.events, concurrency=level, duplicates=args.duplicates, rng=rng
                )
                latencies = sorted(r.seconds * 1000 for r in results)
                problems = check(results, ids, table, apim_emu, subs)
                failed = failed or bool(problems)
                conflicts = sum(1 for r in results if r.status == 409)
                print(
                    f"{level:>11} {len(results):>9} {wall:>8.2f} {args.events / wall:>9.1f} "
                    f"{percentile(latencies, 50):>8.1f} {percentile(latencies, 99):>8.1f} {conflicts:>5} "
                    f"{len(writes):>11}  {'OK' if not problems else 'FAILED: ' + '; '.join(problems)}"
                )
            apim.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

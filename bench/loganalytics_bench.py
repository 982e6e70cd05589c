"""The Log Analytics emulator at scale: bulk usage of 1M and 10M rows, and the app's daily query over it.

    .venv/bin/python -m bench.loganalytics_bench [--rows 1000000 10000000] [--calls-per-subscription 100]

For each size: an APIM emulator (ingestion delay 0) with rows / calls-per-subscription subscriptions on
one product, each given calls of all four outcome classes by `record_usage` ("insert": the calls plus the
first flush into DuckDB), then through the real LogsQueryClient over HTTPS: the app's sharded daily query
(one shard, and all 16), a count by subscription over every row, and a query that needs a computed column
of every row (dcount of CorrelationId). Also: gateway-style rows (stored one by one, as real calls are),
100,000 of them appended and flushed. Prints seconds and the process's resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.identity import DefaultAzureCredential
from azure.mgmt.apimanagement.models import ProductContract
from azure.monitor.query import LogsQueryClient, LogsQueryResult

from emulators.apim.server import ApimEmulator

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HEX = "0123456789abcdef"
SHARE = {"success": 0.85, "blocked": 0.05, "failed": 0.05, "other": 0.05}
APP_QUERY = """ApiManagementGatewayLogs
| where TimeGenerated >= datetime(2026-12-01T00:00:00Z) and TimeGenerated < datetime(2026-12-02T00:00:00Z)
| where ProductId == "payg"
| where substring(hash_md5(ApimSubscriptionId), 0, 1) == "{shard}"
| summarize success = countif(ResponseCode <= 301 or ResponseCode in (304, 307)),
            blocked = countif(ResponseCode in (401, 403, 429)),
            failed = countif(ResponseCode == 400 or (ResponseCode >= 500 and ResponseCode < 600)),
            other = countif(not(ResponseCode <= 301 or ResponseCode in (304, 307, 401, 403, 429, 400)
                                or (ResponseCode >= 500 and ResponseCode < 600)))
  by ApimSubscriptionId"""


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, action: object) -> object:
    start = time.perf_counter()
    result = action() if callable(action) else None
    print(f"  {label:<52} {time.perf_counter() - start:8.2f} s   max RSS {rss_mib():7.0f} MiB", flush=True)
    return result


def run(rows: int, per_subscription: int) -> None:
    subscriptions = rows // per_subscription
    print(f"{rows:,} rows: {subscriptions:,} subscriptions x {per_subscription} calls", flush=True)
    with ApimEmulator(log_ingestion_delay_seconds=0, clock=lambda: AT + timedelta(hours=1)) as emu:
        for name, value in emu.app_settings().items():
            os.environ[name] = value
        with emu.management_client() as client:
            client.product.create_or_update(
                emu.resource_group, emu.service_name, "payg", ProductContract(display_name="payg", state="published")
            )
        sids = [f"sub_{n:07d}" for n in range(subscriptions)]
        emu.bulk_create_subscriptions(sids, product_id="payg")
        counts = {outcome: round(per_subscription * share) for outcome, share in SHARE.items()}
        counts["success"] += per_subscription - sum(counts.values())

        def insert() -> None:
            for sid in sids:
                for outcome, calls in counts.items():
                    emu.record_usage(sid, calls, at=AT, outcome=outcome)
            emu.emu.logs.flush() if emu.emu.logs else None

        timed("insert (record_usage + flush)", insert)
        logs = LogsQueryClient(DefaultAzureCredential(), endpoint=emu.log_analytics_endpoint)

        def query(kql: str) -> list[list[object]]:
            result = logs.query_workspace(emu.workspace_id, kql, timespan=None, server_timeout=600)
            assert isinstance(result, LogsQueryResult), result
            return [list(row) for row in result.tables[0].rows]

        timed("app query, one shard of 16", lambda: query(APP_QUERY.format(shard="0")))
        shards = timed("app query, all 16 shards", lambda: [query(APP_QUERY.format(shard=s)) for s in HEX])
        assert isinstance(shards, list)
        assert sum(len(s) for s in shards) == subscriptions  # every subscription in exactly one shard
        assert sum(r[1] for s in shards for r in s) == counts["success"] * subscriptions
        by_subscription = "ApiManagementGatewayLogs | summarize count() by ApimSubscriptionId | count"
        timed("count by subscription, every row", lambda: query(by_subscription))
        distinct = "ApiManagementGatewayLogs | summarize dcount(CorrelationId)"
        timed("dcount(CorrelationId), every row", lambda: query(distinct))
        logs.close()


def gateway_rows(count: int) -> None:
    print(f"{count:,} gateway rows, stored one by one", flush=True)
    with ApimEmulator(log_ingestion_delay_seconds=0) as emu:
        store = emu.emu.logs
        assert store is not None

        def append() -> None:
            for n in range(count):
                store.append(
                    {
                        "TimeGenerated": AT,
                        "ApimSubscriptionId": f"sub_{n % 1000}",
                        "ResponseCode": 200,
                        "Url": f"http://127.0.0.1/echo/{n}",
                        "CorrelationId": f"{n:032x}",
                    }
                )
            store.flush()

        timed("append + flush", append)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--calls-per-subscription", type=int, default=100)
    parser.add_argument("--gateway-rows", type=int, default=100_000)
    args = parser.parse_args()
    for rows in args.rows:
        run(rows, args.calls_per_subscription)
    gateway_rows(args.gateway_rows)


if __name__ == "__main__":
    main()

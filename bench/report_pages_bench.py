"""Client CPU per APIM report page: `ApimUsageReports.read` of a 10,000-row report, 0 ms latency.

    .venv/bin/python bench/report_pages_bench.py [--rows 10000] [--repeat 5]

The emulator runs in a child process (`--serve`), so `time.process_time()` here counts only the
client: the SDK's `reports.list_by_subscription` (pipeline, TLS, JSON, its ReportRecordContract
models) and our own code. Prints CPU per 100-row page for each read, then where a page's CPU goes:
the same pages' bodies (captured once through the public `raw_response_hook`) decoded with
`json.loads` alone, and deserialized into the SDK's models (`ReportCollection.deserialize`, as the
pager does): the share a raw-JSON reader would save (bench/README.md, "Public SDK surfaces (issue 20)").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.core.pipeline import PipelineResponse
from azure.identity import ClientSecretCredential
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement.models import ProductContract, ReportCollection

from billing.adapters.apim_client import ApimService
from billing.adapters.usage_reports import ApimUsageReports, report_filter
from billing.usage.ratelimit import TokenBucket
from billing.usage.windows import ReportWindow
from emulators.apim.server import ApimEmulator

HOUR = 3600


def serve(rows: int, at: int) -> None:
    """Child: an emulator with `rows` subscriptions that made calls at `at`; runs until stdin closes."""
    with ApimEmulator() as emu:
        client = emu.management_client()
        client.product.create_or_update(
            emu.resource_group,
            emu.service_name,
            "payg",
            ProductContract(
                display_name="payg", subscription_required=True, approval_required=False, state="published"
            ),
        )
        client.close()
        sids = [f"sub_{n:06d}" for n in range(rows)]
        emu.bulk_create_subscriptions(sids, product_id="payg")
        for n, sid in enumerate(sids):
            emu.record_usage(sid, n + 1, at=datetime.fromtimestamp(at, UTC))
        print(
            json.dumps(
                {
                    "url": emu.management_url,
                    "ca": emu.ca_bundle,
                    "sub": emu.subscription_id,
                    "rg": emu.resource_group,
                    "name": emu.service_name,
                    "tokens": [emu.emu.tokens.tenant_id, emu.emu.tokens.client_id, emu.emu.tokens.client_secret],
                }
            ),
            flush=True,
        )
        sys.stdin.read()


def shares(client: ApiManagementClient, service: ApimService, window: ReportWindow) -> None:
    """Where a page's CPU goes: JSON decoding alone against the SDK's model deserialization."""
    bodies: list[bytes] = []

    def keep(response: PipelineResponse[Any, Any]) -> None:
        bodies.append(response.http_response.body())

    pages = client.reports.list_by_subscription(
        service.resource_group, service.service_name, report_filter(window), raw_response_hook=keep
    )
    rows = sum(1 for _ in pages)
    started = time.process_time()
    docs = [json.loads(body) for body in bodies]
    decoded = time.process_time() - started
    started = time.process_time()
    models = [ReportCollection.deserialize(doc) for doc in docs]
    modelled = time.process_time() - started
    assert sum(len(m.value or []) for m in models) == rows
    count = len(bodies)
    print(
        f"per page of {rows // count} rows ({count} pages): json.loads {1000 * decoded / count:.2f} ms, "
        f"then the SDK's models {1000 * modelled / count:.2f} ms (ReportCollection.deserialize)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--at", type=int, default=int(time.time()) - HOUR, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.rows, args.at)
        return 0
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--rows", str(args.rows), "--at", str(args.at)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        tenant, client_id, secret = info["tokens"]
        credential = ClientSecretCredential(
            tenant,
            client_id,
            secret,
            authority=info["url"],
            disable_instance_discovery=True,
            connection_verify=info["ca"],
        )
        client = ApiManagementClient(credential, info["sub"], base_url=info["url"], connection_verify=info["ca"])
        service = ApimService(client, info["rg"], info["name"])
        window = ReportWindow(args.at - HOUR, args.at + 60)
        ApimUsageReports(service, TokenBucket(10_000)).read(window)  # warm up: token, connections, imports
        per_page = []
        for _ in range(args.repeat):
            reports = ApimUsageReports(service, TokenBucket(10_000))
            cpu, wall = time.process_time(), time.perf_counter()
            counts = reports.read(window)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            assert len(counts) == args.rows, f"read {len(counts)} rows, expected {args.rows}"
            per_page.append(1000 * cpu / reports.requests)
            print(
                f"{reports.requests} pages, {len(counts)} rows: CPU {cpu:.3f}s, "
                f"{per_page[-1]:.2f} ms CPU per page, wall {wall:.3f}s"
            )
        print(f"median: {statistics.median(per_page):.2f} ms CPU per page")
        shares(client, service, window)
        client.close()
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Client CPU per APIM report page: `ApimUsageReports.read` of a 10,000-row report, 0 ms latency.

    .venv/bin/python bench/report_pages_bench.py [--rows 10000] [--repeat 5]

The emulator runs in a child process (`--serve`), so `time.process_time()` here counts only the
client: the SDK pipeline, TLS, JSON parsing and our own code. Prints CPU seconds per 100-row page.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azure.identity import ClientSecretCredential
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement.models import ProductContract

from billing.adapters.apim_client import ApimService
from billing.adapters.usage_reports import ApimUsageReports
from billing.usage.ratelimit import TokenBucket
from billing.usage.windows import ReportWindow
from emulators.apim.server import ApimEmulator

HOUR = 3600


def serve(rows: int, at: int) -> None:
    """Child: an emulator with `rows` subscriptions that made calls at `at`; runs until stdin closes."""
    with ApimEmulator() as emu:
        client = emu.management_client()
        client.product.create_or_update(emu.resource_group, emu.service_name, "payg", ProductContract(
            display_name="payg", subscription_required=True, approval_required=False, state="published"))  # fmt: skip
        client.close()
        sids = [f"sub_{n:06d}" for n in range(rows)]
        emu.bulk_create_subscriptions(sids, product_id="payg")
        for n, sid in enumerate(sids):
            emu.record_usage(sid, n + 1, at=datetime.fromtimestamp(at, UTC))
        print(json.dumps({"url": emu.management_url, "ca": emu.ca_bundle, "sub": emu.subscription_id,
                          "rg": emu.resource_group, "name": emu.service_name,
                          "tokens": [emu.emu.tokens.tenant_id, emu.emu.tokens.client_id,
                                     emu.emu.tokens.client_secret]}), flush=True)  # fmt: skip
        sys.stdin.read()


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
    child = subprocess.Popen([sys.executable, __file__, "--serve", "--rows", str(args.rows), "--at", str(args.at)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        tenant, client_id, secret = info["tokens"]
        credential = ClientSecretCredential(tenant, client_id, secret, authority=info["url"],
                                            disable_instance_discovery=True, connection_verify=info["ca"])  # fmt: skip
        client = ApiManagementClient(credential, info["sub"], base_url=info["url"], connection_verify=info["ca"])
        service = ApimService(client, info["rg"], info["name"])
        window = ReportWindow(args.at - HOUR, args.at + 60)
        ApimUsageReports(service, TokenBucket(10_000)).read(window)  # warm up: token, connections, imports
        for _ in range(args.repeat):
            reports = ApimUsageReports(service, TokenBucket(10_000))
            cpu, wall = time.process_time(), time.perf_counter()
            counts = reports.read(window)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            assert len(counts) == args.rows, f"read {len(counts)} rows, expected {args.rows}"
            print(f"{reports.requests} pages, {len(counts)} rows: CPU {cpu:.3f}s, "
                  f"{1000 * cpu / reports.requests:.2f} ms CPU per page, wall {wall:.3f}s")  # fmt: skip
        client.close()
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

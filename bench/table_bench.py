"""Benchmark (not a test): client CPU of the app's Table Storage paths against the SDK's own.

    .venv/bin/python -m bench.table_bench [--rows 20000]

On its own Azurite, it lists `--rows` subscription-link-shaped rows with `TableClient.list_entities`
and with `billing.store.table_rows.query_rows`, and writes transactions shaped like the usage
push's watermark writes (2 rows of 16 KB, as at 100,000 subscriptions; 30 rows of 1.6 KB, as at
10,000) with `TableClient.submit_transaction` and with `billing.store.table_transactions.submit`.
It prints this process's CPU per row and per transaction (Azurite's own time is not counted).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from azure.core import MatchConditions  # noqa: E402
from azure.data.tables import TableClient, UpdateMode  # noqa: E402

from billing.adapters.storage import ensure_table  # noqa: E402
from billing.store.table_rows import query_rows  # noqa: E402
from billing.store.table_transactions import Write, submit  # noqa: E402
from devstack.azurite import Azurite  # noqa: E402

REPEATS = 20


def _link_row(n: int) -> dict[str, object]:
    sid = f"sub_bench{n:07d}"
    return {"PartitionKey": f"{n // 100:04d}", "RowKey": sid, "apim_subscription_id": sid, "apim_user_id": f"u{n}",
            "product_id": "standard", "subscription_name": sid, "stripe_customer_id": f"cus_{n:014d}",
            "stripe_subscription_id": sid, "stripe_usage_item_id": f"si_{n:014d}", "stripe_status": "active",
            "apim_state": "active", "current_period_start": 1_764_000_000 + n,
            "current_period_end": 1_766_600_000 + n, "stripe_state_at": 1_764_000_000, "canceled_at": 0}  # fmt: skip


def _cpu(action: object) -> float:
    started = time.process_time()
    action()  # type: ignore[operator]
    return time.process_time() - started


def reads(table: TableClient, rows: int) -> None:
    for start in range(0, rows, 100):
        submit(table, [Write(_link_row(n)) for n in range(start, min(rows, start + 100))])
    sdk = _cpu(lambda: sum(1 for _ in table.list_entities(results_per_page=1000)))
    ours = _cpu(lambda: sum(1 for _ in query_rows(table)))
    print(f"list {rows:,} rows: list_entities {sdk / rows * 1e6:.0f} us/row, query_rows {ours / rows * 1e6:.0f} "
          f"us/row ({sdk / ours:.1f}x less CPU)")  # fmt: skip


def transactions(table: TableClient, count: int, size: int) -> None:
    rows = [{"PartitionKey": "groups", "RowKey": f"{count}-{n:04d}", "parts": 1, "d0": "x" * size}
            for n in range(count)]  # fmt: skip
    etags = submit(table, [Write(r) for r in rows])

    def sdk_once() -> None:
        nonlocal etags
        answers = table.submit_transaction([("update", r, {"mode": UpdateMode.REPLACE, "etag": e,
                                                           "match_condition": MatchConditions.IfNotModified})
                                            for r, e in zip(rows, etags, strict=True)])  # fmt: skip
        etags = [str(a["etag"]) for a in answers]

    def ours_once() -> None:
        nonlocal etags
        etags = submit(table, [Write(r, e) for r, e in zip(rows, etags, strict=True)])

    sdk = _cpu(lambda: [sdk_once() for _ in range(REPEATS)]) / REPEATS
    ours = _cpu(lambda: [ours_once() for _ in range(REPEATS)]) / REPEATS
    print(f"transaction of {count} rows x {size:,} chars: submit_transaction {sdk * 1000:.1f} ms, submit "
          f"{ours * 1000:.1f} ms ({sdk / ours:.1f}x less CPU)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.table_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows to list (at least 100)")
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error(f"--rows must be at least 100, got {args.rows}")
    with Azurite() as azurite:
        env = {"AzureWebJobsStorage": azurite.connection_string}
        reads(ensure_table("benchlinks", env), args.rows)
        marks = ensure_table("benchmarks", env)
        transactions(marks, 2, 16_000)
        transactions(marks, 30, 1_600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark (not a test): client CPU of the app's two Table Storage paths, side by side.

    .venv/bin/python -m bench.table_bench [--rows 20000]

On its own Azurite, it lists `--rows` subscription-link-shaped rows with
`billing.store.table_rows.query_rows` through each path ("sdk": `TableClient.list_entities`, the
public API; "wire": `billing.store.table_wire`), and writes transactions shaped like the usage
push's watermark writes (2 rows of 16 KB, as at 100,000 subscriptions; 30 rows of 1.6 KB, as at
10,000) with `billing.store.table_transactions.submit` through each path ("sdk":
`TableClient.submit_transaction`). It prints this process's CPU per row and per transaction
(Azurite's own time is not counted) and which path the app takes (`table_wire.ACTIVE`): the figures
that justify keeping the wire module (bench/README.md, "Public SDK surfaces (issue 20)").

Last, without Azurite: the watermark row codec of `billing.store.watermarks` on a group of 300
entries, half with a pending event: characters stored and CPU per entry to read a row in layout 1
(positional lists, as written before issue 20) and in layout 2 (named fields), and to write one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import azure.data.tables  # noqa: E402
from azure.data.tables import TableClient  # noqa: E402

from billing.adapters.storage import ensure_table  # noqa: E402
from billing.store import table_wire, watermarks  # noqa: E402
from billing.store.table_rows import Via, query_rows  # noqa: E402
from billing.store.table_transactions import Write, submit  # noqa: E402
from devstack.azurite import Azurite  # noqa: E402

REPEATS = 20


def _link_row(n: int) -> dict[str, object]:
    sid = f"sub_bench{n:07d}"
    return {
        "PartitionKey": f"{n // 100:04d}",
        "RowKey": sid,
        "apim_subscription_id": sid,
        "apim_user_id": f"u{n}",
        "product_id": "standard",
        "subscription_name": sid,
        "stripe_customer_id": f"cus_{n:014d}",
        "stripe_subscription_id": sid,
        "stripe_usage_item_id": f"si_{n:014d}",
        "stripe_status": "active",
        "apim_state": "active",
        "current_period_start": 1_764_000_000 + n,
        "current_period_end": 1_766_600_000 + n,
        "stripe_state_at": 1_764_000_000,
        "canceled_at": 0,
    }


def _cpu(action: Callable[[], object]) -> float:
    started = time.process_time()
    action()
    return time.process_time() - started


def reads(table: TableClient, rows: int) -> None:
    for start in range(0, rows, 100):
        submit(table, [Write(_link_row(n)) for n in range(start, min(rows, start + 100))])
    sum(1 for _ in query_rows(table, via="sdk"))  # warm up: connection, imports
    sdk = _cpu(lambda: sum(1 for _ in query_rows(table, via="sdk")))
    wire = _cpu(lambda: sum(1 for _ in query_rows(table, via="wire")))
    print(
        f"list {rows:,} rows: sdk {sdk / rows * 1e6:.0f} us/row, wire {wire / rows * 1e6:.0f} us/row "
        f"(wire: {sdk / wire:.1f}x less CPU)"
    )


def transactions(table: TableClient, count: int, size: int) -> None:
    rows = [
        {"PartitionKey": "groups", "RowKey": f"{count}-{n:04d}", "parts": 1, "d0": "x" * size} for n in range(count)
    ]
    etags = submit(table, [Write(r) for r in rows])

    def repeated(via: Via, times: int) -> None:
        nonlocal etags
        for _ in range(times):
            etags = submit(table, [Write(r, e) for r, e in zip(rows, etags, strict=True)], via=via)

    repeated("sdk", 1)  # warm up
    sdk = _cpu(lambda: repeated("sdk", REPEATS)) / REPEATS
    wire = _cpu(lambda: repeated("wire", REPEATS)) / REPEATS
    print(
        f"transaction of {count} rows x {size:,} chars: sdk {sdk * 1000:.1f} ms, wire {wire * 1000:.1f} ms "
        f"(wire: {sdk / wire:.1f}x less CPU)"
    )


def watermark_rows(entries: int = 300) -> None:
    """The stored row's codec: layout 1 against layout 2 (module-private functions: the bench measures them)."""
    old: dict[str, list[object]] = {}
    for n in range(entries):
        pending = None
        if n % 2:
            pending = [
                f"sub_bench{n:07d}:1764000000:{n + 500}",
                "apim_calls_payg",
                f"cus_{n:014d}",
                500,
                1_764_080_000,
                n + 500,
                1_764_090_000,
                False,
            ]
        old[f"sub_bench{n:07d}|1764000000"] = [n, 1_764_086_400, False, pending]
    text = json.dumps(old, separators=(",", ":"))
    layout_1 = {"parts": 1, "d0": text}
    decoded = watermarks._decode(layout_1)
    layout_2 = watermarks._encode(decoded)
    assert watermarks._decode(layout_2) == decoded
    chars = (len(text), sum(len(v) for k, v in layout_2.items() if k.startswith("d")))

    def per_entry(action: Callable[[], object]) -> float:
        return min(timeit.repeat(action, number=50, repeat=5)) / 50 / entries * 1e6

    read_1, read_2 = per_entry(lambda: watermarks._decode(layout_1)), per_entry(lambda: watermarks._decode(layout_2))
    write_2 = per_entry(lambda: watermarks._encode(decoded))
    print(
        f"watermark row of {entries} entries: layout 1 {chars[0]:,} chars, read {read_1:.2f} us/entry; "
        f"layout 2 {chars[1]:,} chars, read {read_2:.2f} us/entry, write {write_2:.2f} us/entry"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.table_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows to list (at least 100)")
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error(f"--rows must be at least 100, got {args.rows}")
    print(
        f"azure-data-tables {azure.data.tables.__version__}; the app takes the "
        f"{'wire' if table_wire.ACTIVE else 'sdk'} path (wire verified against {table_wire.VERIFIED_TABLES_VERSION})"
    )
    with Azurite() as azurite:
        env = {"AzureWebJobsStorage": azurite.connection_string}
        reads(ensure_table("benchlinks", env), args.rows)
        marks = ensure_table("benchmarks", env)
        transactions(marks, 2, 16_000)
        transactions(marks, 30, 1_600)
    watermark_rows()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

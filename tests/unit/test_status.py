"""The operator's status as it is read and shown: what needs attention, what could not be read."""

from __future__ import annotations

import json

from billing.ops.status import OpenInvoices, QueueState, Status, collect, open_invoices
from billing.usage.ports import ProductUsageState

NOW = 1_780_000_000
HOUR = 3600


def _healthy() -> Status:
    return Status(
        checked_at=NOW,
        usage=[ProductUsageState("payg", open_periods=3, counted_until=NOW - HOUR, oldest_cursor=NOW - 2 * HOUR)],
        subscriptions={"payg": {"active": 3, "suspended": 1}},
        queues=[QueueState("usage-batches", 0, 0), QueueState("stripe-event-work", 2, 0)],
        open_invoices=OpenInvoices(1, {"usd": 1_501}, NOW - 5 * 86_400),
        drift=[],
    )


def test_a_healthy_status_needs_nothing_and_shows_each_part() -> None:
    status = _healthy()
    assert status.attention() == []
    text = status.render()
    assert "Nothing needs attention." in text
    assert "USD 15.01 due" in text
    assert "stripe-event-work    2 waiting, 0 poison" in text
    assert "suspended" in text
    assert "Drift          none" in text


def test_poison_old_pending_events_a_missed_push_and_drift_need_attention() -> None:
    status = _healthy()
    status.queues = [QueueState("usage-batches", 0, 2)]
    status.usage = [
        ProductUsageState("payg", 1, NOW - 30 * HOUR, NOW - 30 * HOUR, pending=4, oldest_pending=NOW - 2 * HOUR)
    ]
    status.drift = ["sub_1: apim active -> suspended"]
    status.missing_settings = ["STRIPE_API_KEY"]
    notes = status.attention()
    assert notes == [
        "settings missing: STRIPE_API_KEY",
        f"payg: 4 meter event(s) pending since {_utc(NOW - 2 * HOUR)}",
        f"payg: usage counted only up to {_utc(NOW - 30 * HOUR)} for some subscriptions (a push did not run or did "
        "not finish)",
        "usage-batches: 2 poison message(s)",
        "1 subscription(s) differ between Stripe and APIM (run `reconcile`)",
    ]
    assert json.loads(status.to_json())["attention"] == notes


def test_a_part_that_cannot_be_read_is_named_and_the_others_are_still_read() -> None:
    def broken(status: Status) -> None:
        raise ConnectionError("Connection refused by 127.0.0.1:9\nsecond line never shown")

    def queues(status: Status) -> None:
        status.queues = [QueueState("usage-batches", 1, 0)]

    status = collect({"invoices": broken, "queues": queues}, NOW, [])
    assert status.unreadable == {"invoices": "ConnectionError: Connection refused by 127.0.0.1:9"}
    assert status.queues == [QueueState("usage-batches", 1, 0)]
    assert status.attention() == ["invoices could not be read: ConnectionError: Connection refused by 127.0.0.1:9"]


def test_open_invoices_are_summed_per_currency_and_the_scan_is_bounded() -> None:
    invoices = [{"currency": "usd", "amount_remaining": 100, "created": NOW - n} for n in range(1_200)]
    invoices[0] = {"currency": "jpy", "amount_remaining": 500, "created": NOW}
    summary = open_invoices(iter(invoices))
    assert (summary.count, summary.more) == (1_000, True)
    assert summary.due_minor == {"jpy": 500, "usd": 999 * 100}
    assert summary.oldest_created == NOW - 999
    text = Status(checked_at=NOW, open_invoices=summary).render()
    assert "1000+ open, JPY 500, USD 999.00 due" in text  # JPY has no minor unit


def _utc(ts: int) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")

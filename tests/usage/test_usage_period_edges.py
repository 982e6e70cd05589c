"""Usage at the edges of a billing period, end to end (Azurite, both emulators, test clocks).

- A subscription cancelled mid-period (closing report, then `invoice_now`) has its last calls on
  the final invoice.
- Calls in the last hour of a period, too recent for the last regular push (report lag), reach
  that period's invoice through the period-end closing report.
"""

from __future__ import annotations

import pytest

from billing.bootstrap import services
from billing.pricing import quote
from billing.usage.closing import report_closing_usage
from tests.usage.conftest import HOUR, MODELS, UsageStack

pytestmark = pytest.mark.storage
DAY = 24 * HOUR


def test_a_subscription_cancelled_mid_period_has_its_final_usage_on_the_final_invoice(usage_stack: UsageStack) -> None:
    stack = usage_stack
    # standard: $89.95 a month in advance, 100,000 calls included, then $0.10 per 100 calls.
    # payg: no flat fee, $0.15 per 100 calls from the first call.
    calls = {"standard": 100_000 + 2_345, "payg": 1_001}
    subs = {pid: stack.subscribe(pid, f"cancel-{pid}") for pid in calls}
    clocks = [clock for _, _, clock in subs.values()]
    periods = {pid: stack.period_of(sid) for pid, (sid, _, _) in subs.items()}
    start = min(p[0] for p in periods.values())
    sids = [sid for sid, _, _ in subs.values()]
    stack.start_pushes(sids, start)

    # Part of the usage early in the period, reported by a regular push (30-minute report lag)...
    early = {"standard": 60_000, "payg": 400}
    for pid, (sid, _, _) in subs.items():
        stack.record(sid, early[pid], at=start + 90 * 60)
        stack.record(sid, 50, at=start + 90 * 60, outcome="blocked")  # never billable
    stack.at(clocks, start + 3 * HOUR)
    first = stack.push_all(services().new_usage_push(), sids, start + 3 * HOUR)
    assert first.events_sent == 1  # payg only: standard's 60,000 calls are all included

    # ...the rest days later, minutes before the consumer cancels: no regular push has seen it.
    cancel_at = start + 5 * DAY
    for pid, (sid, _, _) in subs.items():
        stack.record(sid, calls[pid] - early[pid], at=cancel_at - 10 * 60)
    stack.at(clocks, cancel_at)

    for pid, (sid, _, clock) in subs.items():
        period_start, period_end = periods[pid]
        # What the unsubscribe flow does: the closing report (events stamped with `now`), then the cancel.
        closing = report_closing_usage(sid, period_start, period_end, services().new_usage_push(), now=cancel_at)
        assert closing.failed == 0, closing.failures
        cancelled = stack.stripe.v1.subscriptions.cancel(sid, params={"invoice_now": True, "prorate": False})
        assert cancelled.status == "canceled"
        final_id = cancelled.latest_invoice
        assert isinstance(final_id, str)
        # The final invoice is finalised an hour later (metered lines re-aggregated then).
        stack.stripe.v1.test_helpers.test_clocks.advance(clock, params={"frozen_time": cancel_at + 2 * HOUR})
        final = stack.stripe.v1.invoices.retrieve(final_id)
        product = MODELS.product(pid)
        # quote() prices the whole period: flat fee + usage. The flat fee was charged in advance on the
        # first invoice and prorate=False credits nothing back, so the final invoice is the usage alone:
        # the quote minus the flat fee.
        expected = quote(product, calls[pid]).total - product.flat_fee_minor
        assert int(final.total) == expected, (pid, final.total, expected)

    # The same by hand, from the published prices (cents): standard bills 2,345 calls beyond the
    # 100,000 included at 0.1 cent = 234.5 -> 235 (half up, once per line); payg bills 1,001 calls at
    # 0.15 cent = 150.15 -> 150.
    finals = {
        pid: stack.stripe.v1.invoices.retrieve(str(stack.stripe.v1.subscriptions.retrieve(sid).latest_invoice))
        for pid, (sid, _, _) in subs.items()
    }
    assert {pid: int(inv.total) for pid, inv in finals.items()} == {"standard": 235, "payg": 150}
    assert all(inv.status == "paid" for inv in finals.values())


def test_usage_in_the_last_hour_of_a_period_lands_on_that_periods_invoice(usage_stack: UsageStack) -> None:
    stack = usage_stack
    sid, _customer, clock = stack.subscribe("payg", "last-hour")
    period_start, period_end = stack.period_of(sid)
    push = services().new_usage_push()
    stack.start_pushes([sid], period_start)

    stack.record(sid, 700, at=period_start + 2 * DAY)
    stack.record(sid, 333, at=period_end - 30 * 60)  # the last half hour of the period
    stack.record(sid, 5, at=period_end - 20 * 60, outcome="blocked")

    # The last regular push of the period, 10 minutes before its end: the report lag (30 minutes)
    # hides the late calls, so only the 700 early ones are reported.
    stack.at([clock], period_end - 10 * 60)
    before_end = stack.push_all(push, [sid], period_end - 10 * 60)
    assert before_end.calls_reported == 700

    # The period ends: Stripe opens the draft renewal invoice (invoice.created) and finalises it an
    # hour later. The period-end closing report runs in between, reading up to the period's end.
    stack.at([clock], period_end + 60)
    draft = [
        i
        for i in stack.stripe.v1.invoices.list(params={"subscription": sid}).data
        if i.billing_reason == "subscription_cycle"
    ]
    assert [i.status for i in draft] == ["draft"]
    closing = report_closing_usage(sid, period_start, period_end, push, now=period_end + 60)
    assert closing.calls_reported == 333

    # A regular push after the period end (the link still shows the old period) adds nothing.
    stack.at([clock], period_end + 50 * 60)
    assert stack.push_all(push, [sid], period_end + 50 * 60).events_sent == 0

    invoice = stack.renewal_invoice(sid, clock, period_end)
    assert invoice.status == "paid"
    assert (invoice.period_start, invoice.period_end) == (period_start, period_end)
    # By hand: 1,033 successful calls at 0.15 cent = 154.95 -> 155 cents; blocked calls are free.
    assert int(invoice.total) == 155 == quote(MODELS.product("payg"), 700 + 333).total

    # Nothing of it spills into the next period: its preview has no usage yet.
    preview = stack.stripe.v1.invoices.create_preview(params={"subscription": sid})
    assert int(preview.total) == 0

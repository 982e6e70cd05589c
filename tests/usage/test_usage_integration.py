"""Usage push end to end: gateway calls -> APIM reports -> push -> Stripe meter -> invoice (Azurite, emulators)."""

from __future__ import annotations

from typing import Any

import pytest

from billing.pricing import quote
from billing.usage.closing import report_closing_usage
from billing.usage.ports import SendResult
from billing.usage.push import UsagePush
from billing.usage.wiring import usage_push
from tests.usage.conftest import MODELS, UsageStack

pytestmark = pytest.mark.storage
HOUR = 3600


class Crash(Exception):
    pass


def _push_all(push: UsagePush, stack: UsageStack, sids: list[str], as_of: int) -> None:
    from billing.adapters.storage import table  # noqa: PLC0415
    from billing.store.subscriptions import SubscriptionLinks  # noqa: PLC0415

    links = SubscriptionLinks(table("subscriptions", stack.env))
    mine = [found[0] for sid in sids if (found := links.get(sid)) is not None]
    for batch in push.plan_batches(as_of, links=mine):
        push.process_batch(batch)


def _renewal_invoice(stack: UsageStack, sid: str, clock: str, period_end: int) -> Any:
    """Advance the subscription's test clock past the period end; the invoice of the ended period."""
    stack.stripe.v1.test_helpers.test_clocks.advance(clock, params={"frozen_time": period_end + 2 * HOUR})
    invoices = stack.stripe.v1.invoices.list(params={"subscription": sid, "limit": 10}).data
    renewal = [i for i in invoices if i.billing_reason == "subscription_cycle"]
    assert renewal, [i.billing_reason for i in invoices]
    return renewal[0]


def _at(stack: UsageStack, clocks: list[str], when: int) -> None:
    """Move APIM's clock and every Stripe test clock to `when` (both only go forward)."""
    stack.clock_now["t"] = when
    for clock in clocks:
        stack.stripe.v1.test_helpers.test_clocks.advance(clock, params={"frozen_time": when})


def test_invoices_equal_the_quote_for_successful_calls_only_and_a_crash_counts_nothing_twice(
    usage_stack: UsageStack,
) -> None:
    stack = usage_stack
    calls = {"developer": 130, "payg": 25, "standard": 12}
    subs = {}
    for pid in calls:
        subs[pid] = stack.subscribe(pid, f"user-{pid}")
    link_period = {}
    for pid, (sid, _cus, _clock) in subs.items():
        sub = stack.stripe.v1.subscriptions.retrieve(sid)
        item = sub["items"]["data"][0]
        link_period[pid] = (int(item["current_period_start"]), int(item["current_period_end"]))
    start = min(p[0] for p in link_period.values())

    # An hour in: successful, failed (500) and blocked (429) calls through the gateway.
    clocks = [c for _, _, c in subs.values()]
    _at(stack, clocks, start + HOUR)
    for pid, (sid, _, _) in subs.items():
        first = calls[pid] // 2
        stack.call(sid, first)
        stack.call(sid, 3, status=500)  # failed: not billable for these products
        stack.call(sid, 4, status=429)  # blocked: never billable

    # First push crashes after Stripe accepted the events, before the watermarks are recorded.
    def crash(result: SendResult) -> None:
        raise Crash

    sids = [s for s, _, _ in subs.values()]
    crashing = usage_push()
    crashing.after_send = crash
    _at(stack, clocks, start + 3 * HOUR)
    with pytest.raises(Crash):
        _push_all(crashing, stack, sids, start + 3 * HOUR)

    # More calls, then the rerun (a later push): the pending events are resent, Stripe drops them.
    _at(stack, clocks, start + 4 * HOUR)
    for pid, (sid, _, _) in subs.items():
        stack.call(sid, calls[pid] - calls[pid] // 2)
    _at(stack, clocks, start + 6 * HOUR)
    _push_all(usage_push(), stack, sids, start + 6 * HOUR)
    _at(stack, clocks, start + 7 * HOUR)
    _push_all(usage_push(), stack, sids, start + 7 * HOUR)  # nothing new: nothing more

    for pid, (sid, _, clock) in subs.items():
        period_start, period_end = link_period[pid]
        report_closing_usage(sid, period_start, period_end, usage_push(), now=period_end)
        invoice = _renewal_invoice(stack, sid, clock, period_end)
        expected = quote(MODELS.product(pid), calls[pid]).total  # flat fee (next period) + usage (this one)
        assert int(invoice.total) == expected, (pid, invoice.total, expected)

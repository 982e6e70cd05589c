"""Usage push end to end: gateway calls -> APIM reports -> push -> Stripe meter -> invoice (Azurite, emulators)."""

from __future__ import annotations

import pytest

from billing.bootstrap import services
from billing.pricing import quote
from billing.usage.closing import report_closing_usage
from billing.usage.ports import SendResult
from tests.usage.conftest import HOUR, MODELS, UsageStack

pytestmark = pytest.mark.storage


class Crash(Exception):
    pass


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
    sids = [s for s, _, _ in subs.values()]
    stack.start_pushes(sids, start)

    # An hour in: successful, failed (500) and blocked (429) calls through the gateway.
    clocks = [c for _, _, c in subs.values()]
    stack.at(clocks, start + HOUR)
    for pid, (sid, _, _) in subs.items():
        first = calls[pid] // 2
        stack.call(sid, first)
        stack.call(sid, 3, status=500)  # failed: not billable for these products
        stack.call(sid, 4, status=429)  # blocked: never billable

    # First push crashes after Stripe accepted the events, before the watermarks are recorded.
    def crash(result: SendResult) -> None:
        raise Crash

    crashing = services().new_usage_push()
    crashing.after_send = crash
    stack.at(clocks, start + 3 * HOUR)
    with pytest.raises(Crash):
        stack.push_all(crashing, sids, start + 3 * HOUR)

    # More calls, then the rerun (a later push): the pending events are resent, Stripe drops them.
    stack.at(clocks, start + 4 * HOUR)
    for pid, (sid, _, _) in subs.items():
        stack.call(sid, calls[pid] - calls[pid] // 2)
    stack.at(clocks, start + 6 * HOUR)
    stack.push_all(services().new_usage_push(), sids, start + 6 * HOUR)
    stack.at(clocks, start + 7 * HOUR)
    stack.push_all(services().new_usage_push(), sids, start + 7 * HOUR)  # nothing new: nothing more

    for pid, (sid, _, clock) in subs.items():
        period_start, period_end = link_period[pid]
        report_closing_usage(sid, period_start, period_end, services().new_usage_push(), now=period_end)
        invoice = stack.renewal_invoice(sid, clock, period_end)
        expected = quote(MODELS.product(pid), calls[pid]).total  # flat fee (next period) + usage (this one)
        assert int(invoice.total) == expected, (pid, invoice.total, expected)

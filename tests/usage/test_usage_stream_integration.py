"""The v2 meter event stream path end to end: enough subscriptions that their events go to Stripe
through `/v2/billing/meter_event_stream` (session token) in two requests, a crash after the stream
accepted them, the rerun resending them through the stream (Stripe drops the duplicates), new
calls after that, and every renewal invoice equal to the quote of that subscription's calls.
"""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import pytest

from billing.adapters.usage_meter import STREAM_MAX_EVENTS, StripeMeterSender
from billing.bootstrap import services
from billing.pricing import quote
from billing.usage.ports import SendResult
from tests.usage.conftest import HOUR, MODELS, UsageStack

pytestmark = pytest.mark.storage
CUSTOMERS_PER_CLOCK = 3  # Stripe: a test clock holds at most three customers


class Crash(Exception):
    pass


def _calls(n: int) -> int:
    return 1_000 + 7 * n


def test_a_full_chunk_goes_through_the_stream_and_a_crashed_run_resends_it_without_double_billing(
    usage_stack: UsageStack,
) -> None:
    stack = usage_stack
    count = STREAM_MAX_EVENTS + 30  # one chunk of up to 100 and the rest: both through the stream
    start = int(stack.now())
    # Test clocks frozen at the same instant give every subscription the same period, so one report
    # read and one batch cover them all, in chunks of 100 subscriptions.
    clocks = [
        stack.stripe.v1.test_helpers.test_clocks.create(params={"frozen_time": start}).id
        for _ in range(-(-count // CUSTOMERS_PER_CLOCK))
    ]
    subs = [
        stack.subscribe_direct("payg", f"stream-{n:03d}", clock=clocks[n // CUSTOMERS_PER_CLOCK])[0]
        for n in range(count)
    ]
    assert {stack.period_of(sid) for sid in (subs[0], subs[-1])} == {stack.period_of(subs[0])}
    period_start, period_end = stack.period_of(subs[0])
    stack.apim_emu.bulk_create_subscriptions(subs, product_id="payg")
    stack.start_pushes(subs, start)
    calls = {sid: _calls(n) for n, sid in enumerate(subs)}
    for sid, n in calls.items():
        stack.record(sid, n, at=start + HOUR)
        stack.record(sid, 9, at=start + HOUR, outcome="blocked")

    # The first run crashes after the stream accepted the events (100 a request), before recording them.
    stack.at(clocks, start + 3 * HOUR)
    crashing = services().new_usage_push()

    def crash(result: SendResult) -> None:
        raise Crash

    crashing.after_send = crash
    with pytest.raises(Crash):
        stack.push_all(crashing, subs, start + 3 * HOUR)
    first = cast(StripeMeterSender, crashing.meter).requests
    assert first == {"v1": 0, "stream": 2, "session": 1}

    # The rerun resends the pending events through the stream (same identifiers: Stripe drops them).
    stack.at(clocks, start + 4 * HOUR)
    rerun = services().new_usage_push()
    summary = stack.push_all(rerun, subs, start + 4 * HOUR)
    assert (summary.recovered, summary.events_sent, summary.failed) == (count, 0, 0)
    assert cast(StripeMeterSender, rerun.meter).requests == {"v1": 0, "stream": 2, "session": 1}

    # Later calls of some subscriptions go in the next run, from where the recorded ones left off.
    for n, sid in enumerate(subs[-(STREAM_MAX_EVENTS // 2) :]):
        stack.record(sid, n + 1, at=start + 5 * HOUR)
        calls[sid] += n + 1
    stack.at(clocks, start + 6 * HOUR)
    later = stack.push_all(services().new_usage_push(), subs, start + 6 * HOUR)
    assert (later.events_sent, later.calls_reported) == (STREAM_MAX_EVENTS // 2, sum(range(1, 51)))

    # Every renewal invoice bills exactly that subscription's successful calls, once.
    for clock in clocks:
        stack.stripe.v1.test_helpers.test_clocks.advance(clock, params={"frozen_time": period_end + 2 * HOUR})
    product = MODELS.product("payg")
    totals = {}
    for sid in subs:
        invoices = stack.stripe.v1.invoices.list(params={"subscription": sid, "limit": 10}).data
        (renewal,) = [i for i in invoices if i.billing_reason == "subscription_cycle"]
        assert (renewal.period_start, renewal.period_end, renewal.status) == (period_start, period_end, "paid")
        totals[sid] = int(renewal.total)
    assert totals == {sid: quote(product, n).total for sid, n in calls.items()}
    # By hand for two of them: $0.15 per 100 calls = 0.15 cent a call, rounded half up once per line.
    assert totals[subs[0]] == 150  # 1,000 calls: 150 cents
    assert totals[subs[1]] == round(Fraction(1_007 * 15, 100))  # 151.05 -> 151

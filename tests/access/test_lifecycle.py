"""End to end with the Stripe emulator's real deliveries: pay, fail, recover, cancel -> APIM and the gateway."""

from __future__ import annotations

import json
import time

import pytest
from azure.data.tables import TableClient
from azure.storage.queue import BinaryBase64DecodePolicy, QueueClient

from billing.records import SubscriptionLink
from billing.store.subscriptions import SubscriptionLinks
from billing.store.tables import SUBSCRIPTIONS_TABLE, USAGE_BATCH_QUEUE
from tests.access.conftest import USER_ID, Stack, wait_until

pytestmark = pytest.mark.storage
DAY = 86400


def _link(stack: Stack, sid: str) -> SubscriptionLink:
    table = TableClient.from_connection_string(stack.env["AzureWebJobsStorage"], SUBSCRIPTIONS_TABLE)
    found = SubscriptionLinks(table).get(sid)
    assert found is not None, f"no subscription link for {sid}"
    return found[0]


def _closing_messages(stack: Stack, sid: str, timeout: float = 20) -> list[dict[str, object]]:
    """The usage queue's messages about `sid`, once they show: a closing request is hidden for the report
    lag (the stack's, a few seconds), so that APIM's data for the period's last calls has arrived."""
    queue = QueueClient.from_connection_string(
        stack.env["AzureWebJobsStorage"], USAGE_BATCH_QUEUE, message_decode_policy=BinaryBase64DecodePolicy()
    )
    deadline = time.monotonic() + timeout
    while True:
        messages = [json.loads(m.content) for m in queue.peek_messages(max_messages=32)]
        mine = [m for m in messages if m.get("subscription_id") == sid]
        if mine or time.monotonic() > deadline:
            return mine
        time.sleep(0.1)  # the message comes due by the clock


def test_pay_fail_recover_cancel(stack: Stack) -> None:
    customer, clock = stack.new_customer()
    sid = stack.checkout(customer, "standard")
    stack.settle()

    # Paid at checkout: the APIM subscription id is the Stripe subscription id, active, key works.
    assert stack.apim_state(sid) == "active"
    assert stack.gateway_status(sid) == 200
    contract = stack.apim.subscription.get(*stack.where, sid)
    assert contract.owner_id is not None
    assert contract.owner_id.endswith(f"/users/{USER_ID}")
    assert contract.scope is not None
    assert contract.scope.endswith("/products/standard")
    assert contract.display_name == "my key"
    sub = stack.stripe.v1.subscriptions.retrieve(sid)
    metered = [i for i in sub["items"]["data"] if i["price"]["recurring"]["usage_type"] == "metered"]
    link = _link(stack, sid)
    assert (link.stripe_customer_id, link.stripe_usage_item_id) == (customer, metered[0]["id"])
    assert (link.current_period_start, link.current_period_end) == (
        metered[0]["current_period_start"],
        metered[0]["current_period_end"],
    )
    assert (link.apim_state, link.stripe_status) == ("active", "active")

    # Renewal with a card that fails: Stripe marks the subscription past_due -> APIM suspended, key blocked.
    failing = stack.stripe.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer})
    stack.stripe.v1.subscriptions.update(sid, params={"default_payment_method": failing.id})
    period_end = link.current_period_end
    assert clock is not None
    stack.stripe.v1.test_helpers.test_clocks.advance(clock, params={"frozen_time": period_end + 2 * 3600})
    stack.settle()
    assert stack.stripe.v1.subscriptions.retrieve(sid).status == "past_due"
    assert stack.apim_state(sid) == "suspended"
    assert stack.gateway_status(sid) == 401
    # The renewal invoice's creation asked the usage area for the finished period's closing report.
    closing = _closing_messages(stack, sid)
    assert {
        "kind": "closing",
        "subscription_id": sid,
        "period_start": link.current_period_start,
        "period_end": period_end,
    } in closing
    assert _link(stack, sid).current_period_start == period_end

    # The consumer pays the open invoice with a working card -> active again, the same key works.
    invoice_id = stack.stripe.v1.subscriptions.retrieve(sid).latest_invoice
    good = stack.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": customer})
    stack.stripe.v1.invoices.pay(str(invoice_id), params={"payment_method": good.id})
    stack.settle()
    assert stack.apim_state(sid) == "active"
    assert stack.gateway_status(sid) == 200

    # Cancelled in Stripe -> cancelled in APIM, key refused.
    stack.stripe.v1.subscriptions.cancel(sid)
    stack.settle()
    wait_until(lambda: stack.apim_state(sid) == "cancelled", what="APIM cancelled")
    assert stack.gateway_status(sid) == 401
    assert _link(stack, sid).canceled_at > 0
    # Every delivery was acknowledged: nothing was given up or left failing.
    report = stack.stripe_emu.core.deliverer.describe()
    assert report["given_up"] == []

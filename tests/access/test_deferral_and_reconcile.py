"""Submitted until the first invoice is paid; slow work deferred to the queue; reconcile repairs drift."""

from __future__ import annotations

import time

import pytest
import requests
from azure.mgmt.apimanagement.models import SubscriptionUpdateParameters

from billing.adapters.storage import queue
from billing.catalog_names import SUB_META_APIM_USER, SUB_META_NAME, SUB_META_PRODUCT
from billing.cli import main
from billing.store.tables import EVENT_WORK_QUEUE
from devhost.queues import QueuePoller
from tests.access.conftest import Stack, unique

pytestmark = pytest.mark.storage


def test_submitted_without_a_working_key_until_the_first_invoice_is_paid(stack: Stack) -> None:
    customer, _ = stack.new_customer(clock=False)
    failing = stack.stripe.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer})
    sub = stack.stripe.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": stack.catalog.flat_price["basic"], "quantity": 1}],
            "default_payment_method": failing.id,
            "payment_behavior": "allow_incomplete",
            "metadata": {SUB_META_APIM_USER: "grace", SUB_META_PRODUCT: "basic", SUB_META_NAME: "grace's key"},
        }
    )
    stack.settle()
    assert stack.stripe.v1.subscriptions.retrieve(sub.id).status == "incomplete"
    assert stack.apim_state(sub.id) == "submitted"
    assert stack.gateway_status(sub.id) == 401  # not an active subscription: "invalid subscription key"
    good = stack.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": customer})
    stack.stripe.v1.invoices.pay(str(sub.latest_invoice), params={"payment_method": good.id})
    stack.settle()
    assert stack.apim_state(sub.id) == "active"
    assert stack.gateway_status(sub.id) == 200


def test_slow_apim_defers_the_event_to_the_work_queue(stack: Stack) -> None:
    customer, _ = stack.new_customer(clock=False)
    sid = stack.checkout(customer, "basic")
    stack.settle()  # also warms the app's clients (token, tables)
    stack.pause_deliveries()
    stack.apim.subscription.update(*stack.where, sid, "*", SubscriptionUpdateParameters(state="suspended"))
    stack.apim_emu.faults.update({"latency_ms": 7000})  # APIM slower than the webhook's budget allows
    event = {
        "id": unique("evt"),
        "object": "event",
        "created": int(time.time()),
        "type": "invoice.paid",
        "data": {
            "object": {"id": "in_x", "object": "invoice", "parent": {"subscription_details": {"subscription": sid}}}
        },
    }
    started = time.monotonic()
    answer = stack.post_event(event)
    elapsed = time.monotonic() - started
    stack.apim_emu.faults.update({"latency_ms": 0})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "queued"
    assert elapsed < 10, f"the webhook answered after {elapsed:.1f} s; Stripe gives up at 10 s"
    # The queue-triggered worker (run as the Functions host would) applies it exactly once.
    import function_app  # noqa: PLC0415

    poller = QueuePoller(function_app.app, {EVENT_WORK_QUEUE: queue(EVENT_WORK_QUEUE)})
    assert poller.poll_once() == 1
    assert stack.apim_state(sid) == "active"
    again = stack.post_event(event)
    assert again.json().get("duplicate") is True


def test_reconcile_repairs_drift_and_dry_run_changes_nothing(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.pause_deliveries()  # an outage: the app hears nothing
    ada, _ = stack.new_customer("ada", clock=False)
    grace, _ = stack.new_customer("grace", clock=False)
    missing = stack.checkout(ada, "standard")
    drifted = stack.checkout(grace, "basic", user_id="grace")
    # `drifted` reached APIM before the outage but got the wrong state.
    from billing.access.decisions import AccessTarget, ApimState  # noqa: PLC0415
    from billing.adapters.access_apim import ApimSubscriptionsAdapter  # noqa: PLC0415
    from billing.adapters.apim_client import apim_service  # noqa: PLC0415

    ApimSubscriptionsAdapter(apim_service()).create(
        drifted, AccessTarget("grace", "basic", "my key"), ApimState.SUSPENDED, timeout=10
    )
    stack.apim_writes.clear()

    assert main(["reconcile", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would change {missing}: create APIM subscription for user ada, product standard, state active" in out
    assert f"would change {drifted}: APIM state suspended -> active" in out
    assert stack.apim_writes == []
    assert stack.apim_state(missing) is None

    assert main(["reconcile"]) == 0
    out = capsys.readouterr().out
    assert f"changed {missing}: create" in out
    assert f"changed {drifted}: APIM state suspended -> active" in out
    assert stack.apim_state(missing) == "active"
    assert stack.apim_state(drifted) == "active"
    assert stack.gateway_status(missing) == 200

    # Nothing left to repair: a second run changes nothing.
    stack.apim_writes.clear()
    assert main(["reconcile"]) == 0
    assert "changed 0," in capsys.readouterr().out
    assert stack.apim_writes == []

    # The timer-triggered reconcile (run on demand as Core Tools would) repairs drift as well.
    stack.apim.subscription.update(*stack.where, missing, "*", SubscriptionUpdateParameters(state="suspended"))
    ran = requests.post(f"{stack.host.base_url}/admin/functions/reconcile_access", json={"input": ""}, timeout=30)
    assert ran.status_code == 202
    assert stack.apim_state(missing) == "active"

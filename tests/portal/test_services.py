"""Subscribe and unsubscribe decisions with in-memory fakes of the portal's own ports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from billing.model_loader import load_models
from billing.portal.ports import Debt
from billing.portal.subscribe import GoToCheckout, Subscribed, SubscribeError, subscribe
from billing.portal.unsubscribe import unsubscribe
from tests.portal.fakes import FakeApim, FakeFinalInvoices, FakePayments

MODELS = load_models()


class NoTrials:
    def holder(self, product_id: str, keys: Sequence[str]) -> str | None:
        return None


def _apim() -> FakeApim:
    return FakeApim(users={"u1": "u1@example.com"})


def _subscribe(product_id: str, apim: FakeApim, payments: FakePayments, nonce: str = "n1") -> object:
    return subscribe(
        MODELS.product(product_id),
        "u1",
        "prod",
        nonce=nonce,
        apim=apim,
        payments=payments,
        app_base_url="https://app.example/",
        trials=NoTrials(),
    )


def test_paid_checkout_has_flat_price_with_quantity_and_metered_price_without() -> None:
    payments = FakePayments({"standard-flat": "price_f", "standard-usage": "price_u"})
    outcome = _subscribe("standard", _apim(), payments)
    assert outcome == GoToCheckout("https://checkout.stripe.com/c/pay/cs_test_1")
    request = payments.checkouts[0]
    assert list(request.price_lines) == [("price_f", 1), ("price_u", None)]
    assert request.metadata == {"apim_user_id": "u1", "apim_product_id": "standard", "apim_subscription_name": "prod"}
    assert request.success_url == "https://app.example/api/portal/checkout/success?session_id={CHECKOUT_SESSION_ID}"
    assert request.cancel_url == "https://app.example/api/portal/checkout/cancelled"


def test_missing_stripe_prices_are_named() -> None:
    with pytest.raises(SubscribeError, match="standard-usage") as raised:
        _subscribe("standard", _apim(), FakePayments({"standard-flat": "price_f"}))
    assert raised.value.status == 503


def test_a_held_product_is_not_sold_twice() -> None:
    apim = _apim()
    apim.create_subscription("sub_1", "u1", "payg", "old", "suspended")
    payments = FakePayments({"payg-usage": "price_u"})
    with pytest.raises(SubscribeError, match="already hold") as raised:
        _subscribe("payg", apim, payments)
    assert raised.value.status == 409
    assert payments.checkouts == []
    # A cancelled one does not count.
    apim.set_subscription_state("sub_1", "cancelled", "")
    assert isinstance(_subscribe("payg", apim, payments), GoToCheckout)


def test_free_forms_make_one_subscription_per_consumer_and_it_comes_back_on_resubscribing() -> None:
    apim = _apim()
    first = _subscribe("free", apim, FakePayments({}))
    second = _subscribe("free", apim, FakePayments({}), nonce="another form")
    assert isinstance(first, Subscribed)
    assert first == second
    assert len(apim.subs) == 1
    # Cancelled and subscribed again: the same subscription, whose quota count APIM keeps.
    apim.set_subscription_state(first.sid, "cancelled", "")
    again = _subscribe("free", apim, FakePayments({}), nonce="a third form")
    assert again == first
    assert [(s.sid, s.state) for s in apim.subs.values()] == [(first.sid, "active")]


def test_unpaid_invoices_stop_a_new_paid_subscription_but_not_free() -> None:
    payments = FakePayments({"payg-usage": "price_u"})
    payments.debts = [Debt("in_1", "A-0001", "usd", 150_001, "https://invoice.stripe.com/i/1")]
    with pytest.raises(SubscribeError, match="unpaid invoices") as raised:
        _subscribe("payg", _apim(), payments)
    assert raised.value.status == 402
    assert payments.checkouts == []
    assert isinstance(_subscribe("free", _apim(), payments), Subscribed)
    payments.debts = [Debt("in_1", "A-0001", "usd", 0, "")]  # paid meanwhile: nothing remains
    assert isinstance(_subscribe("payg", _apim(), payments), GoToCheckout)


def test_unsubscribe_tells_stripe_then_queues_the_final_invoice_then_cancels_apim() -> None:
    apim, payments = _apim(), FakePayments({})
    apim.create_subscription("sub_9", "u1", "standard", "prod", "active")
    order: list[str] = []
    payments.calls = order
    apim.calls = order
    now = datetime(2026, 1, 1, tzinfo=UTC)
    payments.clock_time = 1_500  # the subscription's Stripe test clock stands at 1,500
    unsubscribe("sub_9", apim, payments, now, FakeFinalInvoices(order))
    # Stripe is never cancelled here (that is the job's, after the lag); the cancel instant is Stripe's
    # present, not the wall clock's; the key stops last, once nothing can renew and the job is durable.
    assert order == ["stripe:end-access:sub_9:at=1500", "queue:final:sub_9:1000:2000:at=1500", "apim:sub_9:cancelled"]
    # Again: already cancelled, nothing more happens.
    unsubscribe("sub_9", apim, payments, now, FakeFinalInvoices(order))
    assert len(order) == 3


def test_unsubscribe_in_real_time_stamps_the_cancel_with_the_wall_clock() -> None:
    apim, payments = _apim(), FakePayments({})
    apim.create_subscription("sub_9", "u1", "standard", "prod", "active")
    order: list[str] = []
    payments.calls = order
    unsubscribe("sub_9", apim, payments, datetime.fromtimestamp(1_700, UTC), FakeFinalInvoices(order))
    assert order == ["stripe:end-access:sub_9:at=1700", "queue:final:sub_9:1000:2000:at=1700"]


def test_a_subscription_stripe_ended_already_gets_no_final_invoice_job() -> None:
    apim, payments = _apim(), FakePayments({})
    apim.create_subscription("sub_9", "u1", "standard", "prod", "suspended")
    payments.ended_in_stripe = True
    order: list[str] = []
    payments.calls = order
    apim.calls = order
    unsubscribe("sub_9", apim, payments, datetime(2026, 1, 1, tzinfo=UTC), FakeFinalInvoices(order))
    assert order == ["stripe:end-access:sub_9:at=1767225600", "apim:sub_9:cancelled"]


def test_a_never_paid_subscription_is_cancelled_in_stripe_at_once() -> None:
    apim, payments = _apim(), FakePayments({})
    apim.create_subscription("sub_9", "u1", "standard", "prod", "submitted")  # no working key ever
    order: list[str] = []
    payments.calls = order
    apim.calls = order
    unsubscribe("sub_9", apim, payments, datetime(2026, 1, 1, tzinfo=UTC), FakeFinalInvoices(order))
    assert order == ["stripe:cancel:sub_9", "apim:sub_9:cancelled"]


def test_a_pending_final_invoice_stops_a_new_paid_subscription_but_not_free() -> None:
    payments = FakePayments({"payg-usage": "price_u"})
    payments.pending = ["sub_old"]
    with pytest.raises(SubscribeError, match="final invoice") as raised:
        _subscribe("payg", _apim(), payments)
    assert raised.value.status == 402
    assert payments.checkouts == []
    assert isinstance(_subscribe("free", _apim(), payments), Subscribed)
    payments.pending = []  # made (and a draft with an amount due is an unpaid invoice from then on)
    assert isinstance(_subscribe("payg", _apim(), payments), GoToCheckout)

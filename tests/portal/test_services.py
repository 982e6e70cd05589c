"""Subscribe and unsubscribe decisions with in-memory fakes of the portal's own ports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from billing.model_loader import load_models
from billing.portal.ports import ApimSubscription, BillingPeriod, CheckoutInfo, CheckoutRequest, Debt
from billing.portal.subscribe import GoToCheckout, Subscribed, SubscribeError, subscribe
from billing.portal.unsubscribe import unsubscribe

MODELS = load_models()


class FakeApim:
    def __init__(self) -> None:
        self.subs: dict[str, ApimSubscription] = {}
        self.calls: list[str] = []

    def user_subscriptions(self, uid: str) -> Sequence[ApimSubscription]:
        return [s for s in self.subs.values() if s.owner_id == uid]

    def get_subscription(self, sid: str) -> ApimSubscription | None:
        return self.subs.get(sid)

    def create_subscription(self, sid: str, uid: str, product_id: str, name: str, state: str) -> None:
        self.subs[sid] = ApimSubscription(sid, uid, product_id, name, state, None, None)

    def set_subscription_state(self, sid: str, state: str, comment: str) -> None:
        self.calls.append(f"apim:{state}")
        old = self.subs[sid]
        self.subs[sid] = ApimSubscription(sid, old.owner_id, old.product_id, old.display_name, state, None, None)

    def user_email(self, uid: str) -> str | None:
        return f"{uid}@example.com"


class FakePayments:
    def __init__(self, prices: dict[str, str]) -> None:
        self.prices = prices
        self.checkouts: list[CheckoutRequest] = []
        self.calls: list[str] = []
        self.debts: list[Debt] = []

    def outstanding_invoices(self, uid: str, email: str | None) -> Sequence[Debt]:
        return self.debts

    def find_or_create_customer(self, uid: str, email: str | None) -> str:
        return f"cus_{uid}"

    def price_ids(self, lookup_keys: Sequence[str]) -> dict[str, str]:
        return {k: v for k, v in self.prices.items() if k in lookup_keys}

    def create_checkout(self, request: CheckoutRequest, idempotency_key: str) -> str:
        self.checkouts.append(request)
        return "https://checkout.stripe.com/c/pay/cs_test_1"

    def checkout_info(self, session_id: str) -> CheckoutInfo | None:
        return None

    def subscription_period(self, subscription_id: str) -> BillingPeriod | None:
        return BillingPeriod(1_000, 2_000, self.clock_time)

    clock_time: int | None = None
    ended_in_stripe = False  # Stripe ended the subscription before the consumer cancelled it
    pending: list[str] = []  # noqa: RUF012 - replaced per test, never mutated

    def cancel_subscription(self, subscription_id: str) -> None:
        self.calls.append("stripe:cancel")

    def end_access(self, subscription_id: str, at: int) -> bool:
        self.calls.append(f"stripe:end-access:{subscription_id}:at={at}")
        return not self.ended_in_stripe

    def pending_final_invoices(self, uid: str) -> Sequence[str]:
        return self.pending


class FakeFinalInvoices:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def schedule(self, subscription_id: str, period_start: int, period_end: int, cancel_at: int) -> None:
        self.calls.append(f"queue:final:{subscription_id}:{period_start}:{period_end}:at={cancel_at}")


class NoTrials:
    def holder(self, product_id: str, keys: Sequence[str]) -> str | None:
        return None


def _subscribe(product_id: str, apim: FakeApim, payments: FakePayments, nonce: str = "n1") -> object:
    return subscribe(MODELS.product(product_id), "u1", "prod", nonce=nonce, apim=apim,  # type: ignore[arg-type]
                     payments=payments, app_base_url="https://app.example/", trials=NoTrials())  # type: ignore[arg-type]


def test_paid_checkout_has_flat_price_with_quantity_and_metered_price_without() -> None:
    payments = FakePayments({"standard-flat": "price_f", "standard-usage": "price_u"})
    outcome = _subscribe("standard", FakeApim(), payments)
    assert outcome == GoToCheckout("https://checkout.stripe.com/c/pay/cs_test_1")
    request = payments.checkouts[0]
    assert list(request.price_lines) == [("price_f", 1), ("price_u", None)]
    assert request.metadata == {"apim_user_id": "u1", "apim_product_id": "standard", "apim_subscription_name": "prod"}
    assert request.success_url == "https://app.example/api/portal/checkout/success?session_id={CHECKOUT_SESSION_ID}"
    assert request.cancel_url == "https://app.example/api/portal/checkout/cancelled"


def test_missing_stripe_prices_are_named() -> None:
    with pytest.raises(SubscribeError, match="standard-usage") as raised:
        _subscribe("standard", FakeApim(), FakePayments({"standard-flat": "price_f"}))
    assert raised.value.status == 503


def test_a_held_product_is_not_sold_twice() -> None:
    apim = FakeApim()
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
    apim = FakeApim()
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
        _subscribe("payg", FakeApim(), payments)
    assert raised.value.status == 402
    assert payments.checkouts == []
    assert isinstance(_subscribe("free", FakeApim(), payments), Subscribed)
    payments.debts = [Debt("in_1", "A-0001", "usd", 0, "")]  # paid meanwhile: nothing remains
    assert isinstance(_subscribe("payg", FakeApim(), payments), GoToCheckout)


def test_unsubscribe_tells_stripe_then_queues_the_final_invoice_then_cancels_apim() -> None:
    apim, payments = FakeApim(), FakePayments({})
    apim.create_subscription("sub_9", "u1", "standard", "prod", "active")
    order: list[str] = []
    payments.calls = order
    apim.calls = order
    now = datetime(2026, 1, 1, tzinfo=UTC)
    payments.clock_time = 1_500  # the subscription's Stripe test clock stands at 1,500
    unsubscribe("sub_9", apim, payments, now, FakeFinalInvoices(order))  # type: ignore[arg-type]
    # Stripe is never cancelled here (that is the job's, after the lag); the cancel instant is Stripe's
    # present, not the wall clock's; the key stops last, once nothing can renew and the job is durable.
    assert order == ["stripe:end-access:sub_9:at=1500", "queue:final:sub_9:1000:2000:at=1500", "apim:cancelled"]
    # Again: already cancelled, nothing more happens.
    unsubscribe("sub_9", apim, payments, now, FakeFinalInvoices(order))  # type: ignore[arg-type]
    assert len(order) == 3


def test_unsubscribe_in_real_time_stamps_the_cancel_with_the_wall_clock() -> None:
    apim, payments = FakeApim(), FakePayments({})
    apim.create_subscription("sub_9", "u1", "standard", "prod", "active")
    order: list[str] = []
    payments.calls = order
    unsubscribe("sub_9", apim, payments, datetime.fromtimestamp(1_700, UTC), FakeFinalInvoices(order))  # type: ignore[arg-type]
    assert order == ["stripe:end-access:sub_9:at=1700", "queue:final:sub_9:1000:2000:at=1700"]


def test_a_subscription_stripe_ended_already_gets_no_final_invoice_job() -> None:
    apim, payments = FakeApim(), FakePayments({})
    apim.create_subscription("sub_9", "u1", "standard", "prod", "suspended")
    payments.ended_in_stripe = True
    order: list[str] = []
    payments.calls = order
    apim.calls = order
    unsubscribe("sub_9", apim, payments, datetime(2026, 1, 1, tzinfo=UTC), FakeFinalInvoices(order))  # type: ignore[arg-type]
    assert order == ["stripe:end-access:sub_9:at=1767225600", "apim:cancelled"]


def test_a_never_paid_subscription_is_cancelled_in_stripe_at_once() -> None:
    apim, payments = FakeApim(), FakePayments({})
    apim.create_subscription("sub_9", "u1", "standard", "prod", "submitted")  # no working key ever
    order: list[str] = []
    payments.calls = order
    apim.calls = order
    unsubscribe("sub_9", apim, payments, datetime(2026, 1, 1, tzinfo=UTC), FakeFinalInvoices(order))  # type: ignore[arg-type]
    assert order == ["stripe:cancel", "apim:cancelled"]


def test_a_pending_final_invoice_stops_a_new_paid_subscription_but_not_free() -> None:
    payments = FakePayments({"payg-usage": "price_u"})
    payments.pending = ["sub_old"]
    with pytest.raises(SubscribeError, match="final invoice") as raised:
        _subscribe("payg", FakeApim(), payments)
    assert raised.value.status == 402
    assert payments.checkouts == []
    assert isinstance(_subscribe("free", FakeApim(), payments), Subscribed)
    payments.pending = []  # made (and a draft with an amount due is an unpaid invoice from then on)
    assert isinstance(_subscribe("payg", FakeApim(), payments), GoToCheckout)

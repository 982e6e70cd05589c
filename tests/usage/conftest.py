"""Fixtures for the usage integration tests: the project's LocalStack and a catalog made through the SDKs.

`usage_stack` runs on LocalStack (the session's Azurite, both emulators, the app's settings in
os.environ). Stripe sends webhooks nowhere and nothing polls the queues: these tests write the
subscription links themselves, as the webhook area writes them, and drive the push in-process.
The catalog (Stripe products, prices, meters; APIM products) is created directly under the
stable names of billing.catalog_names, so these tests do not depend on the catalog sync.
The adapter tests use the single-emulator fixtures `stripe_emulator` and `apim_emulator`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests
import stripe
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement.models import ProductContract, SubscriptionCreateParameters, UserCreateParameters

from billing.adapters.storage import ensure_table, table
from billing.catalog_names import (
    CUSTOMER_META_APIM_USER,
    PRODUCT_METADATA_KEY,
    flat_price_lookup_key,
    meter_event_name,
    stripe_product_id,
    usage_price_lookup_key,
)
from billing.model_loader import load_models
from billing.records import SubscriptionLink
from billing.store.subscriptions import SubscriptionLinks
from billing.store.tables import SUBSCRIPTIONS_TABLE
from billing.usage.push import PushSummary, UsagePush
from devstack.azurite import Azurite
from devstack.stack import PROVIDER_API_ID, LocalStack, StackOptions
from emulators.apim.pytest_plugin import apim_emulator  # noqa: F401 - re-exported fixture
from emulators.stripe.pytest_plugin import stripe_emulator  # noqa: F401 - re-exported fixture
from tests.stack_view import StackView

MODELS = load_models()
PRODUCTS = ("developer", "payg", "standard")  # Freemium, Metered, TierWithOverage
HOUR = 3600
REPORT_LAG_MINUTES = "30"  # the app leaves 30 minutes for APIM's reports; the emulator reports at once


@dataclass
class UsageStack(StackView):
    stripe: stripe.StripeClient  # the test's own client, for acting as the consumer and checking
    apim: ApiManagementClient
    prices: dict[str, list[str]] = field(default_factory=dict)
    clock_now: dict[str, float] = field(default_factory=dict)  # the APIM emulator's injected time

    def subscribe(self, product: str, user: str) -> tuple[str, str, str]:
        """A paid subscription on its own test clock: (sid, customer id, test clock id)."""
        clock = self.stripe.v1.test_helpers.test_clocks.create(params={"frozen_time": int(self.now())})
        customer = self.stripe.v1.customers.create(
            params={
                "email": f"{user}@example.com",
                "metadata": {CUSTOMER_META_APIM_USER: user},
                "test_clock": clock.id,
            }
        )
        items: list[stripe.params.checkout.SessionCreateParamsLineItem] = [{"price": p} for p in self.prices[product]]
        for item in items:
            if item["price"] in self.prices.get(f"{product}:flat", []):
                item["quantity"] = 1
        session = self.stripe.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": customer.id,
                "line_items": items,
                "success_url": "http://127.0.0.1:9/done",
            }
        )
        page = requests.post(
            str(session.url),
            data={"cardNumber": "4242 4242 4242 4242", "cardExpiry": "12 / 34", "cardCvc": "123", "billingName": user},
            allow_redirects=False,
            timeout=10,
        )
        assert page.status_code == 303, page.text[:300]
        sid = self.stripe.v1.checkout.sessions.retrieve(session.id).subscription
        assert isinstance(sid, str)
        self.apim.user.create_or_update(
            *self.where, user, UserCreateParameters(email=f"{user}@example.com", first_name=user, last_name="Tester")
        )
        self.apim.subscription.create_or_update(
            *self.where,
            sid,
            SubscriptionCreateParameters(
                scope=f"/products/{product}", display_name=user, owner_id=f"/users/{user}", state="active"
            ),
        )
        self.write_link(sid, product, customer.id, user)
        return sid, customer.id, clock.id

    def write_link(self, sid: str, product: str, customer: str, user: str) -> SubscriptionLink:
        sub = self.stripe.v1.subscriptions.retrieve(sid)
        item = sub["items"]["data"][0]
        link = SubscriptionLink(
            apim_subscription_id=sid,
            apim_user_id=user,
            product_id=product,
            subscription_name=user,
            stripe_customer_id=customer,
            stripe_subscription_id=sid,
            stripe_usage_item_id=item["id"],
            stripe_status=sub.status,
            apim_state="active",
            current_period_start=int(item["current_period_start"]),
            current_period_end=int(item["current_period_end"]),
            stripe_state_at=int(time.time()),
        )
        SubscriptionLinks(ensure_table(SUBSCRIPTIONS_TABLE, self.env)).create_or_replace(link)
        return link

    def subscribe_direct(self, product: str, user: str, *, clock: str | None = None) -> tuple[str, str]:
        """A paid subscription made with `subscriptions.create` (no Checkout page): (sid, customer id).

        Cheaper than `subscribe` for tests that need many subscriptions; the APIM side is the
        caller's (e.g. `apim_emu.bulk_create_subscriptions`). Without `clock` the customer lives in
        real time, as in Stripe.
        """
        params: stripe.params.CustomerCreateParams = {
            "email": f"{user}@example.com",
            "metadata": {CUSTOMER_META_APIM_USER: user},
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
        if clock is not None:
            params["test_clock"] = clock
        customer = self.stripe.v1.customers.create(params=params)
        items: list[stripe.params.SubscriptionCreateParamsItem] = [{"price": p} for p in self.prices[product]]
        sub = self.stripe.v1.subscriptions.create(params={"customer": customer.id, "items": items})
        self.write_link(sub.id, product, customer.id, user)
        return sub.id, customer.id

    def now(self) -> float:
        return self.clock_now["t"]

    def at(self, clocks: list[str], when: int) -> None:
        """Move APIM's clock and every given Stripe test clock to `when` (both only go forward)."""
        self.clock_now["t"] = when
        for clock in clocks:
            self.stripe.v1.test_helpers.test_clocks.advance(clock, params={"frozen_time": when})

    def record(self, sid: str, calls: int, at: int, outcome: str = "success") -> None:
        """`calls` synthetic calls of `sid` at unix time `at`, as APIM's reports will count them."""
        self.apim_emu.record_usage(sid, calls, at=datetime.fromtimestamp(at, UTC), outcome=outcome)

    def start_pushes(self, sids: list[str], period_start: int) -> None:
        """The first push of the period, before any call: its window only adopts the subscriptions."""
        from billing.bootstrap import services  # noqa: PLC0415 - reads the settings set by the fixture

        self.push_all(services().new_usage_push(), sids, period_start + int(REPORT_LAG_MINUTES) * 60 + 60)

    def push_all(self, push: UsagePush, sids: list[str], as_of: int) -> PushSummary:
        """Plan and process every batch of these subscriptions' links (the CLI's in-process path)."""
        links = SubscriptionLinks(table(SUBSCRIPTIONS_TABLE, self.env))
        mine = [found[0] for sid in sids if (found := links.get(sid)) is not None]
        total = PushSummary()
        for batch in push.plan(as_of, links=mine).batches:
            summary, rest = push.process_batch(batch)
            assert rest is None
            total.add(summary)
        return total

    def renewal_invoice(self, sid: str, clock: str, period_end: int) -> Any:
        """Advance the subscription's test clock past the period end; the invoice of the ended period."""
        self.stripe.v1.test_helpers.test_clocks.advance(clock, params={"frozen_time": period_end + 2 * HOUR})
        invoices = self.stripe.v1.invoices.list(params={"subscription": sid, "limit": 10}).data
        renewal = [i for i in invoices if i.billing_reason == "subscription_cycle"]
        assert renewal, [i.billing_reason for i in invoices]
        return renewal[0]

    def period_of(self, sid: str) -> tuple[int, int]:
        """The subscription's current period [start, end) as Stripe has it."""
        item = self.stripe.v1.subscriptions.retrieve(sid)["items"]["data"][0]
        return int(item["current_period_start"]), int(item["current_period_end"])

    def call(self, sid: str, times: int, status: int = 200) -> None:
        """Real calls through the gateway with the subscription's key; `status` the backend answers."""
        key = self.apim.subscription.list_secrets(*self.where, sid).primary_key
        assert key is not None
        for _ in range(times):
            requests.get(
                f"{self.apim_emu.gateway_url}/echo/status/{status}",
                headers={"Ocp-Apim-Subscription-Key": key},
                timeout=10,
            )


def _catalog(client: stripe.StripeClient) -> dict[str, list[str]]:
    prices: dict[str, list[str]] = {}
    for pid in PRODUCTS:
        product = MODELS.product(pid)
        assert product.usage_price is not None
        client.v1.products.create(
            params={"id": stripe_product_id(pid), "name": product.display_name, "metadata": {PRODUCT_METADATA_KEY: pid}}
        )
        ids = []
        if product.flat_fee_minor:
            flat = client.v1.prices.create(
                params={
                    "product": stripe_product_id(pid),
                    "currency": "usd",
                    "unit_amount": product.flat_fee_minor,
                    "recurring": {"interval": "month", "usage_type": "licensed"},
                    "lookup_key": flat_price_lookup_key(pid),
                }
            )
            ids.append(flat.id)
            prices[f"{pid}:flat"] = [flat.id]
        meter = client.v1.billing.meters.create(
            params={
                "display_name": f"{pid} calls",
                "event_name": meter_event_name(pid),
                "default_aggregation": {"formula": "sum"},
            }
        )
        per_call = product.usage_price.minor_per_call(product.currency_exponent)
        decimal = Decimal(format(per_call.numerator / per_call.denominator, "f"))  # exact: 0.2, 0.15, 0.1 cents
        usage = client.v1.prices.create(
            params={
                "product": stripe_product_id(pid),
                "currency": "usd",
                "unit_amount_decimal": decimal,
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
                "lookup_key": usage_price_lookup_key(pid),
            }
        )
        ids.append(usage.id)
        prices[pid] = ids
    return prices


@pytest.fixture
def usage_stack(azurite: Azurite) -> Iterator[UsageStack]:
    options = StackOptions(use_func=False, azurite=azurite, stripe_webhooks=False, run_queue_workers=False)
    with LocalStack(options) as local, pytest.MonkeyPatch.context() as patch:
        assert local.stripe is not None
        assert local.apim is not None
        # Only the app's setting: the emulator's reports stay immediate (the stack's report_lag_seconds
        # would delay both), so a closing report sees calls minutes before a cancel.
        local.env["USAGE_REPORT_LAG_MINUTES"] = REPORT_LAG_MINUTES
        patch.setenv("USAGE_REPORT_LAG_MINUTES", REPORT_LAG_MINUTES)  # undone before the stack restores the rest
        clock_now = {"t": time.time()}
        local.apim.set_clock(lambda: datetime.fromtimestamp(clock_now["t"], UTC))
        apim = local.apim.management_client(retry_total=0)
        for pid in PRODUCTS:
            apim.product.create_or_update(
                local.apim.resource_group,
                local.apim.service_name,
                pid,
                ProductContract(
                    display_name=pid,
                    subscription_required=True,
                    approval_required=False,
                    subscriptions_limit=1,
                    state="published",
                ),
            )
            apim.product_api.create_or_update(local.apim.resource_group, local.apim.service_name, pid, PROVIDER_API_ID)
        client = local.stripe.client()
        yield UsageStack(local, client, apim, _catalog(client), clock_now)
        apim.close()

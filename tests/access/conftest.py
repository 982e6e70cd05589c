"""Fixtures for the access tests: a fresh local stack per test (the project's LocalStack), a catalog.

The stack runs on the session's Azurite; its Stripe emulator delivers real signed webhooks to the
development host running `function_app.app`. Nothing polls the queues in the background: a test
that needs the queued work runs it. The catalog (one flat + metered product, one flat-only product)
is made directly through the SDKs under the catalog's stable names, so these tests do not depend on
the catalog sync.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import requests
import stripe
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement.models import ProductContract, UserCreateParameters

from billing import bootstrap
from billing.catalog_names import (
    CUSTOMER_META_APIM_USER,
    PRODUCT_METADATA_KEY,
    SUB_META_APIM_USER,
    SUB_META_NAME,
    SUB_META_PRODUCT,
    flat_price_lookup_key,
    meter_event_name,
    stripe_product_id,
    usage_price_lookup_key,
)
from devhost.server import DevHost
from devstack.azurite import Azurite
from devstack.stack import PROVIDER_API_ID, LocalStack, StackOptions
from emulators.apim.server import ApimEmulator
from tests.stack_view import StackView

WEBHOOK_SECRET = "whsec_access_tests_" + "0" * 16
USER_ID = "ada"


def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme, computed here independently: v1 = HMAC-SHA256(secret, "<t>.<payload>")."""
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


@dataclass
class Catalog:
    flat_price: dict[str, str] = field(default_factory=dict)  # product id -> price id
    usage_price: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack(StackView):
    stripe: stripe.StripeClient  # the test's own client, for acting as the consumer and checking
    apim: ApiManagementClient
    catalog: Catalog
    apim_writes: list[tuple[str, str]]  # (method, path) of every APIM subscription write

    @property
    def host(self) -> DevHost:
        return self.local.dev_host

    @property
    def endpoint_id(self) -> str:
        return self.local.webhook_endpoint_id

    def pause_deliveries(self) -> None:
        """Stripe stops sending events to the app (they are still recorded, for `stripe_events`)."""
        self.stripe.v1.webhook_endpoints.update(self.endpoint_id, params={"disabled": True})

    def stripe_events(self, since: int = 0) -> list[dict[str, Any]]:
        """Every event Stripe recorded (created >= since), oldest first, as delivered JSON."""
        found = self.stripe.v1.events.list(params={"limit": 100, "created": {"gte": since}})
        return [e.to_dict(for_json=True) for e in reversed(list(found.auto_paging_iter()))]  # Stripe lists newest first

    @property
    def webhook_url(self) -> str:
        return f"{self.host.base_url}/api/webhooks/stripe"

    def post_event(
        self,
        event: dict[str, Any] | bytes,
        secret: str = WEBHOOK_SECRET,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> requests.Response:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        headers = {"Content-Type": "application/json"}
        if signature is None:
            headers["Stripe-Signature"] = sign(body, secret, timestamp)
        elif signature:
            headers["Stripe-Signature"] = signature
        return requests.post(self.webhook_url, data=body, headers=headers, timeout=30)

    def apim_state(self, sid: str) -> str | None:
        try:
            return str(self.apim.subscription.get(*self.where, sid).state)
        except ResourceNotFoundError:
            return None

    def gateway_status(self, sid: str) -> int:
        key = self.apim.subscription.list_secrets(*self.where, sid).primary_key
        assert key is not None
        return requests.get(
            f"{self.apim_emu.gateway_url}/echo/hello", headers={"Ocp-Apim-Subscription-Key": key}, timeout=10
        ).status_code

    def settle(self) -> None:
        self.stripe_emu.wait_for_webhooks_idle(timeout=30)

    def new_customer(self, user_id: str = USER_ID, clock: bool = True) -> tuple[str, str | None]:
        clock_id = None
        params: stripe.params.CustomerCreateParams = {
            "email": f"{user_id}@example.com",
            "metadata": {CUSTOMER_META_APIM_USER: user_id},
        }
        if clock:
            clock_id = self.stripe.v1.test_helpers.test_clocks.create(params={"frozen_time": int(time.time())}).id
            params["test_clock"] = clock_id
        return self.stripe.v1.customers.create(params=params).id, clock_id

    def checkout(
        self,
        customer_id: str,
        product: str,
        *,
        user_id: str = USER_ID,
        name: str = "my key",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Checkout in subscription mode, paid on the hosted page with a test card; the subscription id."""
        items: list[stripe.params.checkout.SessionCreateParamsLineItem] = [
            {"price": self.catalog.flat_price[product], "quantity": 1}
        ]
        if product in self.catalog.usage_price:
            items.append({"price": self.catalog.usage_price[product]})
        meta = {SUB_META_APIM_USER: user_id, SUB_META_PRODUCT: product, SUB_META_NAME: name}
        session = self.stripe.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": customer_id,
                "line_items": items,
                "subscription_data": {"metadata": meta if metadata is None else metadata},
                "success_url": "http://127.0.0.1:9/done?session={CHECKOUT_SESSION_ID}",
            }
        )
        page = requests.post(
            str(session.url),
            data={"cardNumber": "4242 4242 4242 4242", "cardExpiry": "12 / 34", "cardCvc": "123", "billingName": "Ada"},
            allow_redirects=False,
            timeout=10,
        )
        assert page.status_code == 303, page.text[:500]
        sub_id = self.stripe.v1.checkout.sessions.retrieve(session.id).subscription
        assert isinstance(sub_id, str)
        return sub_id


def _make_catalog(client: stripe.StripeClient) -> Catalog:
    catalog = Catalog()
    # Standard: $89.95 flat monthly, then $0.10 per 100 calls on its own meter (revenue-model.md).
    # Basic: $14.95 flat monthly, no usage price.
    for pid, flat, usage_decimal in (("standard", 8995, Decimal("0.1")), ("basic", 1495, None)):
        client.v1.products.create(
            params={"id": stripe_product_id(pid), "name": pid.title(), "metadata": {PRODUCT_METADATA_KEY: pid}}
        )
        price = client.v1.prices.create(
            params={
                "product": stripe_product_id(pid),
                "currency": "usd",
                "unit_amount": flat,
                "recurring": {"interval": "month", "usage_type": "licensed"},
                "lookup_key": flat_price_lookup_key(pid),
            }
        )
        catalog.flat_price[pid] = price.id
        if usage_decimal:
            meter = client.v1.billing.meters.create(
                params={
                    "display_name": f"{pid} calls",
                    "event_name": meter_event_name(pid),
                    "default_aggregation": {"formula": "sum"},
                }
            )
            usage = client.v1.prices.create(
                params={
                    "product": stripe_product_id(pid),
                    "currency": "usd",
                    "unit_amount_decimal": usage_decimal,
                    "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
                    "lookup_key": usage_price_lookup_key(pid),
                }
            )
            catalog.usage_price[pid] = usage.id
    return catalog


def _make_apim(client: ApiManagementClient, rg: str, service: str, users: tuple[str, ...]) -> None:
    for pid in ("standard", "basic"):
        client.product.create_or_update(
            rg,
            service,
            pid,
            ProductContract(
                display_name=pid.title(),
                subscription_required=True,
                approval_required=False,
                subscriptions_limit=1,
                state="published",
            ),
        )
        client.product_api.create_or_update(rg, service, pid, PROVIDER_API_ID)  # what its keys may call
    for uid in users:
        client.user.create_or_update(
            rg,
            service,
            uid,
            UserCreateParameters(
                email=f"{uid}@example.com",
                first_name=uid.title(),
                last_name="Tester",
            ),
        )


def _count_apim_writes(emu: ApimEmulator) -> list[tuple[str, str]]:
    """Record APIM subscription writes as the emulator's management API receives them (our own emulator)."""
    writes: list[tuple[str, str]] = []
    inner = emu.management.handle

    def counting(req: Any) -> Any:
        if req.method in ("PUT", "PATCH", "DELETE") and "/subscriptions/" in req.path.split("/service/")[-1]:
            writes.append((req.method, req.path))
        return inner(req)

    emu.management.handle = counting  # type: ignore[method-assign]
    return writes


@pytest.fixture
def stack(azurite: Azurite) -> Iterator[Stack]:
    options = StackOptions(use_func=False, azurite=azurite, webhook_secret=WEBHOOK_SECRET, run_queue_workers=False)
    with LocalStack(options) as local:
        bootstrap.forget()  # the app's clients are cached per settings
        assert local.stripe is not None
        assert local.apim is not None
        apim = local.apim.management_client(retry_total=0)
        _make_apim(apim, local.apim.resource_group, local.apim.service_name, (USER_ID, "grace"))
        client = local.stripe.client()
        catalog = _make_catalog(client)
        writes = _count_apim_writes(local.apim)
        yield Stack(local, client, apim, catalog, writes)
        bootstrap.forget()
        apim.close()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"

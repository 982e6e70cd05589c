"""Products real consumers can see and call, and quotas that follow the billing month (issue 19).

On the local stack with the catalog applied by the app: the developer portal shows a product to the
groups the models file names, a key reaches only its product's APIs, and a Basic consumer's quota
starts again exactly when Stripe starts the next billing period (a 31-day and a 28-day month).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from azure.mgmt.apimanagement.models import ApiCreateOrUpdateParameter, QuotaCounterValueUpdateContract

from billing.model_loader import load_models
from devstack.azurite import Azurite
from devstack.stack import PROVIDER_API_ID, LocalStack, StackOptions

pytestmark = pytest.mark.storage


@pytest.fixture(scope="module")
def stack(azurite: Azurite) -> Iterator[LocalStack]:
    options = StackOptions(
        use_func=False, azurite=azurite, apply_catalog=True, stripe_webhooks=True, run_queue_workers=False
    )
    with LocalStack(options) as running:
        yield running


def shown_products(html: str) -> set[str]:
    return set(re.findall(r'data-product-id="([^"]+)"', html))


def call(stack: LocalStack, key: str, path: str = f"{PROVIDER_API_ID}/hello") -> int:
    url = f"{stack.apim_emulator.gateway_url}/{path}"
    return requests.get(url, headers={"Ocp-Apim-Subscription-Key": key}, timeout=30).status_code


def test_the_catalog_makes_each_product_visible_to_its_groups(stack: LocalStack) -> None:
    apim = stack.apim_emulator
    client, rg, svc = apim.management_client(), apim.resource_group, apim.service_name
    for product in load_models().products:
        groups = {g.name for g in client.product_group.list_by_product(rg, svc, product.id)}
        assert groups >= set(product.groups), product.id
        assert {a.name for a in client.product_api.list_by_product(rg, svc, product.id)} == set(product.apis)
    every = {p.id for p in load_models().products}
    assert shown_products(requests.get(apim.portal_url + "/", timeout=30).text) == every  # to guests
    # Taken away from guests (the provider's own change): visitors no longer see it, consumers do.
    client.product_group.delete(rg, svc, "pro", "guests")
    try:
        assert "pro" not in shown_products(requests.get(apim.portal_url + "/", timeout=30).text)
        consumer = stack.consumer()
        consumer.sign_up()
        assert "pro" in shown_products(consumer.portal_home())
    finally:
        client.product_group.create_or_update(rg, svc, "pro", "guests")


def test_a_key_reaches_only_its_products_apis(stack: LocalStack) -> None:
    apim = stack.apim_emulator
    client, rg, svc = apim.management_client(), apim.resource_group, apim.service_name
    # Another API of the provider's, in no product of the catalog.
    internal = ApiCreateOrUpdateParameter(
        display_name="Internal", path="internal", protocols=["https"], service_url="https://internal.example"
    )
    client.api.begin_create_or_update(rg, svc, "internal", internal).result()
    consumer = stack.consumer()
    consumer.sign_up()
    assert consumer.subscribe("free", "key").status_code == 200
    key = consumer.subscriptions()[0].primary_key
    assert call(stack, key) == 200
    assert call(stack, key, "internal/anything") == 401
    assert call(stack, key, "nowhere/at/all") == 404


def _advance(stack: LocalStack, clock_id: str, to: datetime) -> None:
    stripe = stack.stripe_emulator.client().v1
    stripe.test_helpers.test_clocks.advance(clock_id, params={"frozen_time": int(to.timestamp())})
    deadline = time.monotonic() + 60
    while stripe.test_helpers.test_clocks.retrieve(clock_id).status != "ready":
        assert time.monotonic() < deadline, "the test clock did not finish advancing"
        time.sleep(0.05)
    stack.settle()


def test_a_basic_quota_starts_again_with_each_billing_month(stack: LocalStack) -> None:
    apim = stack.apim_emulator
    client, rg, svc = apim.management_client(), apim.resource_group, apim.service_name
    consumer = stack.consumer()
    consumer.sign_up()
    start = datetime(2027, 1, 1, tzinfo=UTC)  # January has 31 days, February 28
    clock_id, _ = stack.customer_on_test_clock(consumer.user_id, consumer.email, int(start.timestamp()))
    consumer.subscribe_and_pay("basic", "monthly")
    stack.settle()
    key = consumer.subscriptions()[0]
    assert call(stack, key.primary_key) == 200

    def use_up_the_quota() -> None:
        # 50,000 calls as the gateway would count them (through APIM's quotas API, not 50,000 requests).
        client.quota_by_counter_keys.update(
            rg, svc, key.subscription_id, QuotaCounterValueUpdateContract(calls_count=50_000, kb_transferred=0)
        )
        assert call(stack, key.primary_key) == 403

    use_up_the_quota()
    for month_end in (datetime(2027, 2, 1, tzinfo=UTC), datetime(2027, 3, 1, tzinfo=UTC)):
        _advance(stack, clock_id, _hour_before(month_end))
        assert call(stack, key.primary_key) == 403, f"the quota renewed before {month_end:%d %B}"
        _advance(stack, clock_id, month_end.replace(hour=3))  # Stripe renewed (and the invoice was paid)
        assert call(stack, key.primary_key) == 200, f"the quota did not renew on {month_end:%d %B}"
        use_up_the_quota()


def _hour_before(moment: datetime) -> datetime:
    return datetime.fromtimestamp(moment.timestamp() - 3600, UTC)

"""Search lags writes, as Stripe documents (docs.stripe.com/search, "Data freshness"):

"Don't use search for read-after-write flows (for example, searching immediately after a charge
is made) because the data won't be immediately available to search. Under normal operating
conditions, data is searchable in under 1 minute." The emulator's default lag is 60 seconds of its
own clock (`advance_wall_clock` moves it); the list endpoints are immediate.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import requests

from emulators.stripe.__main__ import parse_args
from emulators.stripe.server import StripeEmulator
from tests.emulators.stripe.test_faults_and_cli import ROOT


def _searches(client: Any, customer: Any, product: Any, price: Any) -> dict[str, list[str]]:
    return {
        "customers": [c.id for c in client.v1.customers.search(params={"query": "email:'lag@example.com'"}).data],
        "subscriptions": [
            s.id for s in client.v1.subscriptions.search(params={"query": f"customer:'{customer.id}'"}).data
        ],
        "invoices": [i.id for i in client.v1.invoices.search(params={"query": f"customer:'{customer.id}'"}).data],
        "products": [p.id for p in client.v1.products.search(params={"query": "name:'Lagging'"}).data],
        "prices": [p.id for p in client.v1.prices.search(params={"query": f"product:'{product.id}'"}).data],
    }


def test_new_objects_are_searchable_a_minute_later(stripe_emulator: StripeEmulator, client: Any) -> None:
    assert stripe_emulator.config.search_lag_seconds == 60  # Stripe's "under 1 minute"
    customer = client.v1.customers.create(
        params={
            "email": "lag@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    product = client.v1.products.create(params={"name": "Lagging"})
    price = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 500, "recurring": {"interval": "month"}}
    )
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    empty: dict[str, list[str]] = {"customers": [], "subscriptions": [], "invoices": [], "products": [], "prices": []}
    assert _searches(client, customer, product, price) == empty
    assert [c.id for c in client.v1.customers.list().data] == [customer.id]  # lists are immediate
    stripe_emulator.advance_wall_clock(59)
    assert _searches(client, customer, product, price) == empty
    stripe_emulator.advance_wall_clock(1)
    assert _searches(client, customer, product, price) == {
        "customers": [customer.id],
        "subscriptions": [sub.id],
        "invoices": [sub.latest_invoice],
        "products": [product.id],
        "prices": [price.id],
    }


def test_an_update_is_found_by_its_old_values_until_the_lag_passes(
    stripe_emulator: StripeEmulator, client: Any
) -> None:
    customer = client.v1.customers.create(params={"metadata": {"apim_user_id": "u-old"}})
    stripe_emulator.advance_wall_clock(60)
    client.v1.customers.update(customer.id, params={"metadata": {"apim_user_id": "u-new"}})

    def found(user: str) -> list[Any]:
        return list(client.v1.customers.search(params={"query": f"metadata['apim_user_id']:'{user}'"}).data)

    assert found("u-new") == []
    (stale,) = found("u-old")
    assert stale.metadata["apim_user_id"] == "u-new"  # matched by the index, returned as it is now (guess)
    stripe_emulator.advance_wall_clock(60)
    assert ([c.id for c in found("u-new")], found("u-old")) == ([customer.id], [])
    price = client.v1.prices.create(params={"currency": "usd", "unit_amount": 1, "product_data": {"name": "P"}})
    stripe_emulator.advance_wall_clock(60)
    client.v1.prices.update(price.id, params={"active": False})  # no event, still a write search lags
    assert [p.id for p in client.v1.prices.search(params={"query": "active:'true'"}).data] == [price.id]


def test_the_lag_is_a_constructor_option_a_control_setting_and_a_cli_flag() -> None:
    with StripeEmulator(search_lag_seconds=0) as emulator:
        client = emulator.client()
        made = client.v1.customers.create(params={"email": "now@example.com"})
        assert [c.id for c in client.v1.customers.search(params={"query": "email:'now@example.com'"}).data] == [made.id]
        settings = f"{emulator.base_url}/_emulator/settings"
        assert requests.post(settings, json={"search_lag_seconds": 5}, timeout=10).json()["search_lag_seconds"] == 5
        client.v1.customers.create(params={"email": "later@example.com"})
        assert client.v1.customers.search(params={"query": "email:'later@example.com'"}).data == []
        assert (
            requests.post(f"{emulator.base_url}/_emulator/clock/advance", json={"seconds": 5}, timeout=10).status_code
            == 200
        )
        assert len(client.v1.customers.search(params={"query": "email:'later@example.com'"}).data) == 1
        assert requests.post(settings, json={"search_lag": 1}, timeout=10).status_code == 400
    assert parse_args(["--port", "0", "--search-lag-seconds", "0"]).search_lag_seconds == 0
    bad = subprocess.run(
        [sys.executable, "-m", "emulators.stripe", "--port", "0", "--search-lag-seconds", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert bad.returncode == 2
    assert "--search-lag-seconds" in bad.stderr

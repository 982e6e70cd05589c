"""Stripe's wire protocol: form decoding, auth, errors, idempotency, pagination, expand, search."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import requests
import stripe

from emulators.stripe.server import StripeEmulator
from emulators.stripe.wire import parse_form


def test_nested_form_keys_decode_to_dicts_and_lists() -> None:
    body = (
        "line_items[0][price]=p1&line_items[0][quantity]=2&line_items[1][price]=p2"
        "&metadata[a]=x&expand[]=one&expand[]=two&flag=true"
    )
    assert parse_form(body) == {
        "line_items": [{"price": "p1", "quantity": "2"}, {"price": "p2"}],
        "metadata": {"a": "x"},
        "expand": ["one", "two"],
        "flag": "true",
    }


def test_unknown_parameters_are_refused_by_name(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.create(params={"email": "a@example.com", "nickname": "x"})
    assert info.value.param == "nickname"
    assert info.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as nested:
        client.v1.checkout.sessions.create(
            params={"mode": "subscription", "subscription_data": {"metadata": {}, "colour": "red"}}
        )
    assert nested.value.param == "subscription_data[colour]"


def test_bad_values_name_the_parameter_and_the_rule(client: Any) -> None:
    product = client.v1.products.create(params={"name": "P"})
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.prices.create(params={"product": product.id, "currency": "usd", "unit_amount": "lots"})
    assert info.value.param == "unit_amount"
    assert "whole number" in str(info.value)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.prices.create(params={"currency": "usd", "unit_amount": 1})
    assert missing.value.param == "product"
    with pytest.raises(stripe.InvalidRequestError) as absent:
        client.v1.customers.retrieve("cus_missing")
    assert (absent.value.http_status, absent.value.code) == (404, "resource_missing")


def test_api_key_is_required_and_wrong_keys_are_redacted(stripe_emulator: StripeEmulator) -> None:
    url = f"{stripe_emulator.base_url}/v1/customers"
    assert requests.get(url, timeout=10).status_code == 401
    wrong = requests.get(url, headers={"Authorization": "Bearer sk_test_wrong_secret_value"}, timeout=10)
    assert wrong.status_code == 401
    assert "sk_test_wrong_secret_value" not in wrong.text
    basic = base64.b64encode(f"{stripe_emulator.api_key}:".encode()).decode()
    assert requests.get(url, headers={"Authorization": f"Basic {basic}"}, timeout=10).status_code == 200
    bad_version = requests.get(
        url, headers={"Authorization": f"Bearer {stripe_emulator.api_key}", "Stripe-Version": "yesterday"}, timeout=10
    )
    assert bad_version.status_code == 400


def test_idempotency_key_replays_the_first_answer(client: Any) -> None:
    first = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k1"})
    again = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k1"})
    assert again.id == first.id
    assert len(client.v1.customers.list().data) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"email": "b@example.com"}, options={"idempotency_key": "k1"})


def test_pagination_walks_every_object_once(client: Any) -> None:
    created = [client.v1.products.create(params={"name": f"P{n}"}).id for n in range(7)]
    first = client.v1.products.list(params={"limit": 3})
    assert first.has_more is True
    assert [p.id for p in first.data] == created[::-1][:3]
    seen = [p.id for p in client.v1.products.list(params={"limit": 3}).auto_paging_iter()]
    assert seen == created[::-1]
    last = client.v1.products.list(params={"limit": 3, "starting_after": created[1]})
    assert ([p.id for p in last.data], last.has_more) == ([created[0]], False)


def test_expand_replaces_ids_with_objects(client: Any) -> None:
    product = client.v1.products.create(params={"name": "P"})
    price = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 100, "recurring": {"interval": "month"}}
    )
    assert isinstance(client.v1.prices.retrieve(price.id).product, str)
    expanded = client.v1.prices.retrieve(price.id, params={"expand": ["product"]})
    assert expanded.product.name == "P"
    listed = client.v1.prices.list(params={"expand": ["data.product"]})
    assert listed.data[0].product.id == product.id
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        client.v1.prices.retrieve(price.id, params={"expand": ["currency"]})


def test_customer_search_by_metadata_and_email(stripe_emulator: StripeEmulator, client: Any) -> None:
    wanted = client.v1.customers.create(params={"email": "x@example.com", "metadata": {"apim_user_id": "u-1"}})
    client.v1.customers.create(params={"email": "x@example.com", "metadata": {"apim_user_id": "u-2"}})
    stripe_emulator.advance_wall_clock(60)  # search sees writes a minute later (see test_search_lag.py)
    found = client.v1.customers.search(params={"query": "metadata['apim_user_id']:'u-1' AND email:'x@example.com'"})
    assert [c.id for c in found.data] == [wanted.id]
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.search(params={"query": "colour:'red'"})
    assert info.value.param == "query"


def test_lookup_keys_are_unique_unless_transferred(client: Any) -> None:
    product = client.v1.products.create(params={"name": "P"})
    base = {
        "product": product.id,
        "currency": "usd",
        "unit_amount": 100,
        "recurring": {"interval": "month"},
        "lookup_key": "basic_monthly",
    }
    old = client.v1.prices.create(params=base)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create(params=base)
    new = client.v1.prices.create(params={**base, "transfer_lookup_key": True})
    found = client.v1.prices.list(params={"lookup_keys": ["basic_monthly"]}).data
    assert [p.id for p in found] == [new.id]
    archived = client.v1.prices.update(old.id, params={"active": False})
    assert archived.active is False


def test_idempotency_keys_expire_after_24_hours(stripe_emulator: StripeEmulator, client: Any) -> None:
    """ "You can remove keys from the system automatically after they're at least 24 hours old. We
    generate a new request if a key is reused after the original is pruned." (the emulator's clock)"""
    first = client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "day"})
    stripe_emulator.advance_wall_clock(24 * 3600 - 1)
    assert (
        client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "day"}).id == first.id
    )
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"email": "b@example.com"}, options={"idempotency_key": "day"})
    stripe_emulator.advance_wall_clock(1)
    second = client.v1.customers.create(params={"email": "b@example.com"}, options={"idempotency_key": "day"})
    assert second.id != first.id
    assert second.email == "b@example.com"

"""`StripeEmulator.bulk_create_customers`: customers seeded without HTTP are those `customers.create` makes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from emulators.stripe.server import StripeEmulator

# Fields that differ between any two customers, whoever made them.
PER_CUSTOMER = {"id", "email", "metadata", "created", "invoice_prefix"}


def test_bulk_customers_are_retrieved_and_searched_like_api_customers(
    stripe_emulator: StripeEmulator, client: Any
) -> None:
    made = client.v1.customers.create(
        params={"email": "api@example.com", "metadata": {"apim_user": "u-api", "tier": "gold"}}
    )
    specs = [("bulk0@example.com", {"apim_user": "u-0", "tier": "gold"}), ("bulk1@example.com", {"apim_user": "u-1"})]
    ids = stripe_emulator.bulk_create_customers(iter(specs))  # any iterable, e.g. a generator
    assert len(ids) == 2
    assert len(set(ids)) == 2
    api = made.to_dict()
    for cid, (email, metadata) in zip(ids, specs, strict=True):
        got = client.v1.customers.retrieve(cid).to_dict()
        # Stripe's customer ids: "cus_" and an alphanumeric suffix, here as long as the API's own.
        assert re.fullmatch(r"cus_[A-Za-z0-9]+", cid)
        assert len(cid) == len(made.id)
        assert (got["id"], got["email"], got["metadata"]) == (cid, email, metadata)
        assert got.keys() == api.keys()
        assert {k: v for k, v in got.items() if k not in PER_CUSTOMER} == {
            k: v for k, v in api.items() if k not in PER_CUSTOMER
        }
    # Search lags writes by a minute, for bulk customers as for API ones (docs.stripe.com/search).
    assert client.v1.customers.search(params={"query": "metadata['tier']:'gold'"}).data == []
    stripe_emulator.advance_wall_clock(60)
    gold = client.v1.customers.search(params={"query": "metadata['tier']:'gold'"}).data
    assert {c.id for c in gold} == {made.id, ids[0]}
    (one,) = client.v1.customers.search(params={"query": "metadata['apim_user']:'u-1'"}).data
    assert one.id == ids[1]
    (by_email,) = client.v1.customers.search(params={"query": "email:'bulk0@example.com'"}).data
    assert by_email.id == ids[0]
    created = client.v1.events.list(params={"type": "customer.created", "limit": 10}).data
    assert {e.data.object.id for e in created} == {made.id, *ids}  # the same event as customers.create


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (("x@example.com", {"k": 5}), "metadata[k]"),
        (("x@example.com", "k=v"), "metadata"),
        ("x@example.com", "(email, metadata dict) pair"),
    ],
)
def test_a_bad_spec_is_named_and_nothing_is_made(
    stripe_emulator: StripeEmulator, client: Any, bad: Any, named: str
) -> None:
    with pytest.raises(ValueError, match=r"specs\[1\]") as err:
        stripe_emulator.bulk_create_customers([("ok@example.com", {}), bad])
    assert named in str(err.value)
    assert client.v1.customers.list(params={"limit": 10}).data == []

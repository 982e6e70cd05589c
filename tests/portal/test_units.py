"""Pure parts of the portal: delegation signatures, return URLs, tokens, prices (accounts: test_account_rules)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from decimal import Decimal

import pytest

from billing.model_loader import load_models
from billing.portal import delegation, offers
from billing.portal.tokens import Signer, TokenError, parse_session_keys

KEY = b"\x01\x02 a delegation key of some length \xff"
KEY_B64 = base64.b64encode(KEY).decode()


def reference_sig(salt: str, *values: str) -> str:
    # Written from Microsoft's documentation, independently of billing.portal.delegation.
    return base64.b64encode(hmac.new(KEY, (salt + "\n" + "\n".join(values)).encode(), hashlib.sha512).digest()).decode()


CASES = [
    ("SignIn", {"returnUrl": "/products?x=1"}),
    ("SignUp", {"returnUrl": "/"}),
    ("Subscribe", {"productId": "standard", "userId": "u1"}),
    ("Unsubscribe", {"subscriptionId": "sub_123"}),
    ("Renew", {"subscriptionId": "sub_123"}),
    ("ChangePassword", {"userId": "u1"}),
    ("ChangeProfile", {"userId": "u1"}),
    ("CloseAccount", {"userId": "u1"}),
    ("SignOut", {"userId": "u1"}),
]


@pytest.mark.parametrize(("operation", "fields"), CASES)
def test_genuine_requests_verify(operation: str, fields: dict[str, str]) -> None:
    sig = reference_sig("salty", *fields.values())
    request = delegation.verify(
        delegation.decode_key(KEY_B64), {"operation": operation, **fields, "salt": "salty", "sig": sig}
    )
    assert request.operation == operation
    assert dict(request.fields) == fields


@pytest.mark.parametrize(("operation", "fields"), CASES)
def test_any_change_breaks_the_signature(operation: str, fields: dict[str, str]) -> None:
    sig = reference_sig("salty", *fields.values())
    query = {"operation": operation, **fields, "salt": "salty", "sig": sig}
    for name in [*fields, "salt"]:
        with pytest.raises(delegation.DelegationError) as raised:
            delegation.verify(KEY, {**query, name: query[name] + "1"})
        assert raised.value.status == 401
    # An operation signing other fields does not accept this signature. (APIM does not sign the
    # operation itself, so operations with the same fields, e.g. Renew and Unsubscribe, share
    # signatures: the app therefore never acts on a GET, it shows a form to confirm.)
    other = next(op for op, names in delegation.SIGNED_FIELDS.items() if names != tuple(fields))
    with pytest.raises(delegation.DelegationError):
        delegation.verify(
            KEY, {**query, "operation": other, "subscriptionId": "sub_123", "productId": "p", "userId": "u1"}
        )


def test_field_order_matters_for_subscribe() -> None:
    swapped = reference_sig("s", "u1", "standard")
    with pytest.raises(delegation.DelegationError):
        delegation.verify(
            KEY, {"operation": "Subscribe", "productId": "standard", "userId": "u1", "salt": "s", "sig": swapped}
        )


def test_a_key_that_is_not_base64_is_named() -> None:
    with pytest.raises(ValueError, match="APIM_DELEGATION_VALIDATION_KEY is not base64"):
        delegation.decode_key("not base64!")


@pytest.mark.parametrize("url", ["/", "/products", "/products/x?a=b#c", "/a//b", "/search?q=a%20b"])
def test_relative_return_urls(url: str) -> None:
    assert delegation.is_relative_return_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "products",
        "//evil",
        "/\\evil",
        "https://evil/",
        "/%2f%2Fevil",
        "/%5Cevil",
        "/a\nb",
        "javascript:x",
        "/%09/evil.com",
        "/%0a/evil.com",
        "/%0D/evil",
        "/%7f/evil",
    ],
)
def test_other_return_urls(url: str) -> None:
    assert not delegation.is_relative_return_url(url)


def test_product_id_from_a_resource_id() -> None:
    assert delegation.product_id_from("/subscriptions/x/resourceGroups/r/providers/M/service/s/products/pro") == "pro"
    assert delegation.product_id_from("free") == "free"


def test_tokens_round_trip_and_expire() -> None:
    signer = Signer([KEY], "csrf")
    token = signer.sign({"n": "abc"}, now=1000, ttl_seconds=60)
    assert signer.verify(token, now=1059)["n"] == "abc"
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, now=1060)


def test_tokens_are_bound_to_their_purpose_and_key() -> None:
    token = Signer([KEY], "csrf").sign({"n": "abc"}, now=0, ttl_seconds=60)
    for other in (Signer([KEY], "session"), Signer([b"another key"], "csrf")):
        with pytest.raises(TokenError):
            other.verify(token, now=1)
    with pytest.raises(TokenError):
        Signer([KEY], "csrf").verify(token.replace(".", "x."), now=1)
    for garbage in ("garbage", "é.abc", "\u00e9abc.def"):
        with pytest.raises(TokenError):
            Signer([KEY], "csrf").verify(garbage, now=1)


def test_a_rotation_keeps_tokens_of_the_old_key_until_it_is_dropped() -> None:
    old, new = b"o" * 32, b"n" * 32
    before = Signer([old], "session").sign({"n": "a"}, now=0, ttl_seconds=60)
    rotating = Signer([new, old], "session")
    assert rotating.verify(before, now=1)["n"] == "a"  # signed before the rotation: still accepted
    after = rotating.sign({"n": "b"}, now=1, ttl_seconds=60)
    assert Signer([new], "session").verify(after, now=2)["n"] == "b"  # new tokens use the new key
    with pytest.raises(TokenError, match="signature"):
        Signer([old], "session").verify(after, now=2)
    with pytest.raises(TokenError, match="signature"):
        Signer([new], "session").verify(before, now=2)  # the old key dropped: its tokens end


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("", "empty"),
        ("bm90IGJhc2U2NA==", "key 1 has 80 bits"),
        ("%%%", "key 1 is not base64"),
        (",".join([base64.b64encode(b"k" * 32).decode()] * 2), "same key twice"),
        (",".join(base64.b64encode(bytes([i]) * 32).decode() for i in range(4)), "at most 3"),
    ],
)
def test_session_keys_setting_names_what_is_wrong(value: str, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        parse_session_keys(value)


def test_session_keys_setting_is_read_newest_first() -> None:
    new, old = b"n" * 32, b"o" * 48
    text = f" {base64.b64encode(new).decode()} , {base64.b64encode(old).decode()}"
    assert parse_session_keys(text) == (new, old)


def test_price_descriptions_follow_the_model() -> None:
    models = load_models()
    standard = offers.describe(models.product("standard"))
    assert standard.headline == "USD 89.95 a month"
    assert "Includes 100,000 calls each month." in standard.details
    assert "Then USD 0.10 per 100 calls." in standard.details
    # 150,000 calls by hand: 89.95 + 50,000 / 100 x 0.10 = 139.95.
    assert standard.example == "Example: 150,000 calls in a month cost USD 139.95."
    free = offers.describe(models.product("free"))
    assert free.headline == "Free: no payment method needed"
    assert free.example is None
    payg = models.product("payg")
    assert offers.describe(payg).headline == "No monthly fee: pay only for what you use"
    assert payg.usage_price is not None
    assert payg.usage_price.amount == Decimal("0.15")

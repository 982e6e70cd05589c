"""Pure parts of the portal: delegation signatures, return URLs, tokens, passwords, prices, throttling."""

from __future__ import annotations

import base64
import hashlib
import hmac
from decimal import Decimal

import pytest

from billing.model_loader import load_models
from billing.portal import delegation, offers, passwords
from billing.portal.accounts import AccountError, locked_until, sign_in
from billing.portal.tokens import Signer, TokenError
from billing.store.accounts import Account, FailureWindow

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
    request = delegation.verify(delegation.decode_key(KEY_B64), {"operation": operation, **fields, "salt": "salty",
                                                                 "sig": sig})  # fmt: skip
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
        delegation.verify(KEY, {**query, "operation": other, "subscriptionId": "sub_123", "productId": "p",
                                "userId": "u1"})  # fmt: skip


def test_field_order_matters_for_subscribe() -> None:
    swapped = reference_sig("s", "u1", "standard")
    with pytest.raises(delegation.DelegationError):
        delegation.verify(KEY, {"operation": "Subscribe", "productId": "standard", "userId": "u1", "salt": "s",
                                "sig": swapped})  # fmt: skip


def test_a_key_that_is_not_base64_is_named() -> None:
    with pytest.raises(ValueError, match="APIM_DELEGATION_VALIDATION_KEY is not base64"):
        delegation.decode_key("not base64!")


@pytest.mark.parametrize("url", ["/", "/products", "/products/x?a=b#c", "/a//b"])
def test_relative_return_urls(url: str) -> None:
    assert delegation.is_relative_return_url(url)


@pytest.mark.parametrize("url", ["", "products", "//evil", "/\\evil", "https://evil/", "/%2f%2Fevil", "/%5Cevil",
                                 "/a\nb", "javascript:x"])  # fmt: skip
def test_other_return_urls(url: str) -> None:
    assert not delegation.is_relative_return_url(url)


def test_product_id_from_a_resource_id() -> None:
    assert delegation.product_id_from("/subscriptions/x/resourceGroups/r/providers/M/service/s/products/pro") == "pro"
    assert delegation.product_id_from("free") == "free"


def test_tokens_round_trip_and_expire() -> None:
    signer = Signer(KEY, "csrf")
    token = signer.sign({"n": "abc"}, now=1000, ttl_seconds=60)
    assert signer.verify(token, now=1059)["n"] == "abc"
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, now=1060)


def test_tokens_are_bound_to_their_purpose_and_key() -> None:
    token = Signer(KEY, "csrf").sign({"n": "abc"}, now=0, ttl_seconds=60)
    for other in (Signer(KEY, "session"), Signer(b"another key", "csrf")):
        with pytest.raises(TokenError):
            other.verify(token, now=1)
    with pytest.raises(TokenError):
        Signer(KEY, "csrf").verify(token.replace(".", "x."), now=1)
    with pytest.raises(TokenError):
        Signer(KEY, "csrf").verify("garbage", now=1)


def test_passwords_hash_with_salt_and_parameters() -> None:
    # Small parameters keep the test fast; the stored form records them.
    first = passwords.hash_password("a long secret", n=2**10)
    second = passwords.hash_password("a long secret", n=2**10)
    assert first != second  # per-account salt
    assert first.startswith("scrypt$1024$8$1$")
    assert passwords.verify_password("a long secret", first)
    assert not passwords.verify_password("a long secreT", first)
    assert not passwords.verify_password("a long secret", "md5$whatever")
    assert not passwords.verify_password("a long secret", "scrypt$x$8$1$AA==$AA==")


def test_default_password_hash_is_memory_hard() -> None:
    # OWASP's minimum for scrypt: N = 2^17 with r = 8 (128 MiB), p = 1.
    assert passwords.N * passwords.R * 128 >= 128 * 2**20


def test_password_policy() -> None:
    with pytest.raises(passwords.PasswordPolicyError, match="at least 10"):
        passwords.check_policy("short")


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


class FakeAccounts:
    def __init__(self, *accounts: Account) -> None:
        self.rows = {a.email: a for a in accounts}

    def get(self, email: str) -> Account | None:
        return self.rows.get(email)

    def create(self, account: Account) -> None:
        self.rows[account.email] = account


class FakeAttempts:
    def __init__(self) -> None:
        self.windows: dict[str, FailureWindow] = {}

    def current(self, email: str) -> FailureWindow | None:
        return self.windows.get(email)

    def record_failure(self, email: str, now: int, window_seconds: int) -> FailureWindow:
        old = self.windows.get(email)
        new = FailureWindow(now, 1) if old is None or now - old.window_start >= window_seconds else \
            FailureWindow(old.window_start, old.failures + 1)
        self.windows[email] = new
        return new

    def reset(self, email: str) -> None:
        self.windows.pop(email, None)


def test_sign_in_locks_after_five_failures_for_fifteen_minutes() -> None:
    account = Account("a@b.example", passwords.hash_password("right password", n=2**10), "u1", "A", "B", 0)
    accounts, attempts = FakeAccounts(account), FakeAttempts()
    for _ in range(5):
        with pytest.raises(AccountError) as raised:
            sign_in("a@b.example", "wrong password", accounts, attempts, now=100)
        assert raised.value.status == 401
    with pytest.raises(AccountError) as locked:
        sign_in("A@B.example", "right password", accounts, attempts, now=100 + 899)
    assert locked.value.status == 429
    assert locked_until(attempts, "a@b.example", 100) == 100 + 15 * 60
    # After the window the right password works again, and success clears the count.
    assert sign_in("a@b.example", "right password", accounts, attempts, now=100 + 900) == "u1"
    assert attempts.current("a@b.example") is None

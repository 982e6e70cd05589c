"""Subscribing a consumer to a product: free at once in APIM, paid through Stripe Checkout."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from billing import catalog_names
from billing.models import Product
from billing.portal.ports import HOLDING_STATES, ApimPort, ApimSubscription, CheckoutRequest, PaymentsPort
from billing.portal.trials import TrialsPort, trial_offer

_NAME = re.compile(r"^[^*#&+:<>?/\\%\x00-\x1f]{1,100}$")  # APIM display names refuse these characters


class SubscribeError(Exception):
    def __init__(self, message: str, *, status: int = 400, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


@dataclass(frozen=True)
class Subscribed:
    """A free product: the APIM subscription exists and is active."""

    sid: str


@dataclass(frozen=True)
class GoToCheckout:
    url: str  # exactly the URL Stripe returned


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise SubscribeError(
            "give the subscription a name of 1 to 100 characters, without * # & + : < > ? / \\ %", field="name"
        )
    return name


def held_subscription(apim: ApimPort, uid: str, product_id: str) -> ApimSubscription | None:
    """The user's subscription to the product that is not cancelled (one per product and consumer)."""
    for sub in apim.user_subscriptions(uid):
        if sub.product_id == product_id and sub.state in HOLDING_STATES:
            return sub
    return None


def free_subscription_id(product_id: str, uid: str) -> str:
    return catalog_names.free_subscription_id(product_id, uid)


def subscribe(
    product: Product,
    uid: str,
    name: str,
    *,
    nonce: str,
    apim: ApimPort,
    payments: PaymentsPort,
    app_base_url: str,
    trials: TrialsPort,
) -> Subscribed | GoToCheckout:
    name = check_name(name)
    pid = catalog_names.apim_product_id(product.id)
    held = held_subscription(apim, uid, pid)
    if not product.is_paid:
        sid = free_subscription_id(pid, uid)
        if held is not None and held.sid != sid:
            raise _already(product, held)
        if held is None:
            existing = apim.get_subscription(sid)
            if existing is not None and existing.owner_id != uid:  # never re-own another consumer's
                raise SubscribeError("this subscription cannot be made; ask the API provider's support", status=409)
            apim.create_subscription(sid, uid, pid, name, "active")
        return Subscribed(sid)
    if held is not None:
        raise _already(product, held)
    email = apim.user_email(uid)
    if any(debt.amount_remaining > 0 for debt in payments.outstanding_invoices(uid, email)):
        raise SubscribeError("you have unpaid invoices: pay them first, then subscribe again", status=402)
    if payments.pending_final_invoices(uid):
        # Not owed yet, but soon (billing.usage.final_invoice): wait for it, as for an unpaid invoice.
        raise SubscribeError(
            "a subscription you cancelled is still being billed: its final invoice is made once "
            "API Management's usage data has your last calls. Subscribe again after it is "
            "paid.",
            status=402,
        )
    customer = payments.find_or_create_customer(uid, email)
    keys = [catalog_names.flat_price_lookup_key(product.id)] if product.flat_fee_minor else []
    if product.is_metered:
        keys.append(catalog_names.usage_price_lookup_key(product.id))
    prices = payments.price_ids(keys)
    missing = [k for k in keys if k not in prices]
    if missing:
        raise SubscribeError(
            f"{product.display_name} cannot be bought yet: its Stripe prices ({', '.join(missing)}) "
            "are missing; the provider must run `python -m billing catalog apply`",
            status=503,
        )
    lines: list[tuple[str, int | None]] = []
    if product.flat_fee_minor:
        lines.append((prices[catalog_names.flat_price_lookup_key(product.id)], 1))
    if product.is_metered:
        lines.append((prices[catalog_names.usage_price_lookup_key(product.id)], None))  # metered: no quantity
    base = app_base_url.rstrip("/")
    metadata = {
        catalog_names.SUB_META_APIM_USER: uid,
        catalog_names.SUB_META_PRODUCT: pid,
        catalog_names.SUB_META_NAME: name,
    }
    trial = trial_offer(product, uid, email, trials)
    if trial.days and trial.mail_key:
        # The address the offer was checked under: the trial is claimed under it too (billing.access.trials).
        metadata[catalog_names.SUB_META_TRIAL_MAIL] = trial.mail_key
    request = CheckoutRequest(
        customer_id=customer,
        price_lines=lines,
        metadata=metadata,
        success_url=f"{base}/api/portal/checkout/success?session_id={{CHECKOUT_SESSION_ID}}",
        cancel_url=f"{base}/api/portal/checkout/cancelled",
        form_nonce=nonce,
        trial_days=trial.days,
    )
    key = hashlib.sha256(f"{uid}\n{pid}\n{nonce}\n{name}".encode()).hexdigest()
    return GoToCheckout(payments.create_checkout(request, idempotency_key=f"portal-checkout-{key}"))


def _already(product: Product, held: ApimSubscription) -> SubscribeError:
    return SubscribeError(
        f"You already hold {product.display_name} (subscription “{held.display_name}”, {held.state}); "
        "there is nothing more to pay. Manage it from the developer portal or the billing page.",
        status=409,
    )

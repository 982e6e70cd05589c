"""The small interfaces the portal's services need; adapters in billing/adapters/portal_*.py.

Services depend on these Protocols only, so their decisions are tested with in-memory fakes and
the adapters are tested against the emulators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from billing.portal.records import Account, EmailLink


@dataclass(frozen=True)
class BillingPeriod:
    """A Stripe subscription's current period (unix seconds), and Stripe's present for it."""

    start: int
    end: int
    clock_now: int | None = None  # its test clock's frozen time; None in real time


@dataclass(frozen=True)
class ApimSubscription:
    sid: str
    owner_id: str | None  # APIM user id
    product_id: str | None
    display_name: str
    state: str  # submitted, active, suspended, cancelled, expired, rejected
    start: datetime | None  # when it became active, if ever
    created: datetime | None


# States in which a subscription still holds (or is about to hold) the product.
HOLDING_STATES = frozenset({"submitted", "active", "suspended"})


class ApimPort(Protocol):
    def find_user_by_email(self, email: str) -> str | None: ...

    def is_administrator(self, uid: str) -> bool:
        """True for the instance's administrator (user 1) and members of the Administrators group."""
        ...

    def create_user(self, uid: str, email: str, first_name: str, last_name: str) -> None: ...

    def update_user_names(self, uid: str, first_name: str, last_name: str) -> None:
        """Change the names only (state and e-mail kept), conditional on the user's ETag."""
        ...

    def delete_user(self, uid: str) -> None:
        """Delete the user and its (by then cancelled) subscriptions; nothing if it is gone already."""
        ...

    def user_email(self, uid: str) -> str | None: ...

    def sign_in_token(self, uid: str, expiry: datetime) -> str: ...

    def user_subscriptions(self, uid: str) -> Sequence[ApimSubscription]: ...

    def get_subscription(self, sid: str) -> ApimSubscription | None: ...

    def create_subscription(self, sid: str, uid: str, product_id: str, name: str, state: str) -> None: ...

    def set_subscription_state(self, sid: str, state: str, comment: str) -> None: ...


@dataclass(frozen=True)
class CheckoutRequest:
    customer_id: str
    price_lines: Sequence[tuple[str, int | None]]  # (price id, quantity or None for metered)
    metadata: dict[str, str]
    success_url: str
    cancel_url: str
    form_nonce: str = ""  # the subscribe form it comes from (one open Checkout per consumer and product)
    trial_days: int | None = None  # a free trial before the first charge (a card is collected all the same)


@dataclass(frozen=True)
class Debt:
    """An open or uncollectible invoice of the consumer's Stripe customer."""

    invoice_id: str
    number: str
    currency: str
    amount_remaining: int  # minor units
    hosted_invoice_url: str


@dataclass(frozen=True)
class CheckoutInfo:
    session_id: str
    status: str  # open, complete, expired
    subscription_id: str | None


class PaymentsPort(Protocol):
    def find_customer(self, uid: str) -> str | None: ...

    def find_or_create_customer(self, uid: str, email: str | None) -> str: ...

    def price_ids(self, lookup_keys: Sequence[str]) -> dict[str, str]: ...

    def create_checkout(self, request: CheckoutRequest, idempotency_key: str) -> str: ...

    def checkout_info(self, session_id: str) -> CheckoutInfo | None: ...

    def cancel_subscription(self, subscription_id: str) -> None:
        """Cancel now with a final invoice of the usage so far (no proration); nothing if it has ended."""
        ...

    def end_access(self, subscription_id: str, at: int) -> bool:
        """Mark the subscription as cancelled by the consumer at `at` (Stripe's time) and let it end at its
        period end at the latest; False if Stripe has ended it already."""
        ...

    def pending_final_invoices(self, uid: str) -> Sequence[str]:
        """Ids of the user's subscriptions marked by `end_access` that Stripe has not ended yet: their
        final invoice is still to come (billing.usage.final_invoice)."""
        ...

    def subscription_period(self, subscription_id: str) -> BillingPeriod | None: ...

    def billing_portal_url(self, customer_id: str, return_url: str) -> str | None:
        """A Stripe customer portal session's URL; None while the catalog has made no configuration."""
        ...

    def live_subscriptions(self, uid: str) -> Sequence[str]:
        """Ids of the user's Stripe subscriptions that have not ended (any product)."""
        ...

    def expire_open_checkouts(self, uid: str) -> None:
        """Expire the user's open Checkout Sessions, so none can start a subscription later."""
        ...

    def outstanding_invoices(self, uid: str, email: str | None) -> Sequence[Debt]:
        """Invoices owed by the user's customers (also those with its address): open, uncollectible,
        or drafts about to be charged; any subscription, also ended ones."""
        ...


class FinalInvoicesPort(Protocol):
    def schedule(self, subscription_id: str, period_start: int, period_end: int, cancel_at: int) -> None:
        """Durably ask for the final invoice of a cancel at `cancel_at`, made once APIM's usage data is in."""
        ...


class CustomersPort(Protocol):
    def get(self, uid: str) -> str | None:
        """The Stripe customer the app made for the APIM user, if it made one."""
        ...

    def keep(self, uid: str, customer_id: str) -> str:
        """Record the user's customer; the id recorded first, if another was recorded meanwhile."""
        ...


class AccountsPort(Protocol):
    def get(self, email: str) -> Account | None: ...

    def create(self, account: Account) -> None: ...

    def get_with_etag(self, email: str) -> tuple[Account, str] | None: ...

    def replace(self, account: Account, etag: str) -> bool:
        """False if the row changed (or vanished) since it was read with `etag`."""
        ...

    def delete(self, email: str) -> None: ...


class EmailLinksPort(Protocol):
    def create(self, token: str, link: EmailLink) -> None: ...

    def get(self, token: str) -> tuple[EmailLink, str] | None:
        """The link and its ETag; None for an unknown (or malformed) token."""
        ...

    def replace(self, token: str, link: EmailLink, etag: str) -> bool:
        """False if the row changed since it was read with `etag`."""
        ...


class SaltsPort(Protocol):
    def claim(self, salt: str, uid: str, now: int, retention_seconds: int) -> bool:
        """True the first time a delegation salt is used; False for a replay."""
        ...

"""The small interfaces the access services depend on; adapters implement them, unit tests fake them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from billing.access.decisions import AccessTarget, ApimState, ApimView
from billing.records import SubscriptionLink


class DependencyTimeout(Exception):
    """An adapter's call did not complete within its timeout (the work may be retried or deferred)."""


class StripeSubscriptions(Protocol):
    def retrieve(self, subscription_id: str) -> Mapping[str, Any] | None:
        """The subscription with `latest_invoice` expanded, or None when Stripe has no such subscription."""
        ...

    def list_with_metadata(self) -> Iterator[Mapping[str, Any]]:
        """Every subscription (any status) that carries the APIM product metadata, latest invoice expanded."""
        ...

    def set_billing_threshold(self, subscription_id: str, amount_minor: int) -> None:
        """Invoice the subscription at once when its period's bill reaches `amount_minor` (anchor unchanged)."""
        ...

    def owed(self, customer_id: str, except_subscription: str) -> int:
        """Minor units the customer owes on invoices of other subscriptions (open, uncollectible, due drafts)."""
        ...

    def cancel_refused(self, subscription_id: str) -> None:
        """End a subscription that must not start now, crediting what it charged for unused time."""
        ...

    def ending(self, customer_id: str, except_subscription: str) -> list[str]:
        """Ids of the customer's other subscriptions whose access ended and whose final invoice is still to
        come (cancelled in the portal, Stripe not yet told: `billing.usage.final_invoice`)."""
        ...


class ApimSubscriptions(Protocol):
    def get(self, sid: str, timeout: float) -> ApimView | None: ...

    def create(self, sid: str, target: AccessTarget, state: ApimState, timeout: float) -> None: ...

    def set_state(self, sid: str, state: ApimState, timeout: float) -> None: ...

    def reset_quota(self, sid: str, timeout: float) -> None:
        """Start the subscription's quota count again (a new billing period began)."""
        ...

    def set_scope(self, sid: str, product_id: str, timeout: float) -> None:
        """Move the subscription to another product (a plan change): same keys, the product's policy."""
        ...

    def holders(self, user_id: str, product_id: str, timeout: float) -> list[str]:
        """Ids of the user's subscriptions to the product that hold it (submitted, active, suspended)."""
        ...


class LinkStore(Protocol):
    def get(self, apim_subscription_id: str) -> tuple[SubscriptionLink, str] | None: ...

    def create_if_absent(self, link: SubscriptionLink) -> bool:
        """False when a link for that subscription exists already."""
        ...

    def replace_if_unchanged(self, link: SubscriptionLink, etag: str) -> bool:
        """False when somebody wrote the link since `etag` was read."""
        ...


class UsageReports(Protocol):
    def request_closing(self, subscription_id: str, period_start: int, period_end: int) -> None:
        """Durably ask the usage area for the closing report of a finished period, once APIM's data is in."""
        ...

    def closing_takes_seconds(self) -> int:
        """How long after the request the closing report and its confirmation are done, at the latest."""
        ...


class TrialClaims(Protocol):
    def claim(self, product_id: str, keys: Sequence[str], subscription_id: str) -> str | None:
        """Record that the subscription has the product's trial under these identities; None when it has it,
        else the other subscription that had it (then nothing is recorded)."""
        ...


class TrialReminders(Protocol):
    def send(self, user_id: str, product_id: str, subscription_name: str, trial_end: int) -> str:
        """Mail the consumer that the trial ends at `trial_end`; what was done."""
        ...


class WorkQueue(Protocol):
    def defer(self, message: bytes) -> None:
        """Durably queue event work for the queue-triggered worker."""
        ...


@dataclass(frozen=True)
class AccessPorts:
    stripe: StripeSubscriptions
    apim: ApimSubscriptions
    links: LinkStore
    usage: UsageReports
    # Product id -> the spending limit (minor units) of products that have one (models file).
    spending_limits: Mapping[str, int] = field(default_factory=dict)
    # Products whose quota counter the app zeroes when Stripe starts a subscription's next period.
    quota_resets: frozenset[str] = frozenset()
    # Free trials (billing.access.trials): who had which product's trial, and the mail before one ends.
    trials: TrialClaims | None = None
    reminders: TrialReminders | None = None
    # Free products: a paid subscription moved to one at its period end is followed by a subscription to it.
    free_products: frozenset[str] = frozenset()

"""Which API access a Stripe subscription's current state grants, and what to change in APIM (pure).

Handlers re-read the subscription from Stripe and feed its *current* state here, so the outcome
never depends on the order or the number of webhook deliveries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from billing.catalog_names import SUB_META_APIM_USER, SUB_META_NAME, SUB_META_PRODUCT, stripe_product_id


class ApimState(StrEnum):
    """The APIM subscription states the app uses (APIM also knows expired and rejected)."""

    SUBMITTED = "submitted"  # created at checkout, no working key until the first invoice is paid
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CANCELLED = "cancelled"


# Stripe subscription statuses (https://docs.stripe.com/api/subscriptions/object#subscription_object-status).
_ENDED = frozenset({"canceled", "incomplete_expired"})
_UNPAID = frozenset({"past_due", "unpaid", "paused"})
_PAID = frozenset({"active", "trialing"})


@dataclass(frozen=True)
class StripeState:
    """The parts of a Stripe subscription (with its latest invoice) that decide access."""

    status: str
    latest_invoice_status: str | None = None  # draft, open, paid, uncollectible, void
    latest_invoice_attempted: bool = False  # a payment attempt was made (and, if still open, failed)
    ended_at: int = 0  # unix seconds; 0 while the subscription lives
    # The consumer cancelled in the portal (SUB_META_ACCESS_ENDED): the key stays off while Stripe
    # keeps the subscription until its final invoice is made.
    access_ended: bool = False


class UnknownStripeStatus(ValueError):
    """A subscription status this version of the app does not know; nothing is changed."""


def decide(state: StripeState) -> ApimState:
    """The APIM state that the subscription's current Stripe state calls for."""
    if state.status in _ENDED or state.ended_at or state.access_ended:
        return ApimState.CANCELLED
    if state.status == "incomplete":
        # The first invoice is not paid yet: the subscription exists but gives no access.
        return ApimState.SUBMITTED
    if state.status in _UNPAID:
        return ApimState.SUSPENDED
    if state.status in _PAID:
        # Stripe may leave a subscription active after failed payments (billing settings); the
        # latest invoice then tells whether the consumer owes money that payment failed to collect.
        if state.latest_invoice_status == "uncollectible":
            return ApimState.SUSPENDED
        if state.latest_invoice_status == "open" and state.latest_invoice_attempted:
            return ApimState.SUSPENDED
        return ApimState.ACTIVE
    raise UnknownStripeStatus(f"unknown Stripe subscription status {state.status!r}")


# ---- who and what the subscription is for ---------------------------------------------------------
# APIM resource names: letters, digits, '-', '_', '.'; at most 80 characters (users, products).
_APIM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")
_DISPLAY_NAME_MAX = 100


@dataclass(frozen=True)
class AccessTarget:
    """The APIM user, product and subscription name a paid subscription is for (checkout metadata)."""

    user_id: str
    product_id: str
    subscription_name: str


class MetadataProblem(ValueError):
    """Missing or inconsistent metadata: logged with the event id and acknowledged, never retried."""


def access_target(metadata: Mapping[str, str], stripe_product_ids: frozenset[str]) -> AccessTarget:
    """The target from the subscription's metadata, checked against the products it actually bills."""
    missing = [key for key in (SUB_META_APIM_USER, SUB_META_PRODUCT, SUB_META_NAME) if not metadata.get(key)]
    if missing:
        raise MetadataProblem(f"subscription metadata lacks {', '.join(missing)}")
    user, product, name = metadata[SUB_META_APIM_USER], metadata[SUB_META_PRODUCT], metadata[SUB_META_NAME]
    for key, value in ((SUB_META_APIM_USER, user), (SUB_META_PRODUCT, product)):
        if not _APIM_NAME.match(value):
            raise MetadataProblem(f"metadata {key}={value!r} is not an APIM name (letters, digits, '-', '_', '.')")
    if len(name) > _DISPLAY_NAME_MAX:
        raise MetadataProblem(f"metadata {SUB_META_NAME} is longer than {_DISPLAY_NAME_MAX} characters")
    if stripe_product_id(product) not in stripe_product_ids:
        billed = ", ".join(sorted(stripe_product_ids)) or "nothing"
        raise MetadataProblem(
            f"metadata {SUB_META_PRODUCT}={product!r} but the subscription bills {billed}, "
            f"not {stripe_product_id(product)!r}"
        )
    return AccessTarget(user, product, name)


# ---- what to change in APIM -------------------------------------------------------------------------
@dataclass(frozen=True)
class ApimView:
    """An APIM subscription as APIM reports it."""

    state: str
    user_id: str | None
    product_id: str | None


@dataclass(frozen=True)
class AccessPlan:
    """What to do in APIM: create the subscription, change its state, or nothing."""

    desired: ApimState
    create: bool = False
    change_from: str | None = None  # the APIM state being replaced, when changing

    @property
    def changes_anything(self) -> bool:
        return self.create or self.change_from is not None

    def describe(self, sid: str, target: AccessTarget) -> str:
        if self.create:
            return (
                f"{sid}: create APIM subscription for user {target.user_id}, product {target.product_id}, "
                f"state {self.desired}"
            )
        if self.change_from is not None:
            return f"{sid}: APIM state {self.change_from} -> {self.desired}"
        return f"{sid}: APIM state {self.desired} (unchanged)"


def plan_access(desired: ApimState, target: AccessTarget, current: ApimView | None) -> AccessPlan:
    """Compare the desired state with APIM's; raise MetadataProblem when they are about different things."""
    if current is None:
        # Nothing to revoke for a subscription that ended before APIM ever heard of it.
        return AccessPlan(desired, create=desired is not ApimState.CANCELLED)
    if current.user_id is not None and current.user_id != target.user_id:
        raise MetadataProblem(
            f"APIM subscription belongs to user {current.user_id!r}, metadata says {target.user_id!r}"
        )
    if current.product_id is not None and current.product_id != target.product_id:
        raise MetadataProblem(
            f"APIM subscription is for product {current.product_id!r}, metadata says {target.product_id!r}"
        )
    if current.state == desired.value:
        return AccessPlan(desired)
    return AccessPlan(desired, change_from=current.state)
